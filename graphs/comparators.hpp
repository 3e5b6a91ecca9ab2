// Compiled as part of engine.cpp, not on its own (see there).
// The comparators: the registry of architectures deepsim can build and load
// weights into, and the fixed networks whose features define similarity.
#include <torch/script.h>

#include <map>
#include <sstream>
#include <stdexcept>

#include "engine.h"
#include "graphnet.h"

namespace deepsim {
namespace {

namespace nn = torch::nn;

// Where a named layer ends: after nf feature modules and, when nc > 0, after
// the pooling and nc classifier modules (see FeatureNet::cut).
struct Cut {
  size_t nf, nc;
};

// One architecture: everything needed to build it, cut it at a named layer,
// feed it and load its weights. A new architecture is one entry in archs().
struct Arch {
  std::string name;
  FeatureNet (*build)(int64_t classes);
  std::map<std::string, Cut> layers;
  // The layers a comparator taps when none is named: one per scale, as
  // LPIPS does.
  std::vector<std::string> default_taps;
  int32_t input_size;  // the side its weights were trained at
  ds_norm norm;
  // Its weights ship without the classifier (features.* keys only).
  bool features_only;
  // Recognises its state dicts: features.0.weight's output channels and
  // kernel side.
  int64_t first_out, first_kernel;
};

// VGG16: convB_L after its ReLU, poolB after the pooling, fc6..fc8.
std::map<std::string, Cut> vgg16_layers() {
  std::map<std::string, Cut> cuts;
  const int per_block[] = {2, 2, 3, 3, 3};
  size_t idx = 0;
  for (int b = 0; b < 5; b++) {
    for (int l = 0; l < per_block[b]; l++) {
      idx += 2;
      cuts["conv" + std::to_string(b + 1) + "_" + std::to_string(l + 1)] = {idx, 0};
    }
    idx += 1;
    cuts["pool" + std::to_string(b + 1)] = {idx, 0};
  }
  cuts["fc6"] = {31, 2};
  cuts["fc7"] = {31, 5};
  cuts["fc8"] = {31, 7};
  return cuts;
}

const std::vector<Arch>& archs() {
  static const std::vector<Arch> all = {
      // AlexNet's convN after ReLU and max-pooling where it has one, as in
      // the paper.
      {"alexnet", [](int64_t) { return alexnet(); },
       {{"conv1", {3, 0}}, {"conv2", {6, 0}}, {"conv3", {8, 0}}, {"conv4", {10, 0}},
        {"conv5", {13, 0}}, {"fc6", {13, 3}}, {"fc7", {13, 6}}, {"fc8", {13, 7}}},
       {"conv1", "conv2", "conv3", "conv4", "conv5"},
       224, DS_NORM_IMAGENET, false, 64, 11},
      {"vgg16", [](int64_t) { return vgg16(); }, vgg16_layers(),
       {"conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"},
       224, DS_NORM_IMAGENET, false, 64, 3},
      {"exemplar", [](int64_t classes) { return exemplar(classes); },
       {{"conv1", {3, 0}}, {"conv2", {6, 0}}, {"conv3", {9, 0}}, {"conv4", {11, 0}}},
       {"conv1", "conv2", "conv3", "conv4"},
       64, DS_NORM_SIGNED, true, 32, 5},
  };
  return all;
}

// TorchScript modules are fed like torchvision models.
constexpr int32_t kScriptInputSize = 224;

std::string arch_names() {
  std::string names;
  for (const auto& a : archs()) names += (names.empty() ? "" : ", ") + a.name;
  return names;
}

const Arch& find_arch(const std::string& name) {
  for (const auto& a : archs())
    if (a.name == name) return a;
  throw std::invalid_argument("unknown architecture \"" + name + "\" (have " +
                              arch_names() + ")");
}

Cut find_layer(const Arch& a, const std::string& layer) {
  auto it = a.layers.find(layer);
  if (it == a.layers.end())
    throw std::invalid_argument("unknown layer \"" + layer + "\" for " + a.name);
  return it->second;
}

// The taps a layer spec names: "a", "a+b", or "" for the defaults.
std::vector<std::string> split_taps(const std::string& layer,
                                    const std::vector<std::string>& defaults) {
  if (layer.empty()) return defaults;
  std::vector<std::string> out;
  std::stringstream in(layer);
  for (std::string t; std::getline(in, t, '+');) {
    if (t.empty()) throw std::invalid_argument("empty layer name in \"" + layer + "\"");
    out.push_back(t);
  }
  return out;
}

// Resizes to size x size; size 0 keeps the input as it is.
torch::Tensor resize_to(const torch::Tensor& x, int64_t size) {
  if (size == 0 || (x.size(2) == size && x.size(3) == size)) return x;
  return nn::functional::interpolate(
      x, nn::functional::InterpolateFuncOptions()
             .size(std::vector<int64_t>{size, size})
             .mode(torch::kBilinear)
             .align_corners(false));
}

// Resizes [-1,1] RGB to the comparator's side and scales it as its weights
// expect.
class Input {
 public:
  Input(int64_t size, ds_norm norm) : size_(size), norm_(norm) {
    mean_ = torch::tensor({0.485, 0.456, 0.406}).view({1, 3, 1, 1});
    std_ = torch::tensor({0.229, 0.224, 0.225}).view({1, 3, 1, 1});
  }

  torch::Tensor operator()(const torch::Tensor& x) const {
    auto h = resize_to(x, size_);
    switch (norm_) {
      case DS_NORM_IMAGENET:
        return ((h + 1) / 2 - mean_) / std_;
      case DS_NORM_UNIT:
        return (h + 1) / 2;
      case DS_NORM_SIGNED:
        return h;
    }
    throw std::invalid_argument("unknown input normalisation " + std::to_string(norm_));
  }

  void to(torch::Device d) {
    mean_ = mean_.to(d);
    std_ = std_.to(d);
  }

 private:
  int64_t size_;
  ds_norm norm_;
  torch::Tensor mean_, std_;
};

// A registered architecture with fixed weights, tapped at named layers.
class NetComparator : public Comparator {
 public:
  NetComparator(FeatureNet net, std::vector<Cut> cuts, Input input)
      : net_(std::move(net)), input_(std::move(input)) {
    net_->eval();
    for (auto& p : net_->parameters()) p.requires_grad_(false);
    // The modules in order: features, then pooling, flattening and the
    // classifier. A tap is a count of modules applied.
    std::vector<torch::nn::AnyModule> all;
    for (const auto& m : *net_->features) all.push_back(m);
    all.emplace_back(net_->avgpool);
    all.emplace_back(torch::nn::Flatten());
    for (const auto& m : *net_->classifier) all.push_back(m);
    size_t deepest = 0;
    for (const auto& c : cuts) {
      size_t at = c.nc == 0 ? c.nf : net_->features->size() + 2 + c.nc;
      taps_.push_back(at);
      deepest = std::max(deepest, at);
    }
    chain_.assign(all.begin(), all.begin() + deepest);
  }

  std::vector<torch::Tensor> features(const torch::Tensor& x) override {
    std::vector<torch::Tensor> out(taps_.size());
    auto h = input_(x);
    for (size_t i = 0; i <= chain_.size(); i++) {
      for (size_t t = 0; t < taps_.size(); t++)
        if (taps_[t] == i) out[t] = h;
      if (i < chain_.size()) h = chain_[i].forward(h);
    }
    return out;
  }

  void to(torch::Device d) override {
    net_->to(d);
    input_.to(d);
  }

 private:
  FeatureNet net_;
  Input input_;
  std::vector<torch::nn::AnyModule> chain_;
  std::vector<size_t> taps_;
};

// A network built from a graph of layers, as imported from Keras.
class GraphComparator : public Comparator {
 public:
  GraphComparator(GraphNet net, Input input) : net_(std::move(net)), input_(std::move(input)) {
    net_->eval();
  }

  std::vector<torch::Tensor> features(const torch::Tensor& x) override {
    return net_->forward(input_(x));
  }

  void to(torch::Device d) override {
    net_->to(d);
    input_.to(d);
  }

 private:
  GraphNet net_;
  Input input_;
};

// A TorchScript module brought by the user: its forward, or the forward of
// a named submodule, gives the features. It sees ImageNet-normalised RGB at
// input_size, the convention of torchvision models.
class ScriptComparator : public Comparator {
 public:
  ScriptComparator(torch::jit::script::Module mod, std::string submodule, Input input)
      : mod_(std::move(mod)), sub_(std::move(submodule)), input_(std::move(input)) {
    if (!sub_.empty() && !mod_.hasattr(sub_))
      throw std::invalid_argument("the TorchScript module has no submodule \"" + sub_ + "\"");
    mod_.eval();
    for (auto p : mod_.parameters()) p.requires_grad_(false);
  }

  std::vector<torch::Tensor> features(const torch::Tensor& x) override {
    auto m = sub_.empty() ? mod_ : mod_.attr(sub_).toModule();
    torch::IValue out = m.forward({input_(x)});
    if (out.isTuple()) out = out.toTupleRef().elements().at(0);
    if (out.isList()) out = out.toListRef().at(0);
    if (!out.isTensor())
      throw std::runtime_error("TorchScript comparator did not return a tensor");
    return {out.toTensor()};
  }

  void to(torch::Device d) override {
    mod_.to(d);
    input_.to(d);
  }

 private:
  torch::jit::script::Module mod_;
  std::string sub_;
  Input input_;
};

// He initialisation for ReLU networks: random comparators keep the scale
// of their features through the layers.
void random_init(nn::Module& m) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) {
    if (p.dim() >= 2)
      nn::init::kaiming_normal_(p, 0.0, torch::kFanIn, torch::kReLU);
    else
      p.zero_();
  }
}

// Checks every key and shape of dict against a network's parameters and
// names the first mismatch; with features_only the classifier's keys are
// not required.
void check_params(const TensorDict& dict,
                  const torch::OrderedDict<std::string, torch::Tensor>& params,
                  const std::string& what, bool features_only) {
  auto unexpected = [&] {
    std::string keys;
    for (const auto& kv : dict)
      if (!params.contains(kv.key())) keys += " " + kv.key();
    return keys;
  };
  for (const auto& p : params) {
    const auto& key = p.key();
    if (features_only && key.rfind("features.", 0) != 0) continue;
    auto it = dict.find(key);
    if (it == dict.end()) {
      const std::string extra = unexpected();
      throw std::runtime_error(
          what + " state dict: missing key \"" + key + "\"" +
          (extra.empty() ? "" : " (unexpected keys:" + extra + ")"));
    }
    if (it->value().sizes() != p.value().sizes())
      throw std::runtime_error(what + " state dict: " +
                               shape_mismatch(key, it->value(), p.value()));
  }
  if (const std::string extra = unexpected(); !extra.empty())
    throw std::runtime_error(what + " state dict: unexpected keys:" + extra);
}

const Arch& detect_arch(const TensorDict& dict) {
  auto it = dict.find("features.0.weight");
  if (it != dict.end()) {
    auto s = it->value().sizes();
    for (const auto& a : archs())
      if (s.size() == 4 && s[0] == a.first_out && s[2] == a.first_kernel) return a;
  }
  throw std::runtime_error(
      "cannot tell the architecture from the keys (expected torchvision's "
      "AlexNet or VGG16 layout, features.0.weight ...): pass --arch");
}

// The comparator's input side from the spec's request.
int64_t input_side(int32_t requested, int32_t own) {
  if (requested == DS_INPUT_NATIVE) return 0;
  if (requested == DS_INPUT_OWN) return own;
  if (requested < 16)
    throw std::invalid_argument("comparator input size " + std::to_string(requested) +
                                " is too small");
  return requested;
}

// The weights a spec gives, from a file or from memory.
TensorDict spec_weights(const ds_comparator_spec& spec, const std::string& file) {
  if (spec.weights_len > 0)
    return dict_from_bytes(
        std::vector<char>(spec.weights_data, spec.weights_data + spec.weights_len));
  return dict_from_file(file);
}

std::shared_ptr<Comparator> make_comparator(const ds_comparator_spec& spec) {
  const std::string arch = spec.arch ? spec.arch : "";
  const std::string layer = spec.layer ? spec.layer : "";
  const std::string weights = spec.weights ? spec.weights : "";
  if (arch == "torchscript") {
    if (weights.empty() && spec.weights_len == 0)
      throw std::invalid_argument("torchscript comparator needs a module");
    Input input(input_side(spec.input_size, kScriptInputSize), DS_NORM_IMAGENET);
    torch::jit::script::Module mod;
    try {
      if (spec.weights_len > 0) {
        std::istringstream in(std::string(spec.weights_data, spec.weights_len));
        mod = torch::jit::load(in);
      } else {
        mod = torch::jit::load(weights);
      }
    } catch (const c10::Error& e) {
      throw std::runtime_error("not a loadable TorchScript module (" +
                               std::string(e.what_without_backtrace()) + ")");
    }
    return std::make_shared<ScriptComparator>(std::move(mod), layer, input);
  }
  if (arch == "graph") {
    if (weights.empty() && spec.weights_len == 0)
      throw std::invalid_argument("a graph network needs its weights");
    GraphNet net(spec.graph, spec.n_graph);
    net->set_taps(split_taps(layer, {}));
    auto dict = spec_weights(spec, weights);
    check_params(dict, net->named_parameters(), "graph", false);
    load_params(dict, named("", *net));
    Input input(input_side(spec.input_size, spec.own_size), static_cast<ds_norm>(spec.norm));
    return std::make_shared<GraphComparator>(net, input);
  }
  const Arch& a = find_arch(arch);
  Input input(input_side(spec.input_size, a.input_size), a.norm);
  std::vector<Cut> cuts;
  for (const auto& t : split_taps(layer, a.default_taps)) cuts.push_back(find_layer(a, t));
  torch::manual_seed(spec.seed);
  auto net = a.build(1000);
  if (weights.empty() && spec.weights_len == 0) {
    random_init(*net);
  } else {
    auto dict = spec_weights(spec, weights);
    check_params(dict, net->named_parameters(), a.name, a.features_only);
    Named params;
    for (const auto& p : net->named_parameters())
      if (dict.contains(p.key())) params.emplace_back(p.key(), p.value());
    load_params(dict, params);
  }
  return std::make_shared<NetComparator>(net, cuts, input);
}

}  // namespace

std::vector<torch::Tensor> checked_features(Comparator& c, const torch::Tensor& x) {
  auto taps = c.features(x);
  if (taps.empty()) throw std::runtime_error("the comparator gave no features");
  for (size_t i = 0; i < taps.size(); i++) {
    const auto& f = taps[i];
    std::ostringstream what;
    what << "the comparator's output" << (taps.size() > 1 ? " " + std::to_string(i) : "")
         << " has shape " << f.sizes() << " for a batch of " << x.size(0);
    if (f.dim() < 1 || f.size(0) != x.size(0))
      throw std::runtime_error(what.str() + ": want one entry per image");
    if (f.numel() == 0) throw std::runtime_error(what.str() + ": it is empty");
    if (!f.is_floating_point())
      throw std::runtime_error(what.str() + ": it is not floating point");
    if (!torch::isfinite(f.detach()).all().item<bool>())
      throw std::runtime_error(what.str() + ": it holds values that are not finite");
  }
  return taps;
}

int32_t arch_input_size(const std::string& arch) {
  if (arch == "torchscript") return kScriptInputSize;
  return find_arch(arch).input_size;
}

ds_comparator* new_comparator(const ds_comparator_spec& spec) {
  auto c = std::make_unique<ds_comparator>();
  c->device = best_device();
  c->c = make_comparator(spec);
  c->c->to(c->device);
  return c.release();
}

void free_comparator(ds_comparator* c) { delete c; }

void comparator_features(ds_comparator& c, const float* x, int64_t n, int64_t h,
                         int64_t w, float** out, int64_t shape[4]) {
  torch::NoGradGuard no_grad;
  auto taps = checked_features(*c.c, input_tensor(x, n, h, w, c.device));
  torch::Tensor f = taps[0];
  if (taps.size() > 1) {
    for (auto& t : taps) t = t.reshape({n, -1});
    f = torch::cat(taps, 1);
  }
  while (f.dim() < 4) f = f.unsqueeze(-1);
  if (f.dim() != 4)
    throw std::runtime_error("comparator features have " + std::to_string(f.dim()) +
                             " dimensions");
  f = f.to(torch::kCPU, torch::kFloat32).contiguous();
  float* p = static_cast<float*>(std::malloc(sizeof(float) * f.numel()));
  if (!p) throw std::bad_alloc();
  std::memcpy(p, f.data_ptr<float>(), sizeof(float) * f.numel());
  for (int i = 0; i < 4; i++) shape[i] = f.size(i);
  *out = p;
}

void comparator_distance(ds_comparator& c, const float* a, const float* b, int64_t n,
                         int64_t h, int64_t w, double* out) {
  torch::NoGradGuard no_grad;
  auto fa = checked_features(*c.c, input_tensor(a, n, h, w, c.device));
  auto fb = checked_features(*c.c, input_tensor(b, n, h, w, c.device));
  auto d = torch::zeros({n}, torch::kFloat64);
  for (size_t t = 0; t < fa.size(); t++) {
    // LPIPS's normalisation: unit length over channels, at each position.
    auto unit = [](const torch::Tensor& f) {
      return f / (f.pow(2).sum(1, /*keepdim=*/true).sqrt() + 1e-10);
    };
    auto sq = (unit(fa[t]) - unit(fb[t])).pow(2).sum(1);  // n, then positions
    d += sq.reshape({n, -1}).mean(1).to(torch::kCPU, torch::kFloat64);
  }
  std::memcpy(out, d.data_ptr<double>(), sizeof(double) * n);
}

std::string check_state_dict(const std::string& path, std::string arch) {
  auto dict = dict_from_file(path);
  const Arch& a = arch.empty() ? detect_arch(dict) : find_arch(arch);
  auto net = a.build(1000);
  check_params(dict, net->named_parameters(), a.name, a.features_only);
  return a.name;
}

}  // namespace deepsim
