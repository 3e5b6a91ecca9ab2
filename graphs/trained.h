// The networks a run trains: the DeePSiM encoder and generators, and the
// discriminators. Up-sampling is the paper's transposed convolution
// (kernel 4, stride 2, padding 1; see UpConv) or a nearest-neighbour resize
// followed by a 3x3 convolution, which cannot make the periodic
// checkerboard artifacts of the former (Odena et al., 2016). Generators'
// output layers are linear.
#pragma once

#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "layers.h"

namespace deepsim {

// Interleave takes y, n x (2 x 2 x out) x (h+1) x (w+1), the output of the
// up-convolution's 2x2 convolution, and gives n x out x 2h x 2w, whose
// pixel (2r+a, 2c+b) is y's group (a, b) at (r+a, c+b). Its backward is the
// same strided copy the other way: autograd's own, through four windows,
// would fill four zero tensors the size of y and add them.
struct Interleave : torch::autograd::Function<Interleave> {
  // The group (a, b) of t, n x (2 x 2 x out) x H x W, as n x out x H x W.
  static torch::Tensor group(const torch::Tensor& t, int64_t a, int64_t b) {
    return t.view({t.size(0), 2, 2, t.size(1) / 4, t.size(2), t.size(3)}).select(1, a).select(1, b);
  }
  // The phase (a, b) of t, n x out x 2h x 2w, as n x out x h x w.
  static torch::Tensor phase(const torch::Tensor& t, int64_t a, int64_t b) {
    return t.view({t.size(0), t.size(1), t.size(2) / 2, 2, t.size(3) / 2, 2}).select(3, a).select(4, b);
  }

  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& y) {
    const int64_t h = y.size(2) - 1, w = y.size(3) - 1;
    ctx->saved_data["shape"] = y.sizes().vec();
    auto out = torch::empty({y.size(0), y.size(1) / 4, 2 * h, 2 * w},
                            y.options().memory_format(y.suggest_memory_format()));
    for (int64_t a = 0; a < 2; a++)
      for (int64_t b = 0; b < 2; b++)
        phase(out, a, b).copy_(group(y, a, b).narrow(2, a, h).narrow(3, b, w));
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto shape = ctx->saved_data["shape"].toIntVector();
    const auto& g = grads[0];
    const int64_t h = shape[2] - 1, w = shape[3] - 1;
    auto gy = torch::empty(shape, g.options().memory_format(g.suggest_memory_format()));
    for (int64_t a = 0; a < 2; a++)
      for (int64_t b = 0; b < 2; b++) {
        auto grp = group(gy, a, b);
        grp.narrow(2, a, h).narrow(3, b, w).copy_(phase(g, a, b));
        grp.select(2, a == 0 ? h : 0).zero_();  // the row and the column
        grp.select(3, b == 0 ? w : 0).zero_();  // this phase does not read
      }
    return {gy};
  }
};

// The paper's up-convolution, a transposed convolution with kernel 4,
// stride 2 and padding 1, computed as what it equals: output pixel
// (2r+a, 2c+b) reads input rows r-1+a, r+a and columns c-1+b, c+b through
// kernel taps 3-a-2dy, 3-b-2dx. So one 2x2 convolution with padding 1 to
// four times the channels, one group per phase (a, b), gives every phase:
// phase (a, b) is its group's window starting at row a and column b, and
// Interleave puts the four windows in place. No tap multiplies a zero.
// libtorch 1.13 runs transposed convolutions on the CPU without oneDNN,
// and this on its fast path. The parameters keep ConvTranspose2d's names,
// shapes and initialisation, so checkpoints of either read the same.
struct UpConvImpl : nn::Module {
  torch::Tensor weight, bias;  // in x out x 4 x 4, out

  UpConvImpl(int64_t in, int64_t out) {
    // ConvTranspose2d's own initialisation, drawn as it draws it.
    nn::ConvTranspose2d t(nn::ConvTranspose2dOptions(in, out, 4).stride(2).padding(1));
    weight = register_parameter("weight", t->weight);
    bias = register_parameter("bias", t->bias);
  }

  torch::Tensor forward(const torch::Tensor& x) {
    const int64_t in = weight.size(0), out = weight.size(1);
    // Flipped, tap k is 2d + a: (in, out, dy, a, dx, b) to (a, b, out, in, dy, dx).
    auto k = weight.flip({2, 3}).view({in, out, 2, 2, 2, 2}).permute({3, 5, 1, 0, 2, 4});
    auto y = torch::conv2d(x, k.reshape({4 * out, in, 2, 2}).contiguous(x.suggest_memory_format()),
                           bias.repeat(4), /*stride=*/1, /*padding=*/1);
    return Interleave::apply(y);
  }
};
TORCH_MODULE(UpConv);

// How the generator doubles its resolution; values match ds_config.upsample.
enum class Upsample { Deconv = 0, Resize = 1 };

inline void push_upsample(nn::Sequential& seq, Upsample how, int64_t in,
                          int64_t out) {
  if (how == Upsample::Deconv) {
    seq->push_back(UpConv(in, out));
    return;
  }
  seq->push_back(nn::Upsample(nn::UpsampleOptions()
                                  .scale_factor(std::vector<double>{2, 2})
                                  .mode(torch::kNearest)));
  seq->push_back(conv(in, out, 3));
}

// Which rows of the global batch this process trains on, and the generator
// the discriminators' dropout draws from. The model owns it and
// checkpoints the generator, so masks depend on neither the number of
// processes nor an interruption.
struct BatchRows {
  at::Generator rng = at::detail::createCPUGenerator();
  int64_t offset = 0;  // the first row this process holds
  int64_t global = 0;  // rows in the global batch; 0: this process holds all
};

// Dropout that draws its mask for the whole global batch and keeps this
// process's rows of it: a data-parallel step drops what one process
// would. In eval mode it passes its input through.
struct BatchDropoutImpl : nn::Module {
  BatchDropoutImpl(double p, std::shared_ptr<BatchRows> rows)
      : p(p), rows(std::move(rows)) {}

  torch::Tensor forward(const torch::Tensor& x) {
    if (!is_training()) return x;
    const int64_t n = x.size(0);
    const int64_t global = rows->global > 0 ? rows->global : n;
    auto shape = x.sizes().vec();
    shape[0] = global;
    auto keep = torch::empty(shape, torch::kFloat32).bernoulli_(1 - p, rows->rng);
    keep = keep.slice(0, rows->offset, rows->offset + n).to(x.device(), x.scalar_type());
    return x * keep / (1 - p);
  }

  double p;
  std::shared_ptr<BatchRows> rows;
};
TORCH_MODULE(BatchDropout);

// push_decoder appends the generators' shared tail: stages x2 up-samplings
// from ch channels, each halving the width (to at least 32) and followed by
// a 3x3 convolution, then a linear 3x3 convolution to RGB.
inline void push_decoder(nn::Sequential& body, Upsample how, int64_t ch,
                         int64_t stages) {
  for (int64_t i = 0; i < stages; i++) {
    const int64_t out = std::max<int64_t>(ch / 2, 32);
    push_upsample(body, how, ch, out);
    body->push_back(leaky());
    body->push_back(conv(out, out, 3));
    body->push_back(leaky());
    ch = out;
  }
  body->push_back(conv(ch, 3, 3));  // linear output
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

// Generator G: up-sampling stages, each followed by a 3x3 conv, then a
// linear 3x3 output conv.
struct GeneratorImpl : nn::Module {
  nn::Sequential body;

  GeneratorImpl(int64_t size, int64_t code_ch, Upsample how) {
    const int64_t n = stages_for(size);
    // 256 for 64 px: 256 -> 128 -> 64 -> 32
    const int64_t ch = std::min<int64_t>(32LL << n, 512);
    body->push_back(conv(code_ch, ch, 3));
    body->push_back(leaky());
    push_decoder(body, how, ch, n);
    register_module("body", body);
    msra_init(*this);
  }

  torch::Tensor forward(torch::Tensor z) { return body->forward(z); }
};
TORCH_MODULE(Generator);

// Inversion generator: from a fixed network's features back to the image.
// Spatial features (C x H x W) pass three 3x3 convolutions, are resized to
// the grid that a whole number of x2 stages takes to size (a no-op when
// size/H is a power of two), then up-sampled; vectors (fully connected
// layers, or a 1 x 1 map) pass three fully connected layers and are
// reshaped to 4 x 4. The widths are the paper's at 256 px, scaled to size.
struct InversionGeneratorImpl : nn::Module {
  bool vector;
  int64_t grid, fc_ch = 0;
  nn::Sequential head, body;

  InversionGeneratorImpl(int64_t c, int64_t h, int64_t w, int64_t size, Upsample how)
      : vector(h == 1 && w == 1) {
    int64_t stages = 0;
    if (vector) {
      grid = 4;
      const int64_t width = std::clamp<int64_t>(4096 * size / 256, 256, 4096);
      fc_ch = width / 16;
      head = nn::Sequential(nn::Linear(c, width), leaky(), nn::Linear(width, width), leaky(),
                            nn::Linear(width, fc_ch * grid * grid), leaky());
    } else {
      stages = std::clamp<int64_t>(std::lround(std::log2(double(size) / h)), 0, 8);
      grid = size >> stages;
    }
    if (vector)
      while ((grid << stages) < size) stages++;
    const int64_t ch = std::min<int64_t>(32LL << stages, 512);
    if (vector) {
      body->push_back(conv(fc_ch, ch, 3));
      body->push_back(leaky());
    } else {
      head = nn::Sequential(conv(c, ch, 3), leaky(), conv(ch, ch, 3), leaky(), conv(ch, ch, 3),
                            leaky());
    }
    push_decoder(body, how, ch, stages);
    register_module("head", head);
    register_module("body", body);
    msra_init(*this);
  }

  torch::Tensor forward(torch::Tensor f) {
    torch::Tensor x;
    if (vector) {
      x = head->forward(f.flatten(1)).view({f.size(0), fc_ch, grid, grid});
    } else {
      x = head->forward(f);
      if (x.size(2) != grid || x.size(3) != grid)
        x = torch::nn::functional::interpolate(
            x, torch::nn::functional::InterpolateFuncOptions()
                   .size(std::vector<int64_t>{grid, grid})
                   .mode(torch::kBilinear)
                   .align_corners(false));
    }
    return body->forward(x);
  }
};
TORCH_MODULE(InversionGenerator);

// x through seq, one module at a time: the output of each leaky ReLU, and
// last seq's output. Feature matching compares the former.
inline std::vector<torch::Tensor> activations(nn::Sequential& seq, torch::Tensor x) {
  std::vector<torch::Tensor> out;
  for (auto& mod : *seq) {
    x = mod.forward(x);
    if (mod.ptr()->as<nn::LeakyReLU>()) out.push_back(x);
  }
  out.push_back(x);
  return out;
}

// The discriminators' convolutional trunk: the paper's 7x7/5x5/3x3 stack
// and global average pooling, to 256 values per image. The first stride
// scales with the crop: 4 from 64 px up, as in the paper's 227 px version.
inline nn::Sequential discriminator_trunk(int64_t size) {
  const int64_t s1 = std::clamp<int64_t>(size / 16, 1, 4);
  return nn::Sequential(conv(3, 32, 7, s1), leaky(),      //
                        conv(32, 64, 5), leaky(),         //
                        conv(64, 128, 3, 2), leaky(),     //
                        conv(128, 256, 3), leaky(),       //
                        conv(256, 256, 3, 2), leaky(),    //
                        nn::AdaptiveAvgPool2d(1), nn::Flatten());
}

// A patch discriminator's convolutions (PatchGAN, Isola et al., 2017):
// one logit for each overlapping 26 px patch, a map of size/4 x size/4,
// so that D judges local texture rather than the whole crop.
inline nn::Sequential patch_discriminator() {
  return nn::Sequential(conv(3, 64, 4, 2, 1), leaky(),    //
                        conv(64, 128, 4, 2, 1), leaky(),  //
                        conv(128, 256, 3), leaky(),       //
                        conv(256, 1, 3));
}

// Discriminator D: the trunk, then dropout 0.5 before each fully connected
// layer. One logit: sigmoid(logit) is the paper's two-way softmax. With
// patch, the patch discriminator's map of logits instead.
struct DiscriminatorImpl : nn::Module {
  nn::Sequential features, classifier;
  bool patch;

  DiscriminatorImpl(int64_t size, std::shared_ptr<BatchRows> rows, bool patch) : patch(patch) {
    if (patch) {
      features = patch_discriminator();
    } else {
      features = discriminator_trunk(size);
      classifier = nn::Sequential(BatchDropout(0.5, rows), nn::Linear(256, 256), leaky(),
                                  BatchDropout(0.5, rows), nn::Linear(256, 1));
      register_module("classifier", classifier);
    }
    register_module("features", features);
    msra_init(*this);
  }

  torch::Tensor forward(torch::Tensor x) {
    if (patch) return features->forward(x).squeeze(1);
    return classifier->forward(features->forward(x)).squeeze(1);
  }

  // The logits of two batches, real and fake: the same as two forwards,
  // with the convolutions run once on both, where a batch twice the size
  // uses the cores better. The classifier still runs on each in turn, so
  // dropout draws its masks as two forwards would.
  std::pair<torch::Tensor, torch::Tensor> forward_pair(torch::Tensor real, torch::Tensor fake) {
    auto h = features->forward(torch::cat({real, fake})).split(real.size(0));
    if (patch) return {h[0].squeeze(1), h[1].squeeze(1)};
    return {classifier->forward(h[0]).squeeze(1), classifier->forward(h[1]).squeeze(1)};
  }

  // The logits of x, and the activations of the convolutions on the way.
  std::pair<torch::Tensor, std::vector<torch::Tensor>> forward_features(torch::Tensor x) {
    auto acts = activations(features, x);
    auto h = acts.back();
    acts.pop_back();
    return {patch ? h.squeeze(1) : classifier->forward(h).squeeze(1), acts};
  }
};
TORCH_MODULE(Discriminator);

// The inversion discriminator: D's image features joined, before the
// classifier, to a small embedding of the features being inverted, as in
// the paper. Spatial features are average-pooled to at most 4 x 4 first.
struct ConditionalDiscriminatorImpl : nn::Module {
  nn::Sequential features, embed, classifier;

  ConditionalDiscriminatorImpl(int64_t size, int64_t c, int64_t h, int64_t w,
                               std::shared_ptr<BatchRows> rows) {
    features = discriminator_trunk(size);
    const int64_t k = std::min<int64_t>(std::min(h, w), 4);
    embed = nn::Sequential(nn::AdaptiveAvgPool2d(k), nn::Flatten(), nn::Linear(c * k * k, 256),
                           leaky());
    classifier = nn::Sequential(BatchDropout(0.5, rows), nn::Linear(512, 256), leaky(),
                                BatchDropout(0.5, rows), nn::Linear(256, 1));
    register_module("features", features);
    register_module("embed", embed);
    register_module("classifier", classifier);
    msra_init(*this);
  }

  torch::Tensor forward(torch::Tensor x, torch::Tensor f) {
    auto joined = torch::cat({features->forward(x), embed->forward(f)}, 1);
    return classifier->forward(joined).squeeze(1);
  }

  // As Discriminator's: two batches that share the features f, each
  // convolution and the embedding run once.
  std::pair<torch::Tensor, torch::Tensor> forward_pair(torch::Tensor real, torch::Tensor fake,
                                                       torch::Tensor f) {
    auto h = features->forward(torch::cat({real, fake})).split(real.size(0));
    auto e = embed->forward(f);
    return {classifier->forward(torch::cat({h[0], e}, 1)).squeeze(1),
            classifier->forward(torch::cat({h[1], e}, 1)).squeeze(1)};
  }

  // As Discriminator's.
  std::pair<torch::Tensor, std::vector<torch::Tensor>> forward_features(torch::Tensor x,
                                                                       torch::Tensor f) {
    auto acts = activations(features, x);
    auto h = acts.back();
    acts.pop_back();
    return {classifier->forward(torch::cat({h, embed->forward(f)}, 1)).squeeze(1), acts};
  }
};
TORCH_MODULE(ConditionalDiscriminator);

}  // namespace deepsim
