// The layers every network here is built from, and the paper's
// conventions for them: leaky ReLU with slope 0.3, MSRA (He)
// initialisation, no batch norm.
#pragma once

#include <torch/torch.h>

#include <cstdint>

namespace deepsim {

namespace nn = torch::nn;

constexpr double kLeak = 0.3;

inline nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1,
                       int64_t pad = -1) {
  if (pad < 0) pad = k / 2;
  return nn::Conv2d(
      nn::Conv2dOptions(in, out, k).stride(stride).padding(pad));
}

// In place: each follows a layer whose output nothing else reads, and with
// a positive slope autograd takes the backward from the output. A fresh
// tensor per activation would cost an allocation, its page faults and a
// pass over memory.
inline nn::LeakyReLU leaky() {
  return nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(kLeak).inplace(true));
}

inline nn::MaxPool2d maxpool(int64_t k, int64_t s) {
  return nn::MaxPool2d(nn::MaxPool2dOptions(k).stride(s));
}

// He initialisation for every conv and linear layer of a module; biases 0.
inline void msra_init(nn::Module& m) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.named_parameters()) {
    const auto& name = p.key();
    auto& t = p.value();
    if (name.size() >= 4 && name.compare(name.size() - 4, 4, "bias") == 0) {
      t.zero_();
    } else if (t.dim() >= 2) {
      nn::init::kaiming_normal_(t, kLeak, torch::kFanIn,
                                torch::kLeakyReLU);
    }
  }
}

}  // namespace deepsim
