// The comparators: the registry of architectures deepsim can build and load
// weights into, and the fixed networks whose features define similarity.
#include <torch/script.h>

#include <map>
#include <stdexcept>

#include "engine.h"

namespace deepsim {
namespace {

namespace nn = torch::nn;

// Where a named layer ends: after nf feature modules and, when nc > 0, after
// the pooling and nc classifier modules (see FeatureNet::cut).
struct Cut {
  size_t nf, nc;
};

// How an architecture's weights expect their [-1,1] input.
enum class Norm {
  ImageNet,      // [0,1] RGB, then ImageNet's mean and std
  PlusMinusOne,  // as it comes
};

// One architecture: everything needed to build it, cut it at a named layer,
// feed it and load its weights. A new architecture is one entry in archs().
struct Arch {
  std::string name;
  FeatureNet (*build)(int64_t classes);
  std::map<std::string, Cut> layers;
  int32_t input_size;  // the side its weights were trained at
  Norm norm;
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
       224, Norm::ImageNet, false, 64, 11},
      {"vgg16", [](int64_t) { return vgg16(); }, vgg16_layers(), 224, Norm::ImageNet,
       false, 64, 3},
      {"exemplar", [](int64_t classes) { return exemplar(classes); },
       {{"conv1", {3, 0}}, {"conv2", {6, 0}}, {"conv3", {9, 0}}, {"conv4", {11, 0}}},
       64, Norm::PlusMinusOne, true, 32, 5},
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

// Resizes to size x size; size 0 keeps the input as it is.
torch::Tensor resize_to(const torch::Tensor& x, int64_t size) {
  if (size == 0 || (x.size(2) == size && x.size(3) == size)) return x;
  return nn::functional::interpolate(
      x, nn::functional::InterpolateFuncOptions()
             .size(std::vector<int64_t>{size, size})
             .mode(torch::kBilinear)
             .align_corners(false));
}

// ImageNet's per-channel mean and std, for inputs in [0,1].
torch::Tensor imagenet_mean() { return torch::tensor({0.485, 0.456, 0.406}).view({1, 3, 1, 1}); }
torch::Tensor imagenet_std() { return torch::tensor({0.229, 0.224, 0.225}).view({1, 3, 1, 1}); }

// A registered architecture, cut at a layer, with fixed weights.
class NetComparator : public Comparator {
 public:
  NetComparator(FeatureNet net, Cut cut, int64_t input_size, Norm norm)
      : net_(std::move(net)), size_(input_size), norm_(norm) {
    net_->cut(cut.nf, cut.nc);
    net_->eval();
    for (auto& p : net_->parameters()) p.requires_grad_(false);
    mean_ = imagenet_mean();
    std_ = imagenet_std();
  }

  torch::Tensor features(const torch::Tensor& x) override {
    auto h = resize_to(x, size_);
    if (norm_ == Norm::ImageNet) h = ((h + 1) / 2 - mean_) / std_;
    return net_->forward(h);
  }

  void to(torch::Device d) override {
    net_->to(d);
    mean_ = mean_.to(d);
    std_ = std_.to(d);
  }

 private:
  FeatureNet net_;
  int64_t size_;
  Norm norm_;
  torch::Tensor mean_, std_;
};

// A TorchScript module brought by the user: its forward, or the forward of
// a named submodule, gives the features. It sees ImageNet-normalised RGB at
// input_size, the convention of torchvision models.
class ScriptComparator : public Comparator {
 public:
  ScriptComparator(const std::string& path, std::string submodule,
                   int64_t input_size)
      : mod_(torch::jit::load(path)),
        sub_(std::move(submodule)),
        size_(input_size) {
    if (!sub_.empty() && !mod_.hasattr(sub_))
      throw std::invalid_argument("TorchScript module " + path +
                                  " has no submodule \"" + sub_ + "\"");
    mod_.eval();
    for (auto p : mod_.parameters()) p.requires_grad_(false);
    mean_ = imagenet_mean();
    std_ = imagenet_std();
  }

  torch::Tensor features(const torch::Tensor& x) override {
    auto h = ((resize_to(x, size_) + 1) / 2 - mean_) / std_;
    auto m = sub_.empty() ? mod_ : mod_.attr(sub_).toModule();
    torch::IValue out = m.forward({h});
    if (out.isTuple()) out = out.toTupleRef().elements().at(0);
    if (out.isList()) out = out.toListRef().at(0);
    if (!out.isTensor())
      throw std::runtime_error("TorchScript comparator did not return a tensor");
    return out.toTensor();
  }

  void to(torch::Device d) override {
    mod_.to(d);
    mean_ = mean_.to(d);
    std_ = std_.to(d);
  }

 private:
  torch::jit::script::Module mod_;
  std::string sub_;
  int64_t size_;
  torch::Tensor mean_, std_;
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

// Checks every key and shape of dict against net and names the first
// mismatch; an architecture that ships features only needs no classifier.
void check_dict(const TensorDict& dict, FeatureNet& net, const Arch& a) {
  const auto params = net->named_parameters();
  auto unexpected = [&] {
    std::string keys;
    for (const auto& kv : dict)
      if (!params.contains(kv.key())) keys += " " + kv.key();
    return keys;
  };
  for (const auto& p : params) {
    const auto& key = p.key();
    if (a.features_only && key.rfind("features.", 0) != 0) continue;
    auto it = dict.find(key);
    if (it == dict.end()) {
      const std::string extra = unexpected();
      throw std::runtime_error(
          a.name + " state dict: missing key \"" + key + "\"" +
          (extra.empty() ? "" : " (unexpected keys:" + extra + ")"));
    }
    if (it->value().sizes() != p.value().sizes())
      throw std::runtime_error(a.name + " state dict: " +
                               shape_mismatch(key, it->value(), p.value()));
  }
  if (const std::string extra = unexpected(); !extra.empty())
    throw std::runtime_error(a.name + " state dict: unexpected keys:" + extra);
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

std::shared_ptr<Comparator> make_comparator(const ds_comparator_spec& spec) {
  const std::string arch = spec.arch ? spec.arch : "";
  const std::string layer = spec.layer ? spec.layer : "";
  const std::string weights = spec.weights ? spec.weights : "";
  if (arch == "torchscript") {
    if (weights.empty()) throw std::invalid_argument("torchscript comparator needs a file");
    const int64_t size = input_side(spec.input_size, kScriptInputSize);
    try {
      return std::make_shared<ScriptComparator>(weights, layer, size);
    } catch (const c10::Error& e) {
      throw std::runtime_error(weights + ": not a loadable TorchScript module (" +
                               e.what_without_backtrace() + ")");
    }
  }
  const Arch& a = find_arch(arch);
  const int64_t size = input_side(spec.input_size, a.input_size);
  const Cut cut = find_layer(a, layer);
  torch::manual_seed(spec.seed);
  auto net = a.build(1000);
  if (weights.empty() && spec.weights_len == 0) {
    random_init(*net);
  } else {
    auto dict = spec.weights_len > 0
                    ? dict_from_bytes(std::vector<char>(
                          spec.weights_data, spec.weights_data + spec.weights_len))
                    : dict_from_file(weights);
    check_dict(dict, net, a);
    Named params;
    for (const auto& p : net->named_parameters())
      if (dict.contains(p.key())) params.emplace_back(p.key(), p.value());
    load_params(dict, params);
  }
  return std::make_shared<NetComparator>(net, cut, size, a.norm);
}

}  // namespace

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
  auto f = c.c->features(input_tensor(x, n, h, w, c.device));
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

std::string check_state_dict(const std::string& path, std::string arch) {
  auto dict = dict_from_file(path);
  const Arch& a = arch.empty() ? detect_arch(dict) : find_arch(arch);
  auto net = a.build(1000);
  check_dict(dict, net, a);
  return a.name;
}

std::vector<char> random_state_dict(const std::string& arch, int64_t seed) {
  const Arch& a = find_arch(arch);
  torch::manual_seed(seed);
  auto net = a.build(1000);
  random_init(*net);
  TensorDict dict;
  for (const auto& p : net->named_parameters()) {
    if (a.features_only && p.key().rfind("features.", 0) != 0) continue;
    dict.insert(p.key(), p.value().detach());
  }
  return dict_to_bytes(dict);
}

}  // namespace deepsim
