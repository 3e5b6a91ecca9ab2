// A network given as a graph of layers (ds_layer), as imported from a Keras
// model, run with TensorFlow's conventions: "same" padding puts any odd
// extra row or column at the bottom and right, average pooling does not
// count padded cells, and Flatten takes rows, then columns, then channels.
// Tensors are NCHW; Keras' NHWC weights are converted on import.
#pragma once

#include <torch/torch.h>

#include <array>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "deepsim.h"

namespace deepsim {

// One layer's parameters, registered under the layer's name so that they
// are "<name>.weight", "<name>.bias", "<name>.running_mean" and so on.
struct LayerParamsImpl : torch::nn::Module {};
TORCH_MODULE(LayerParams);

class GraphNetImpl : public torch::nn::Module {
 public:
  GraphNetImpl(const ds_layer* spec, int32_t n) {
    if (n < 1) throw std::invalid_argument("graph network has no layers");
    layers_.assign(spec, spec + n);
    params_.resize(n);
    for (int32_t i = 0; i < n; i++) {
      auto& l = layers_[i];
      names_.push_back(l.name ? l.name : "");
      l.name = nullptr;  // the spec's strings are not ours to keep
      const std::string& name = names_.back();
      if (name.empty() || name.find('.') != std::string::npos)
        throw std::invalid_argument("graph layer " + std::to_string(i) + ": bad name \"" +
                                    name + "\"");
      if (l.n_inputs < 0 || l.n_inputs > DS_MAX_INPUTS)
        throw std::invalid_argument(name + ": bad input count");
      for (int32_t k = 0; k < l.n_inputs; k++)
        if (l.inputs[k] < 0 || l.inputs[k] >= i)
          throw std::invalid_argument(name + ": input is not an earlier layer");
      if ((l.op == DS_OP_INPUT) != (l.n_inputs == 0))
        throw std::invalid_argument(name + ": only the input layer has no inputs");
      add_params(i);
    }
  }

  // Makes forward return the outputs of the named layers, computing only
  // what they need.
  void set_taps(const std::vector<std::string>& taps) {
    taps_.clear();
    for (const auto& t : taps) {
      int32_t found = -1;
      for (size_t i = 0; i < names_.size(); i++)
        if (names_[i] == t) found = static_cast<int32_t>(i);
      if (found < 0) throw std::invalid_argument("the network has no layer \"" + t + "\"");
      taps_.push_back(found);
    }
    // The layers the taps need, and for each the last layer that reads it,
    // so that inference can free what it no longer needs.
    std::vector<bool> need(layers_.size(), false);
    for (int32_t t : taps_) need[t] = true;
    for (int32_t i = static_cast<int32_t>(layers_.size()) - 1; i >= 0; i--)
      if (need[i])
        for (int32_t k = 0; k < layers_[i].n_inputs; k++) need[layers_[i].inputs[k]] = true;
    order_.clear();
    last_use_.assign(layers_.size(), -1);
    for (size_t i = 0; i < layers_.size(); i++) {
      if (!need[i]) continue;
      order_.push_back(static_cast<int32_t>(i));
      for (int32_t k = 0; k < layers_[i].n_inputs; k++)
        last_use_[layers_[i].inputs[k]] = static_cast<int32_t>(i);
    }
    for (int32_t t : taps_) last_use_[t] = std::numeric_limits<int32_t>::max();
  }

  std::vector<torch::Tensor> forward(const torch::Tensor& x) {
    if (taps_.empty()) throw std::logic_error("graph network has no taps");
    std::vector<torch::Tensor> out(layers_.size());
    for (int32_t i : order_) {
      out[i] = apply(i, x, out);
      // Without autograd nothing else holds an activation: free each one
      // after its last reader.
      if (!torch::GradMode::is_enabled())
        for (int32_t k = 0; k < layers_[i].n_inputs; k++) {
          int32_t j = layers_[i].inputs[k];
          if (last_use_[j] == i) out[j] = torch::Tensor();
        }
    }
    std::vector<torch::Tensor> taps;
    for (int32_t t : taps_) taps.push_back(out[t]);
    return taps;
  }

 private:
  struct Params {
    torch::Tensor weight, bias, mean, var;
  };

  void add_params(int32_t i) {
    const auto& l = layers_[i];
    const std::string& name = names_[i];
    auto p = LayerParams();
    auto& t = params_[i];
    auto add = [&](const char* what, std::vector<int64_t> shape) {
      for (auto d : shape)
        if (d < 1) throw std::invalid_argument(name + ": bad shape for " + what);
      return p->register_parameter(what, torch::zeros(shape), /*requires_grad=*/false);
    };
    const int64_t kh = l.kernel[0], kw = l.kernel[1];
    switch (l.op) {
      case DS_OP_CONV:
        t.weight = add("weight", {l.out_channels, l.in_channels, kh, kw});
        if (l.bias) t.bias = add("bias", {l.out_channels});
        break;
      case DS_OP_DEPTHWISE_CONV:
        t.weight = add("weight", {int64_t{l.in_channels} * l.multiplier, 1, kh, kw});
        if (l.bias) t.bias = add("bias", {int64_t{l.in_channels} * l.multiplier});
        break;
      case DS_OP_BATCH_NORM:
        if (l.scale) t.weight = add("weight", {l.in_channels});
        if (l.center) t.bias = add("bias", {l.in_channels});
        t.mean = add("running_mean", {l.in_channels});
        t.var = add("running_var", {l.in_channels});
        break;
      case DS_OP_DENSE:
        t.weight = add("weight", {l.out_channels, l.in_channels});
        if (l.bias) t.bias = add("bias", {l.out_channels});
        break;
      default:
        return;
    }
    register_module(name, p);
  }

  // TensorFlow's "same" padding along one dimension: before, after.
  static std::pair<int64_t, int64_t> same_pad(int64_t in, int64_t k, int64_t s, int64_t d) {
    const int64_t out = (in + s - 1) / s;
    const int64_t total = std::max<int64_t>((out - 1) * s + (k - 1) * d + 1 - in, 0);
    return {total / 2, total - total / 2};
  }

  // The padding a layer applies to x: top, bottom, left, right.
  std::array<int64_t, 4> padding(const ds_layer& l, const torch::Tensor& x) const {
    if (!l.same) return {l.pad[0], l.pad[1], l.pad[2], l.pad[3]};
    auto [t, b] = same_pad(x.size(2), l.kernel[0], l.stride[0], std::max(l.dilation[0], 1));
    auto [lf, r] = same_pad(x.size(3), l.kernel[1], l.stride[1], std::max(l.dilation[1], 1));
    return {t, b, lf, r};
  }

  static torch::Tensor pad(const torch::Tensor& x, const std::array<int64_t, 4>& p,
                           double value = 0) {
    if (p[0] == 0 && p[1] == 0 && p[2] == 0 && p[3] == 0) return x;
    return torch::constant_pad_nd(x, {p[2], p[3], p[0], p[1]}, value);
  }

  torch::Tensor conv(const ds_layer& l, const Params& t, const torch::Tensor& x,
                     int64_t groups) const {
    auto p = padding(l, x);
    const std::vector<int64_t> dil = {std::max(l.dilation[0], 1), std::max(l.dilation[1], 1)};
    const std::vector<int64_t> stride = {l.stride[0], l.stride[1]};
    // Symmetric padding goes to the convolution itself: no padded copy.
    if (p[0] == p[1] && p[2] == p[3]) {
      const std::vector<int64_t> both = {p[0], p[2]};
      return torch::conv2d(x, t.weight, t.bias, stride, both, dil, groups);
    }
    const std::vector<int64_t> none = {0, 0};
    return torch::conv2d(pad(x, p), t.weight, t.bias, stride, none, dil, groups);
  }

  static torch::Tensor activate(int32_t act, const torch::Tensor& x) {
    switch (act) {
      case DS_ACT_LINEAR:
        return x;
      case DS_ACT_RELU:
        return torch::relu(x);
      case DS_ACT_SOFTMAX:
        return torch::softmax(x, 1);
      case DS_ACT_SIGMOID:
        return torch::sigmoid(x);
      case DS_ACT_TANH:
        return torch::tanh(x);
    }
    throw std::invalid_argument("unknown activation " + std::to_string(act));
  }

  // Keras' ReLU: max_value above it, x from threshold up, and
  // negative_slope * (x - threshold) below.
  static torch::Tensor relu(const ds_layer& l, const torch::Tensor& x) {
    torch::Tensor y;
    if (l.negative_slope == 0 && l.threshold == 0)
      y = l.max_value >= 0 ? torch::clamp(x, 0, l.max_value) : torch::relu(x);
    else
      y = torch::where(x >= l.threshold, x, l.negative_slope * (x - l.threshold));
    if (l.max_value >= 0) y = torch::clamp_max(y, l.max_value);
    return y;
  }

  // Keras' average pooling: padded cells do not count, so the sum is
  // divided by the share of real ones.
  torch::Tensor avg_pool(const ds_layer& l, const torch::Tensor& x) const {
    auto p = padding(l, x);
    std::vector<int64_t> k = {l.kernel[0], l.kernel[1]}, s = {l.stride[0], l.stride[1]};
    auto y = torch::avg_pool2d(pad(x, p), k, s);
    if (p == std::array<int64_t, 4>{0, 0, 0, 0}) return y;
    auto ones = torch::ones({1, 1, x.size(2), x.size(3)}, x.options());
    return y / torch::avg_pool2d(pad(ones, p), k, s);
  }

  torch::Tensor apply(int32_t i, const torch::Tensor& image,
                      const std::vector<torch::Tensor>& out) const {
    const auto& l = layers_[i];
    const auto& t = params_[i];
    auto in = [&](int32_t k) -> const torch::Tensor& { return out[l.inputs[k]]; };
    auto spatial = [&](const torch::Tensor& x) {
      if (x.dim() != 4)
        throw std::invalid_argument(names_[i] + ": needs an image-shaped input, got " +
                                    std::to_string(x.dim()) + " dimensions");
      return x;
    };
    torch::Tensor y;
    switch (l.op) {
      case DS_OP_INPUT:
        y = image;
        break;
      case DS_OP_ZERO_PAD:
        y = pad(spatial(in(0)), {l.pad[0], l.pad[1], l.pad[2], l.pad[3]});
        break;
      case DS_OP_CONV:
        y = conv(l, t, spatial(in(0)), 1);
        break;
      case DS_OP_DEPTHWISE_CONV:
        y = conv(l, t, spatial(in(0)), l.in_channels);
        break;
      case DS_OP_BATCH_NORM:
        y = torch::batch_norm(in(0), t.weight, t.bias, t.mean, t.var, /*training=*/false,
                              0.0, l.epsilon, /*cudnn_enabled=*/false);
        break;
      case DS_OP_RELU:
        y = relu(l, in(0));
        break;
      case DS_OP_ACTIVATION:
      case DS_OP_IDENTITY:
        y = in(0);
        break;
      case DS_OP_ADD:
        y = in(0);
        for (int32_t k = 1; k < l.n_inputs; k++) y = y + in(k);
        break;
      case DS_OP_CONCAT: {
        std::vector<torch::Tensor> parts;
        for (int32_t k = 0; k < l.n_inputs; k++) parts.push_back(in(k));
        y = torch::cat(parts, 1);
        break;
      }
      case DS_OP_MAX_POOL: {
        const auto& x = spatial(in(0));
        y = torch::max_pool2d(pad(x, padding(l, x), -std::numeric_limits<double>::infinity()),
                              {l.kernel[0], l.kernel[1]}, {l.stride[0], l.stride[1]});
        break;
      }
      case DS_OP_AVG_POOL:
        y = avg_pool(l, spatial(in(0)));
        break;
      case DS_OP_GLOBAL_AVG_POOL:
        y = spatial(in(0)).mean({2, 3});
        break;
      case DS_OP_FLATTEN: {
        const auto& x = in(0);
        y = x.dim() == 4 ? x.permute({0, 2, 3, 1}).flatten(1) : x.flatten(1);
        break;
      }
      case DS_OP_DENSE:
        if (in(0).dim() != 2)
          throw std::invalid_argument(names_[i] + ": Dense needs a flat input");
        y = torch::linear(in(0), t.weight, t.bias);
        break;
      default:
        throw std::invalid_argument(names_[i] + ": unknown op " + std::to_string(l.op));
    }
    return activate(l.activation, y);
  }

  std::vector<ds_layer> layers_;
  std::vector<std::string> names_;
  std::vector<Params> params_;
  std::vector<int32_t> taps_, order_, last_use_;
};
TORCH_MODULE(GraphNet);

}  // namespace deepsim
