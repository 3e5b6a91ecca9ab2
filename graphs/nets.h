// The DeePSiM networks, written with libtorch's C++ frontend.
//
// Conventions from the paper: leaky ReLU with slope 0.3, MSRA (He)
// initialisation, no batch norm, linear output layers, and up-convolutions
// as transposed convolutions with kernel 4, stride 2, padding 1.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <string>

namespace deepsim {

namespace nn = torch::nn;

constexpr double kLeak = 0.3;

inline nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride = 1,
                       int64_t pad = -1) {
  if (pad < 0) pad = k / 2;
  return nn::Conv2d(
      nn::Conv2dOptions(in, out, k).stride(stride).padding(pad));
}

inline nn::ConvTranspose2d upconv(int64_t in, int64_t out) {
  return nn::ConvTranspose2d(
      nn::ConvTranspose2dOptions(in, out, 4).stride(2).padding(1));
}

inline nn::LeakyReLU leaky() {
  return nn::LeakyReLU(nn::LeakyReLUOptions().negative_slope(kLeak));
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

// Number of x2 stages between a size x size image and its size/8 code.
inline int64_t stages_for(int64_t size) {
  int64_t n = 0;
  while ((8LL << n) < size) n++;
  return n;
}

// Encoder E: a size x size RGB crop to a code of size/8 x size/8 x code_ch.
struct EncoderImpl : nn::Module {
  nn::Sequential body;

  EncoderImpl(int64_t size, int64_t code_ch) {
    int64_t in = 3, ch = 32;
    for (int64_t i = 0; i < stages_for(size); i++) {
      body->push_back(conv(in, ch, 4, 2, 1));
      body->push_back(leaky());
      body->push_back(conv(ch, ch, 3));
      body->push_back(leaky());
      in = ch;
      ch = std::min<int64_t>(ch * 2, 256);
    }
    body->push_back(conv(in, code_ch, 3));  // linear code
    register_module("body", body);
    msra_init(*this);
  }

  torch::Tensor forward(torch::Tensor x) { return body->forward(x); }
};
TORCH_MODULE(Encoder);

// Generator G: up-convolutions, each followed by a 3x3 conv, then a linear
// 3x3 output conv.
struct GeneratorImpl : nn::Module {
  nn::Sequential body;

  GeneratorImpl(int64_t size, int64_t code_ch) {
    const int64_t n = stages_for(size);
    int64_t ch = 32LL << n;  // 256 for 64 px: 256 -> 128 -> 64 -> 32
    if (ch > 512) ch = 512;
    body->push_back(conv(code_ch, ch, 3));
    body->push_back(leaky());
    for (int64_t i = 0; i < n; i++) {
      const int64_t out = std::max<int64_t>(ch / 2, 32);
      body->push_back(upconv(ch, out));
      body->push_back(leaky());
      body->push_back(conv(out, out, 3));
      body->push_back(leaky());
      ch = out;
    }
    body->push_back(conv(ch, 3, 3));  // linear output
    register_module("body", body);
    msra_init(*this);
  }

  torch::Tensor forward(torch::Tensor z) { return body->forward(z); }
};
TORCH_MODULE(Generator);

// Discriminator D: the paper's 7x7/5x5/3x3 stack, global average pooling,
// dropout 0.5 before each fully connected layer. The first stride scales
// with the crop: 4 from 64 px up, as in the paper's 227 px version.
// One logit: sigmoid(logit) is the paper's two-way softmax.
struct DiscriminatorImpl : nn::Module {
  nn::Sequential features, classifier;

  explicit DiscriminatorImpl(int64_t size) {
    const int64_t s1 = std::clamp<int64_t>(size / 16, 1, 4);
    features = nn::Sequential(conv(3, 32, 7, s1), leaky(),      //
                              conv(32, 64, 5), leaky(),         //
                              conv(64, 128, 3, 2), leaky(),     //
                              conv(128, 256, 3), leaky(),       //
                              conv(256, 256, 3, 2), leaky(),    //
                              nn::AdaptiveAvgPool2d(1), nn::Flatten());
    classifier = nn::Sequential(nn::Dropout(0.5), nn::Linear(256, 256),
                                leaky(), nn::Dropout(0.5), nn::Linear(256, 1));
    register_module("features", features);
    register_module("classifier", classifier);
    msra_init(*this);
  }

  torch::Tensor forward(torch::Tensor x) {
    return classifier->forward(features->forward(x)).squeeze(1);
  }
};
TORCH_MODULE(Discriminator);

// The comparator C: a fixed network whose features define similarity. It
// owns its input normalisation and size, so callers pass [-1,1] pixels.
class Comparator {
 public:
  virtual ~Comparator() = default;
  virtual torch::Tensor features(const torch::Tensor& x) = 0;
  virtual void to(torch::Device d) = 0;
};

// AlexNet in torchvision's layout (features.0 ... features.12), cut at a
// layer. For now it is built with random weights from a fixed seed: the
// paper's "random AlexNet" comparator.
struct AlexNetFeaturesImpl : nn::Module {
  nn::Sequential features;

  AlexNetFeaturesImpl() {
    features = nn::Sequential(
        conv(3, 64, 11, 4, 2), nn::ReLU(), nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2)),
        conv(64, 192, 5, 1, 2), nn::ReLU(), nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2)),
        conv(192, 384, 3, 1, 1), nn::ReLU(),
        conv(384, 256, 3, 1, 1), nn::ReLU(),
        conv(256, 256, 3, 1, 1), nn::ReLU(), nn::MaxPool2d(nn::MaxPool2dOptions(3).stride(2)));
    register_module("features", features);
  }
};
TORCH_MODULE(AlexNetFeatures);

class AlexNetComparator : public Comparator {
 public:
  AlexNetComparator(int64_t input_size, int64_t seed) : size_(input_size) {
    torch::manual_seed(seed);
    net_ = AlexNetFeatures();
    // He init for ReLU, so that random features keep their scale to conv5.
    torch::NoGradGuard no_grad;
    for (auto& p : net_->named_parameters()) {
      if (p.value().dim() >= 2)
        nn::init::kaiming_normal_(p.value(), 0.0, torch::kFanIn, torch::kReLU);
      else
        p.value().zero_();
    }
    net_->eval();
    for (auto& p : net_->parameters()) p.requires_grad_(false);
    mean_ = torch::tensor({0.485, 0.456, 0.406}).view({1, 3, 1, 1});
    std_ = torch::tensor({0.229, 0.224, 0.225}).view({1, 3, 1, 1});
  }

  torch::Tensor features(const torch::Tensor& x) override {
    auto h = x;
    if (h.size(2) != size_ || h.size(3) != size_) {
      h = torch::nn::functional::interpolate(
          h, torch::nn::functional::InterpolateFuncOptions()
                 .size(std::vector<int64_t>{size_, size_})
                 .mode(torch::kBilinear)
                 .align_corners(false));
    }
    h = ((h + 1) / 2 - mean_) / std_;  // [-1,1] -> ImageNet normalisation
    return net_->features->forward(h);
  }

  void to(torch::Device d) override {
    net_->to(d);
    mean_ = mean_.to(d);
    std_ = std_.to(d);
  }

 private:
  int64_t size_;
  AlexNetFeatures net_{nullptr};
  torch::Tensor mean_, std_;
};

}  // namespace deepsim
