// The DeePSiM model (E, G, D and C with their optimizers), its training step
// and checkpoint (de)serialisation, behind the C ABI of deepsim.h.
#include "deepsim.h"

#include <torch/serialize.h>
#include <torch/torch.h>

#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "nets.h"

namespace F = torch::nn::functional;
using deepsim::Comparator;

struct ds_model {
  ds_config cfg;
  torch::Device device{torch::kCPU};
  deepsim::Encoder enc{nullptr};
  deepsim::Generator gen{nullptr};
  deepsim::Discriminator disc{nullptr};
  std::unique_ptr<Comparator> comp;
  std::unique_ptr<torch::optim::Adam> opt_g, opt_d;
  // Discriminator balancing (PAPER.md): D pauses when it wins too easily and
  // G pauses when D is hopelessly behind.
  bool train_d = true;
  bool train_g = true;
  int steps_since_trim = 0;
};

namespace {

char* dup_error(const std::string& s) {
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
    return dup_error(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return dup_error(e.what());
  } catch (...) {
    return dup_error("unknown C++ exception");
  }
}

bool adversarial(const ds_model& m) { return m.cfg.lambda_adv > 0; }

std::vector<torch::Tensor> generator_params(ds_model& m) {
  auto p = m.enc->parameters();
  auto g = m.gen->parameters();
  p.insert(p.end(), g.begin(), g.end());
  return p;
}

void set_requires_grad(torch::nn::Module& mod, bool on) {
  for (auto& p : mod.parameters()) p.requires_grad_(on);
}

// Named tensors of one module, prefixed, into a state dict.
void put_module(c10::Dict<std::string, torch::Tensor>& dict,
                const std::string& prefix, const torch::nn::Module& mod) {
  for (const auto& p : mod.named_parameters())
    dict.insert(prefix + p.key(), p.value().detach().cpu());
}

// Adam moments per parameter, keyed by the parameter's name.
void put_adam(c10::Dict<std::string, torch::Tensor>& dict,
              const std::string& prefix, torch::optim::Adam& opt,
              const std::vector<std::pair<std::string, torch::Tensor>>& named) {
  for (const auto& [name, t] : named) {
    auto it = opt.state().find(c10::guts::to_string(t.unsafeGetTensorImpl()));
    if (it == opt.state().end()) continue;  // no step taken yet
    auto& s = static_cast<torch::optim::AdamParamState&>(*it->second);
    dict.insert(prefix + name + ".exp_avg", s.exp_avg().cpu());
    dict.insert(prefix + name + ".exp_avg_sq", s.exp_avg_sq().cpu());
    dict.insert(prefix + name + ".step", torch::tensor(s.step(), torch::kInt64));
  }
}

std::vector<std::pair<std::string, torch::Tensor>> named_generator_params(
    ds_model& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : m.enc->named_parameters())
    out.emplace_back("encoder." + p.key(), p.value());
  for (const auto& p : m.gen->named_parameters())
    out.emplace_back("generator." + p.key(), p.value());
  return out;
}

std::vector<std::pair<std::string, torch::Tensor>> named_disc_params(
    ds_model& m) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& p : m.disc->named_parameters())
    out.emplace_back("discriminator." + p.key(), p.value());
  return out;
}

const torch::Tensor& lookup(const c10::Dict<std::string, torch::Tensor>& dict,
                            const std::string& key) {
  auto it = dict.find(key);
  if (it == dict.end())
    throw std::runtime_error("checkpoint has no tensor \"" + key + "\"");
  return it->value();
}

void load_params(const c10::Dict<std::string, torch::Tensor>& dict,
                 const std::vector<std::pair<std::string, torch::Tensor>>& named) {
  torch::NoGradGuard no_grad;
  for (auto [name, t] : named) {
    const auto& src = lookup(dict, name);
    if (src.sizes() != t.sizes()) {
      std::ostringstream msg;
      msg << "checkpoint tensor \"" << name << "\" has shape " << src.sizes()
          << ", the network expects " << t.sizes();
      throw std::runtime_error(msg.str());
    }
    t.copy_(src);
  }
}

void load_adam(const c10::Dict<std::string, torch::Tensor>& dict,
               const std::string& prefix, torch::optim::Adam& opt,
               const std::vector<std::pair<std::string, torch::Tensor>>& named,
               torch::Device dev) {
  for (const auto& [name, t] : named) {
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

torch::Tensor input_tensor(const float* x, int64_t n, int64_t h, int64_t w,
                           torch::Device dev) {
  // from_blob does not copy: the Go buffer outlives this call's use of it.
  return torch::from_blob(const_cast<float*>(x), {n, 3, h, w}, torch::kFloat32)
      .to(dev);
}

}  // namespace

extern "C" {

char* ds_model_new(const ds_config* cfg, ds_model** out) {
  *out = nullptr;
  return guarded([&] {
    // glibc raises its mmap threshold each time a large block is freed, so
    // libtorch's per-step activations migrate into the heap arenas, which
    // fragment and grow the resident set step after step. A fixed threshold
    // keeps every large tensor in its own mapping, returned on free.
    if (cfg->task != DS_TASK_AUTOENCODER)
      throw std::invalid_argument("unknown task " + std::to_string(cfg->task));
    const int64_t s = cfg->size;
    if (s < 16 || s % 8 != 0 || ((s / 8) & (s / 8 - 1)) != 0)
      throw std::invalid_argument("size " + std::to_string(s) +
                                  " must be 8 times a power of two, >= 16");
    auto m = std::make_unique<ds_model>();
    m->cfg = *cfg;
    if (torch::cuda::is_available()) m->device = torch::Device(torch::kCUDA);

    // The comparator first, from its own seed, so that the trained networks'
    // initialisation depends only on cfg->seed.
    m->comp = std::make_unique<deepsim::AlexNetComparator>(
        cfg->comparator_size, cfg->comparator_seed);
    m->comp->to(m->device);

    torch::manual_seed(cfg->seed);
    m->enc = deepsim::Encoder(s, cfg->code_channels);
    m->gen = deepsim::Generator(s, cfg->code_channels);
    m->disc = deepsim::Discriminator(s);
    m->enc->to(m->device);
    m->gen->to(m->device);
    m->disc->to(m->device);

    auto adam = [&](std::vector<torch::Tensor> params) {
      return std::make_unique<torch::optim::Adam>(
          params, torch::optim::AdamOptions(cfg->lr)
                      .betas({cfg->beta1, cfg->beta2})
                      .weight_decay(cfg->weight_decay));
    };
    m->opt_g = adam(generator_params(*m));
    m->opt_d = adam(m->disc->parameters());
    *out = m.release();
  });
}

void ds_model_free(ds_model* m) { delete m; }

char* ds_model_train_step(ds_model* m, const float* x_data, int64_t n,
                          ds_losses* out) {
  return guarded([&] {
    const auto& c = m->cfg;
    auto x = input_tensor(x_data, n, c.size, c.size, m->device);
    m->enc->train();
    m->gen->train();
    m->disc->train();

    auto y = m->gen->forward(m->enc->forward(x));
    auto zero = torch::zeros({}, x.options());
    torch::Tensor l_img = zero, l_feat = zero, l_adv = zero, l_discr = zero;
    torch::Tensor g_loss = zero;

    if (c.lambda_img > 0) {
      l_img = F::mse_loss(y, x);
      g_loss = g_loss + c.lambda_img * l_img;
    }
    if (c.lambda_feat > 0) {
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
    out->updated_g = update_g;
    out->updated_d = update_d;

    if (adversarial(*m)) {
      const double r = out->loss_discr / std::max(out->loss_adv, 1e-12);
      if (m->train_d && r < 0.1) m->train_d = false;
      else if (!m->train_d && r > 0.5) m->train_d = true;
      m->train_g = !(r > 10);
    }
    // glibc keeps the memory of freed activations in fragmented arenas and
    // the resident set creeps up step after step; handing free pages back
    // now and then keeps it flat at a small cost.
    if (++m->steps_since_trim >= 16) {
      malloc_trim(0);
      m->steps_since_trim = 0;
    }
  });
}

char* ds_model_reconstruct(ds_model* m, const float* x_data, int64_t n,
                           int64_t h, int64_t w, float* out) {
  return guarded([&] {
    const int64_t f = int64_t{1} << deepsim::stages_for(m->cfg.size);
    if (h % f != 0 || w % f != 0)
      throw std::invalid_argument("reconstruct: " + std::to_string(h) + "x" +
                                  std::to_string(w) + " is not a multiple of " +
                                  std::to_string(f));
    torch::NoGradGuard no_grad;
    m->enc->eval();
    m->gen->eval();
    auto x = input_tensor(x_data, n, h, w, m->device);
    auto y = m->gen->forward(m->enc->forward(x)).clamp(-1, 1).contiguous().cpu();
    std::memcpy(out, y.data_ptr<float>(), sizeof(float) * y.numel());
  });
}

char* ds_model_save(ds_model* m, int64_t step, char** buf, int64_t* len) {
  *buf = nullptr;
  *len = 0;
  return guarded([&] {
    c10::Dict<std::string, torch::Tensor> dict;
    put_module(dict, "encoder.", *m->enc);
    put_module(dict, "generator.", *m->gen);
    put_module(dict, "discriminator.", *m->disc);
    put_adam(dict, "optim_g.", *m->opt_g, named_generator_params(*m));
    put_adam(dict, "optim_d.", *m->opt_d, named_disc_params(*m));
    dict.insert("meta.step", torch::tensor(step, torch::kInt64));
    dict.insert("meta.train_d", torch::tensor(int64_t{m->train_d}, torch::kInt64));
    dict.insert("meta.train_g", torch::tensor(int64_t{m->train_g}, torch::kInt64));
    std::vector<char> bytes = torch::pickle_save(dict);
    char* p = static_cast<char*>(std::malloc(bytes.size()));
    if (!p) throw std::bad_alloc();
    std::memcpy(p, bytes.data(), bytes.size());
    *buf = p;
    *len = static_cast<int64_t>(bytes.size());
  });
}

char* ds_model_load(ds_model* m, const char* buf, int64_t len, int64_t* step) {
  return guarded([&] {
    std::vector<char> bytes(buf, buf + len);
    torch::IValue v = torch::pickle_load(bytes);
    if (!v.isGenericDict())
      throw std::runtime_error("checkpoint is not a state dict");
    c10::Dict<std::string, torch::Tensor> dict;
    for (const auto& kv : v.toGenericDict()) {
      if (!kv.key().isString() || !kv.value().isTensor())
        throw std::runtime_error("checkpoint holds a non-tensor entry");
      dict.insert(kv.key().toStringRef(), kv.value().toTensor());
    }
    // A failed load may leave the model half-loaded: callers discard it.
    load_params(dict, named_generator_params(*m));
    load_params(dict, named_disc_params(*m));
    m->opt_g->state().clear();
    m->opt_d->state().clear();
    load_adam(dict, "optim_g.", *m->opt_g, named_generator_params(*m), m->device);
    load_adam(dict, "optim_d.", *m->opt_d, named_disc_params(*m), m->device);
    m->train_d = lookup(dict, "meta.train_d").item<int64_t>() != 0;
    m->train_g = lookup(dict, "meta.train_g").item<int64_t>() != 0;
    *step = lookup(dict, "meta.step").item<int64_t>();
  });
}

int64_t ds_model_num_params(ds_model* m) {
  int64_t n = 0;
  for (const auto& p : generator_params(*m)) n += p.numel();
  for (const auto& p : m->disc->parameters()) n += p.numel();
  return n;
}

void ds_set_num_threads(int32_t n) {
  if (n > 0) torch::set_num_threads(n);
}

void ds_free(void* p) { std::free(p); }

}  // extern "C"
