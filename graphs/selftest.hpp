// Compiled as part of engine.cpp, not on its own (see there).
// What the tests call to check the engine against libtorch's own modules.
// It lives here, not in a _test.go file, because Go's tests cannot use cgo.
#include "engine.h"

namespace deepsim {

void upconv_check(int64_t in, int64_t out, int64_t n, int64_t h, int64_t w, int64_t seed,
                  bool channels_last, double err[4]) {
  torch::manual_seed(static_cast<uint64_t>(seed));
  UpConv up(in, out);
  up->to(torch::kFloat64);
  auto x = torch::randn({n, in, h, w}, torch::kFloat64);
  auto grad = torch::randn({n, out, 2 * h, 2 * w}, torch::kFloat64);
  if (channels_last) x = x.contiguous(torch::MemoryFormat::ChannelsLast);
  auto xa = x.clone().requires_grad_(true), xb = x.clone().requires_grad_(true);
  auto wb = up->weight.detach().clone().requires_grad_(true);
  auto bb = up->bias.detach().clone().requires_grad_(true);
  auto ya = up->forward(xa);
  auto yb = torch::conv_transpose2d(xb, wb, bb, /*stride=*/2, /*padding=*/1);
  (ya * grad).sum().backward();
  (yb * grad).sum().backward();
  auto diff = [](const torch::Tensor& a, const torch::Tensor& b) {
    return (a - b).abs().max().item<double>();
  };
  err[0] = diff(ya, yb);
  err[1] = diff(xa.grad(), xb.grad());
  err[2] = diff(up->weight.grad(), wb.grad());
  err[3] = diff(up->bias.grad(), bb.grad());
}

}  // namespace deepsim
