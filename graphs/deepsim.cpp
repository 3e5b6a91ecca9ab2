// The DeePSiM model (E, G, D and C with their optimizers), its training step
// and checkpoint (de)serialisation, behind the C ABI of deepsim.h.
#include "deepsim.h"

#include <torch/serialize.h>
#include <torch/torch.h>

#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <iterator>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "nets.h"

namespace F = torch::nn::functional;
using deepsim::Comparator;

struct ds_comparator {
  std::shared_ptr<Comparator> c;
  torch::Device device{torch::kCPU};
};

struct ds_model {
  ds_config cfg;
  torch::Device device{torch::kCPU};
  // Autoencoder and VAE. The VAE's encoder gives 2 x code_channels: the
  // posterior's mean, then its log-variance.
  deepsim::Encoder enc{nullptr};
  deepsim::Generator gen{nullptr};
  deepsim::Discriminator disc{nullptr};
  std::shared_ptr<Comparator> comp;
  // Comparator task: the Exemplar-CNN with its surrogate-class head.
  deepsim::FeatureNet net{nullptr};
  // opt_g trains E and G (or the Exemplar-CNN), opt_d trains D.
  std::unique_ptr<torch::optim::Adam> opt_g, opt_d;
  // Discriminator balancing (PAPER.md): D pauses when it wins too easily and
  // G pauses when D is hopelessly behind.
  bool train_d = true;
  bool train_g = true;
  int steps_since_trim = 0;
  // Draws the VAE's reparameterisation noise; its state is checkpointed so
  // that a resumed run draws what the uninterrupted one would have.
  at::Generator noise = at::detail::createCPUGenerator();
};

namespace {

using Named = std::vector<std::pair<std::string, torch::Tensor>>;
using TensorDict = c10::Dict<std::string, torch::Tensor>;

char* dup_string(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (p) std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

// Runs f and turns every exception into an error string: nothing may unwind
// into Go.
template <typename Fn>
char* guarded(Fn&& f) {
  try {
    f();
    return nullptr;
  } catch (const c10::Error& e) {
    return dup_string(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return dup_string(e.what());
  } catch (...) {
    return dup_string("unknown C++ exception");
  }
}

void to_malloc(const std::vector<char>& bytes, char** buf, int64_t* len) {
  char* p = static_cast<char*>(std::malloc(bytes.size()));
  if (!p) throw std::bad_alloc();
  std::memcpy(p, bytes.data(), bytes.size());
  *buf = p;
  *len = static_cast<int64_t>(bytes.size());
}

bool generative(const ds_model& m) {
  return m.cfg.task == DS_TASK_AUTOENCODER || m.cfg.task == DS_TASK_VAE;
}

bool adversarial(const ds_model& m) { return generative(m) && m.cfg.lambda_adv > 0; }

// The log-variance is clamped so that exp() can neither overflow nor
// vanish while the KL weight is still warming up.
constexpr double kMinLogVar = -30, kMaxLogVar = 20;

// The code of x: for the VAE the posterior's mean and log-variance, for the
// autoencoder the code itself and an undefined log-variance.
std::pair<torch::Tensor, torch::Tensor> encode(ds_model& m, const torch::Tensor& x) {
  auto h = m.enc->forward(x);
  if (m.cfg.task != DS_TASK_VAE) return {h, torch::Tensor()};
  auto parts = h.chunk(2, 1);
  return {parts[0], parts[1].clamp(kMinLogVar, kMaxLogVar)};
}

void set_requires_grad(torch::nn::Module& mod, bool on) {
  for (auto& p : mod.parameters()) p.requires_grad_(on);
}

Named named(const std::string& prefix, const torch::nn::Module& mod) {
  Named out;
  for (const auto& p : mod.named_parameters())
    out.emplace_back(prefix + p.key(), p.value());
  return out;
}

// The parameters each optimizer owns, by checkpoint name.
Named g_params(ds_model& m) {
  if (m.cfg.task == DS_TASK_COMPARATOR) return named("", *m.net);
  auto out = named("encoder.", *m.enc);
  auto g = named("generator.", *m.gen);
  out.insert(out.end(), g.begin(), g.end());
  return out;
}

Named d_params(ds_model& m) {
  if (!m.disc) return {};
  return named("discriminator.", *m.disc);
}

std::vector<torch::Tensor> tensors(const Named& n) {
  std::vector<torch::Tensor> out;
  for (const auto& p : n) out.push_back(p.second);
  return out;
}

// Adam moments per parameter, keyed by the parameter's name.
void put_adam(TensorDict& dict, const std::string& prefix,
              torch::optim::Adam& opt, const Named& params) {
  for (const auto& [name, t] : params) {
    auto it = opt.state().find(c10::guts::to_string(t.unsafeGetTensorImpl()));
    if (it == opt.state().end()) continue;  // no step taken yet
    auto& s = static_cast<torch::optim::AdamParamState&>(*it->second);
    dict.insert(prefix + name + ".exp_avg", s.exp_avg().cpu());
    dict.insert(prefix + name + ".exp_avg_sq", s.exp_avg_sq().cpu());
    dict.insert(prefix + name + ".step", torch::tensor(s.step(), torch::kInt64));
  }
}

const torch::Tensor& lookup(const TensorDict& dict, const std::string& key) {
  auto it = dict.find(key);
  if (it == dict.end())
    throw std::runtime_error("state dict has no tensor \"" + key + "\"");
  return it->value();
}

std::string shape_mismatch(const std::string& name, const torch::Tensor& got,
                           const torch::Tensor& want) {
  std::ostringstream msg;
  msg << "tensor \"" << name << "\" has shape " << got.sizes()
      << ", the network expects " << want.sizes();
  return msg.str();
}

void load_params(const TensorDict& dict, const Named& params) {
  torch::NoGradGuard no_grad;
  for (auto [name, t] : params) {
    const auto& src = lookup(dict, name);
    if (src.sizes() != t.sizes())
      throw std::runtime_error(shape_mismatch(name, src, t));
    t.copy_(src);
  }
}

void load_adam(const TensorDict& dict, const std::string& prefix,
               torch::optim::Adam& opt, const Named& params,
               torch::Device dev) {
  opt.state().clear();
  for (const auto& [name, t] : params) {
    const std::string key = prefix + name;
    if (dict.find(key + ".step") == dict.end()) continue;
    auto s = std::make_unique<torch::optim::AdamParamState>();
    s->step(lookup(dict, key + ".step").item<int64_t>());
    s->exp_avg(lookup(dict, key + ".exp_avg").to(dev).clone());
    s->exp_avg_sq(lookup(dict, key + ".exp_avg_sq").to(dev).clone());
    if (s->exp_avg().sizes() != t.sizes() || s->exp_avg_sq().sizes() != t.sizes())
      throw std::runtime_error("optimizer state for \"" + name +
                               "\" does not match the parameter's shape");
    opt.state()[c10::guts::to_string(t.unsafeGetTensorImpl())] = std::move(s);
  }
}

TensorDict dict_from_bytes(std::vector<char> bytes) {
  torch::IValue v = torch::pickle_load(bytes);
  if (!v.isGenericDict()) throw std::runtime_error("not a state dict");
  TensorDict dict;
  for (const auto& kv : v.toGenericDict()) {
    if (!kv.key().isString() || !kv.value().isTensor())
      throw std::runtime_error("state dict holds a non-tensor entry");
    dict.insert(kv.key().toStringRef(), kv.value().toTensor());
  }
  return dict;
}

TensorDict dict_from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)),
                          std::istreambuf_iterator<char>());
  try {
    return dict_from_bytes(std::move(bytes));
  } catch (const c10::Error& e) {
    throw std::runtime_error(path + ": not a readable torch.save state dict (" +
                             e.what_without_backtrace() + ")");
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
}

deepsim::FeatureNet build_arch(const std::string& arch, int64_t classes = 1000) {
  if (arch == "alexnet") return deepsim::alexnet();
  if (arch == "vgg16") return deepsim::vgg16();
  if (arch == "exemplar") return deepsim::exemplar(classes);
  throw std::invalid_argument("unknown architecture \"" + arch +
                              "\" (have alexnet, vgg16, exemplar)");
}

// The Exemplar-CNN ships without its surrogate-class head.
bool features_only(const std::string& arch) { return arch == "exemplar"; }

// Checks every key and shape of dict against net and names the first
// mismatch; with feats_only the classifier's keys are not required.
void check_dict(const TensorDict& dict, deepsim::FeatureNet& net,
                const std::string& arch, bool feats_only) {
  const auto params = net->named_parameters();
  auto unexpected = [&] {
    std::string keys;
    for (const auto& kv : dict)
      if (!params.contains(kv.key())) keys += " " + kv.key();
    return keys;
  };
  for (const auto& p : params) {
    const auto& key = p.key();
    if (feats_only && key.rfind("features.", 0) != 0) continue;
    auto it = dict.find(key);
    if (it == dict.end()) {
      const std::string extra = unexpected();
      throw std::runtime_error(
          arch + " state dict: missing key \"" + key + "\"" +
          (extra.empty() ? "" : " (unexpected keys:" + extra + ")"));
    }
    if (it->value().sizes() != p.value().sizes())
      throw std::runtime_error(arch + " state dict: " +
                               shape_mismatch(key, it->value(), p.value()));
  }
  if (const std::string extra = unexpected(); !extra.empty())
    throw std::runtime_error(arch + " state dict: unexpected keys:" + extra);
}

std::string detect_arch(const TensorDict& dict) {
  auto it = dict.find("features.0.weight");
  if (it != dict.end()) {
    auto s = it->value().sizes();
    if (s.size() == 4 && s[0] == 64 && s[2] == 11) return "alexnet";
    if (s.size() == 4 && s[0] == 64 && s[2] == 3) return "vgg16";
    if (s.size() == 4 && s[0] == 32 && s[2] == 5) return "exemplar";
  }
  throw std::runtime_error(
      "cannot tell the architecture from the keys (expected torchvision's "
      "AlexNet or VGG16 layout, features.0.weight ...): pass --arch");
}

torch::Tensor input_tensor(const float* x, int64_t n, int64_t h, int64_t w,
                           torch::Device dev) {
  // from_blob does not copy: the Go buffer outlives this call's use of it.
  return torch::from_blob(const_cast<float*>(x), {n, 3, h, w}, torch::kFloat32)
      .to(dev);
}

torch::Device best_device() {
  return torch::cuda::is_available() ? torch::Device(torch::kCUDA)
                                     : torch::Device(torch::kCPU);
}

// glibc keeps the memory of freed activations in fragmented arenas and the
// resident set creeps up step after step; handing free pages back now and
// then keeps it flat at a small cost.
void trim_now_and_then(ds_model& m) {
  if (++m.steps_since_trim >= 16) {
    malloc_trim(0);
    m.steps_since_trim = 0;
  }
}

}  // namespace

extern "C" {

// ---- comparators ----

char* ds_comparator_new(const ds_comparator_spec* spec, ds_comparator** out) {
  *out = nullptr;
  return guarded([&] {
    const std::string arch = spec->arch ? spec->arch : "";
    const std::string layer = spec->layer ? spec->layer : "";
    const std::string weights = spec->weights ? spec->weights : "";
    if (spec->input_size != 0 && spec->input_size < 16)
      throw std::invalid_argument("comparator input size " +
                                  std::to_string(spec->input_size) + " is too small");
    auto c = std::make_unique<ds_comparator>();
    c->device = best_device();
    if (arch == "torchscript") {
      if (weights.empty()) throw std::invalid_argument("torchscript comparator needs a file");
      try {
        c->c = std::make_shared<deepsim::ScriptComparator>(weights, layer, spec->input_size);
      } catch (const c10::Error& e) {
        throw std::runtime_error(weights + ": not a loadable TorchScript module (" +
                                 e.what_without_backtrace() + ")");
      }
    } else {
      const auto cut = deepsim::layer_cut(arch, layer);
      torch::manual_seed(spec->seed);
      auto net = build_arch(arch);
      if (weights.empty() && spec->weights_len == 0) {
        deepsim::random_init(*net);
      } else {
        auto dict = spec->weights_len > 0
                        ? dict_from_bytes(std::vector<char>(
                              spec->weights_data, spec->weights_data + spec->weights_len))
                        : dict_from_file(weights);
        check_dict(dict, net, arch, features_only(arch));
        Named params;
        for (const auto& p : net->named_parameters())
          if (dict.contains(p.key())) params.emplace_back(p.key(), p.value());
        load_params(dict, params);
      }
      c->c = std::make_shared<deepsim::NetComparator>(net, cut, spec->input_size,
                                                      arch != "exemplar");
    }
    c->c->to(c->device);
    *out = c.release();
  });
}

void ds_comparator_free(ds_comparator* c) { delete c; }

char* ds_comparator_features(ds_comparator* c, const float* x, int64_t n,
                             int64_t h, int64_t w, float** out,
                             int64_t shape[4]) {
  *out = nullptr;
  return guarded([&] {
    torch::NoGradGuard no_grad;
    auto f = c->c->features(input_tensor(x, n, h, w, c->device));
    while (f.dim() < 4) f = f.unsqueeze(-1);
    if (f.dim() != 4)
      throw std::runtime_error("comparator features have " +
                               std::to_string(f.dim()) + " dimensions");
    f = f.to(torch::kCPU, torch::kFloat32).contiguous();
    float* p = static_cast<float*>(std::malloc(sizeof(float) * f.numel()));
    if (!p) throw std::bad_alloc();
    std::memcpy(p, f.data_ptr<float>(), sizeof(float) * f.numel());
    for (int i = 0; i < 4; i++) shape[i] = f.size(i);
    *out = p;
  });
}

char* ds_state_dict_check(const char* path, const char* arch, char** arch_out) {
  *arch_out = nullptr;
  return guarded([&] {
    auto dict = dict_from_file(path);
    std::string a = arch ? arch : "";
    if (a.empty()) a = detect_arch(dict);
    auto net = build_arch(a);
    check_dict(dict, net, a, features_only(a));
    *arch_out = dup_string(a);
  });
}

char* ds_random_state_dict(const char* arch, int64_t seed, char** buf,
                           int64_t* len) {
  *buf = nullptr;
  *len = 0;
  return guarded([&] {
    torch::manual_seed(seed);
    auto net = build_arch(arch);
    deepsim::random_init(*net);
    TensorDict dict;
    for (const auto& p : net->named_parameters()) {
      if (features_only(arch) && p.key().rfind("features.", 0) != 0) continue;
      dict.insert(p.key(), p.value().detach());
    }
    to_malloc(torch::pickle_save(dict), buf, len);
  });
}

// ---- trained models ----

char* ds_model_new(const ds_config* cfg, ds_comparator* comp, ds_model** out) {
  *out = nullptr;
  return guarded([&] {
    const int64_t s = cfg->size;
    if (s < 16 || s % 8 != 0 || ((s / 8) & (s / 8 - 1)) != 0)
      throw std::invalid_argument("size " + std::to_string(s) +
                                  " must be 8 times a power of two, >= 16");
    auto m = std::make_unique<ds_model>();
    m->cfg = *cfg;
    m->device = best_device();
    auto adam = [&](std::vector<torch::Tensor> params) {
      return std::make_unique<torch::optim::Adam>(
          params, torch::optim::AdamOptions(cfg->lr)
                      .betas({cfg->beta1, cfg->beta2})
                      .weight_decay(cfg->weight_decay));
    };
    torch::manual_seed(cfg->seed);
    if (cfg->upsample != DS_UPSAMPLE_DECONV && cfg->upsample != DS_UPSAMPLE_RESIZE)
      throw std::invalid_argument("unknown upsampling " + std::to_string(cfg->upsample));
    const auto up = static_cast<deepsim::Upsample>(cfg->upsample);
    switch (cfg->task) {
      case DS_TASK_AUTOENCODER:
      case DS_TASK_VAE:
        if (comp) m->comp = comp->c;
        m->enc = deepsim::Encoder(
            s, cfg->task == DS_TASK_VAE ? 2 * cfg->code_channels : cfg->code_channels);
        m->gen = deepsim::Generator(s, cfg->code_channels, up);
        m->noise.set_current_seed(static_cast<uint64_t>(cfg->seed));
        m->disc = deepsim::Discriminator(s);
        m->enc->to(m->device);
        m->gen->to(m->device);
        m->disc->to(m->device);
        m->opt_d = adam(m->disc->parameters());
        break;
      case DS_TASK_COMPARATOR:
        if (cfg->classes < 2)
          throw std::invalid_argument("the comparator task needs at least 2 classes");
        m->net = deepsim::exemplar(cfg->classes);
        deepsim::msra_init(*m->net);
        m->net->cut(11, 4);  // through the surrogate-class logits
        m->net->to(m->device);
        break;
      default:
        throw std::invalid_argument("unknown task " + std::to_string(cfg->task));
    }
    m->opt_g = adam(tensors(g_params(*m)));
    *out = m.release();
  });
}

void ds_model_free(ds_model* m) { delete m; }

namespace {

// One step of the autoencoder or the VAE: E and G learn from the weighted
// loss terms, D from telling x from G's output.
void autoencoder_step(ds_model* m, const torch::Tensor& x, double kl_weight,
                      ds_losses* out) {
  const auto& c = m->cfg;
  m->enc->train();
  m->gen->train();
  m->disc->train();

  auto zero = torch::zeros({}, x.options());
  torch::Tensor l_img = zero, l_feat = zero, l_adv = zero, l_discr = zero, kl = zero;
  torch::Tensor g_loss = zero;
  auto [code, logvar] = encode(*m, x);
  if (c.task == DS_TASK_VAE) {
    // Reparameterisation: z = mu + sigma * eps keeps z differentiable.
    auto eps = torch::randn(code.sizes(), m->noise, torch::kFloat32).to(code.device());
    auto mu = code;
    code = mu + torch::exp(0.5 * logvar) * eps;
    // KL(N(mu, sigma^2) || N(0, I)), summed over the latent, mean per image.
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum() / x.size(0);
    if (kl_weight > 0) g_loss = g_loss + kl_weight * kl;
  }
  auto y = m->gen->forward(code);

  if (c.lambda_img > 0) {
    l_img = F::mse_loss(y, x);
    g_loss = g_loss + c.lambda_img * l_img;
  }
  if (c.lambda_feat > 0) {
    if (!m->comp) throw std::invalid_argument("the feature loss needs a comparator");
    torch::Tensor target;
    {
      torch::NoGradGuard no_grad;
      target = m->comp->features(x);
    }
    l_feat = F::mse_loss(m->comp->features(y), target);
    g_loss = g_loss + c.lambda_feat * l_feat;
  }
  const bool update_d = adversarial(*m) && m->train_d;
  const bool update_g = m->train_g;
  if (adversarial(*m)) {
    auto real = m->disc->forward(x);
    auto fake = m->disc->forward(y.detach());
    l_discr = F::binary_cross_entropy_with_logits(real, torch::ones_like(real)) +
              F::binary_cross_entropy_with_logits(fake, torch::zeros_like(fake));
    if (update_d) {
      m->opt_d->zero_grad();
      l_discr.backward();
      m->opt_d->step();
    }
    // G's adversarial term must not leave gradients in D.
    set_requires_grad(*m->disc, false);
    auto judged = m->disc->forward(y);
    set_requires_grad(*m->disc, true);
    l_adv = F::binary_cross_entropy_with_logits(judged, torch::ones_like(judged));
    g_loss = g_loss + c.lambda_adv * l_adv;
  }
  if (update_g && g_loss.requires_grad()) {
    m->opt_g->zero_grad();
    g_loss.backward();
    m->opt_g->step();
  }

  out->loss_img = l_img.item<double>();
  out->loss_feat = l_feat.item<double>();
  out->loss_adv = l_adv.item<double>();
  out->loss_discr = l_discr.item<double>();
  out->kl = kl.item<double>();
  out->updated_g = update_g;
  out->updated_d = update_d;

  if (adversarial(*m)) {
    const double r = out->loss_discr / std::max(out->loss_adv, 1e-12);
    if (m->train_d && r < 0.1) m->train_d = false;
    else if (!m->train_d && r > 0.5) m->train_d = true;
    m->train_g = !(r > 10);
  }
}

// Cross-entropy and accuracy of the surrogate-class head.
void classify(ds_model* m, const torch::Tensor& x, const int64_t* labels,
              int64_t n, bool train, ds_losses* out) {
  if (!labels) throw std::invalid_argument("the comparator task needs labels");
  auto y = torch::from_blob(const_cast<int64_t*>(labels), {n}, torch::kInt64)
               .to(m->device);
  if (y.min().item<int64_t>() < 0 || y.max().item<int64_t>() >= m->cfg.classes)
    throw std::invalid_argument("label outside [0, classes)");
  train ? m->net->train() : m->net->eval();
  torch::Tensor logits, loss;
  {
    std::optional<torch::NoGradGuard> no_grad;
    if (!train) no_grad.emplace();
    logits = m->net->forward(x);
    loss = F::cross_entropy(logits, y);
  }
  if (train) {
    m->opt_g->zero_grad();
    loss.backward();
    m->opt_g->step();
  }
  *out = ds_losses{};
  out->loss_img = loss.item<double>();
  out->accuracy = logits.argmax(1).eq(y).to(torch::kFloat64).mean().item<double>();
  out->updated_g = train;
}

}  // namespace

char* ds_model_train_step(ds_model* m, const float* x_data,
                          const int64_t* labels, int64_t n, double kl_weight,
                          ds_losses* out) {
  return guarded([&] {
    auto x = input_tensor(x_data, n, m->cfg.size, m->cfg.size, m->device);
    if (m->cfg.task == DS_TASK_COMPARATOR)
      classify(m, x, labels, n, true, out);
    else
      autoencoder_step(m, x, kl_weight, out);
    trim_now_and_then(*m);
  });
}

char* ds_model_evaluate(ds_model* m, const float* x_data, const int64_t* labels,
                        int64_t n, ds_losses* out) {
  return guarded([&] {
    if (m->cfg.task != DS_TASK_COMPARATOR)
      throw std::invalid_argument("evaluate is for the comparator task");
    classify(m, input_tensor(x_data, n, m->cfg.size, m->cfg.size, m->device),
             labels, n, false, out);
  });
}

namespace {

// Puts E and G in eval mode after checking that the run has them and that
// h and w are multiples of the encoder's downsampling factor.
void prepare_inference(ds_model* m, int64_t h, int64_t w) {
  if (!generative(*m))
    throw std::invalid_argument("this run has no decoder to reconstruct with");
  const int64_t f = int64_t{1} << deepsim::stages_for(m->cfg.size);
  if (h % f != 0 || w % f != 0)
    throw std::invalid_argument(std::to_string(h) + "x" + std::to_string(w) +
                                " is not a multiple of " + std::to_string(f));
  m->enc->eval();
  m->gen->eval();
}

void copy_out(const torch::Tensor& t, float* out) {
  auto c = t.to(torch::kCPU, torch::kFloat32).contiguous();
  std::memcpy(out, c.data_ptr<float>(), sizeof(float) * c.numel());
}

}  // namespace

// The VAE reconstructs from the posterior's mean, without noise.
char* ds_model_reconstruct(ds_model* m, const float* x_data, int64_t n,
                           int64_t h, int64_t w, float* out) {
  return guarded([&] {
    prepare_inference(m, h, w);
    torch::NoGradGuard no_grad;
    auto code = encode(*m, input_tensor(x_data, n, h, w, m->device)).first;
    copy_out(m->gen->forward(code).clamp(-1, 1), out);
  });
}

char* ds_model_encode(ds_model* m, const float* x_data, int64_t n, int64_t h,
                      int64_t w, float* out) {
  return guarded([&] {
    prepare_inference(m, h, w);
    torch::NoGradGuard no_grad;
    copy_out(encode(*m, input_tensor(x_data, n, h, w, m->device)).first, out);
  });
}

char* ds_model_decode(ds_model* m, const float* z_data, int64_t n, int64_t zh,
                      int64_t zw, float* out) {
  return guarded([&] {
    prepare_inference(m, 0, 0);  // decode takes codes, not images
    if (n < 1 || zh < 1 || zw < 1) throw std::invalid_argument("decode: empty code");
    torch::NoGradGuard no_grad;
    auto z = torch::from_blob(const_cast<float*>(z_data),
                              {n, m->cfg.code_channels, zh, zw}, torch::kFloat32)
                 .to(m->device);
    copy_out(m->gen->forward(z).clamp(-1, 1), out);
  });
}

char* ds_model_save(ds_model* m, int64_t step, char** buf, int64_t* len) {
  *buf = nullptr;
  *len = 0;
  return guarded([&] {
    TensorDict dict;
    for (const auto& [name, t] : g_params(*m)) dict.insert(name, t.detach().cpu());
    for (const auto& [name, t] : d_params(*m)) dict.insert(name, t.detach().cpu());
    put_adam(dict, "optim_g.", *m->opt_g, g_params(*m));
    if (m->opt_d) put_adam(dict, "optim_d.", *m->opt_d, d_params(*m));
    dict.insert("meta.step", torch::tensor(step, torch::kInt64));
    dict.insert("meta.train_d", torch::tensor(int64_t{m->train_d}, torch::kInt64));
    dict.insert("meta.train_g", torch::tensor(int64_t{m->train_g}, torch::kInt64));
    if (m->cfg.task == DS_TASK_VAE) dict.insert("meta.noise_rng", m->noise.get_state());
    to_malloc(torch::pickle_save(dict), buf, len);
  });
}

char* ds_model_load(ds_model* m, const char* buf, int64_t len, int64_t* step) {
  return guarded([&] {
    // A failed load may leave the model half-loaded: callers discard it.
    auto dict = dict_from_bytes(std::vector<char>(buf, buf + len));
    load_params(dict, g_params(*m));
    load_params(dict, d_params(*m));
    load_adam(dict, "optim_g.", *m->opt_g, g_params(*m), m->device);
    if (m->opt_d) load_adam(dict, "optim_d.", *m->opt_d, d_params(*m), m->device);
    m->train_d = lookup(dict, "meta.train_d").item<int64_t>() != 0;
    m->train_g = lookup(dict, "meta.train_g").item<int64_t>() != 0;
    if (m->cfg.task == DS_TASK_VAE) m->noise.set_state(lookup(dict, "meta.noise_rng"));
    *step = lookup(dict, "meta.step").item<int64_t>();
  });
}

char* ds_model_export_comparator(ds_model* m, char** buf, int64_t* len) {
  *buf = nullptr;
  *len = 0;
  return guarded([&] {
    if (m->cfg.task != DS_TASK_COMPARATOR)
      throw std::invalid_argument("only a comparator run exports a comparator");
    TensorDict dict;
    for (const auto& p : m->net->features->named_parameters())
      dict.insert("features." + p.key(), p.value().detach().cpu());
    to_malloc(torch::pickle_save(dict), buf, len);
  });
}

int64_t ds_model_num_params(ds_model* m) {
  int64_t n = 0;
  for (const auto& p : g_params(*m)) n += p.second.numel();
  for (const auto& p : d_params(*m)) n += p.second.numel();
  return n;
}

void ds_set_num_threads(int32_t n) {
  if (n > 0) torch::set_num_threads(n);
}

void ds_free(void* p) { std::free(p); }

}  // extern "C"
