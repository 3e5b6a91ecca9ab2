// Compiled as part of engine.cpp, not on its own (see there).
// The trained networks of a run: each task builds its networks and names
// its train step once; then inference and checkpoints.
#include <ATen/autocast_mode.h>
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <optional>
#include <stdexcept>

#include "engine.h"

namespace deepsim {
namespace {

namespace F = torch::nn::functional;

// Discriminator balancing, with r = L_discr / L_adv after each step: D stops
// learning when it wins too easily and resumes once it no longer does; G
// stops while D is hopelessly behind. The first threshold is the paper's,
// the others come from the authors' released code.
constexpr double kStopD = 0.1;
constexpr double kResumeD = 0.5;
constexpr double kFreezeG = 10;

// The dropout generator's seed is the run's plus this, so that its stream
// differs from the VAE noise's, which starts from the run's seed.
constexpr uint64_t kDropoutSeed = 0x9e3779b97f4a7c15;

// The log-variance is clamped so that exp() can neither overflow nor
// vanish while the KL weight is still warming up.
constexpr double kMinLogVar = -30, kMaxLogVar = 20;

void set_requires_grad(torch::nn::Module& mod, bool on) {
  for (auto& p : mod.parameters()) p.requires_grad_(on);
}

std::vector<torch::Tensor> tensors(const Named& n) {
  std::vector<torch::Tensor> out;
  for (const auto& p : n) out.push_back(p.second);
  return out;
}

// The parameters each optimizer owns, by checkpoint name.
Named g_params(ds_model& m) {
  if (m.net) return named("", *m.net);
  if (m.inv) return named("generator.", *m.inv);
  auto out = named("encoder.", *m.enc);
  auto g = named("generator.", *m.gen);
  out.insert(out.end(), g.begin(), g.end());
  return out;
}

// The moving average's tensors, by checkpoint name ("ema." and G's).
Named ema_params(ds_model& m) {
  Named out;
  if (m.ema.empty()) return out;
  auto g = g_params(m);
  for (size_t i = 0; i < g.size(); i++) out.emplace_back("ema." + g[i].first, m.ema[i]);
  return out;
}

Named d_params(ds_model& m) {
  if (m.cdisc) return named("discriminator.", *m.cdisc);
  if (!m.disc) return {};
  return named("discriminator.", *m.disc);
}

// In a group, the gradients of opt's parameters become the global
// batch's: each process's gradient (of a mean over its rows), weighted by
// its share of the rows and summed over the group. Averaging the ranks'
// means instead would be wrong whenever the batch does not divide evenly.
void reduce_grads(ds_model& m, const char* what, torch::optim::Optimizer& opt) {
  if (!m.group) return;
  std::vector<torch::Tensor> grads;
  for (const auto& group : opt.param_groups())
    for (const auto& p : group.params()) grads.push_back(p.grad());
  allreduce_grads(*m.group, what, grads, m.share);
}

// Runs the forward passes of its scope in bfloat16 where autocast's
// policy allows (convolutions, matrix products) when on; weights,
// optimizer state, losses and the backward passes stay float32.
class Autocast {
 public:
  explicit Autocast(bool on) : on_(on) {
    if (!on_) return;
    prev_enabled_ = at::autocast::is_cpu_enabled();
    prev_dtype_ = at::autocast::get_autocast_cpu_dtype();
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(true);
    at::autocast::increment_nesting();
  }
  ~Autocast() {
    if (!on_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_cpu_enabled(prev_enabled_);
    at::autocast::set_autocast_cpu_dtype(prev_dtype_);
  }
  Autocast(const Autocast&) = delete;
  Autocast& operator=(const Autocast&) = delete;

 private:
  bool on_, prev_enabled_ = false;
  at::ScalarType prev_dtype_ = at::kBFloat16;
};

bool bf16(const ds_model& m) { return m.cfg.precision == DS_PRECISION_BF16; }

// The type of the trained networks' weights and activations.
torch::Dtype dtype(const ds_model& m) {
  return m.cfg.precision == DS_PRECISION_FLOAT64 ? torch::kFloat64 : torch::kFloat32;
}

// n images from Go memory, in the model's type.
torch::Tensor images(const ds_model& m, const float* x, int64_t n, int64_t h, int64_t w) {
  return input_tensor(x, n, h, w, m.device).to(dtype(m));
}

// A fixed network's features of x, in x's type: the comparator and the
// target compute in float32.
std::vector<torch::Tensor> features_of(Comparator& c, const torch::Tensor& x) {
  auto f = checked_features(c, x.to(torch::kFloat32));
  for (auto& t : f) t = t.to(x.scalar_type());
  return f;
}

// A step must never leave non-finite weights behind: it stops with an
// error instead, so that the run fails and saves nothing.
void check_finite_loss(const char* what, const torch::Tensor& loss) {
  const double v = loss.item<double>();
  if (!std::isfinite(v))
    throw std::runtime_error(std::string("training diverged: the ") + what + " is " +
                             std::to_string(v));
}

// One pass over the weights and one read of a number: the sum of their
// norms is finite exactly when every weight is (a finite weight's norm
// would overflow only beyond 1e19). Only a failed check looks for the name.
void check_finite_params(const Named& params) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> ts;
  for (const auto& p : params) ts.push_back(p.second);
  if (std::isfinite(torch::stack(at::_foreach_norm(ts, 2)).sum().item<double>())) return;
  for (const auto& [name, t] : params)
    if (!torch::isfinite(t).all().item<bool>())
      throw std::runtime_error("training diverged: parameter \"" + name +
                               "\" is not finite after the step");
  throw std::runtime_error("training diverged: the weights' norm is not finite after the step");
}

// One optimizer step on loss over params(m): a loss that diverged never
// reaches the weights, and a step that leaves a weight non-finite fails.
// In a group the gradients are the global batch's.
void learn(ds_model& m, const torch::Tensor& loss, const char* loss_name,
           const char* grads_name, torch::optim::Adam& opt, Named (*params)(ds_model&)) {
  check_finite_loss(loss_name, loss);
  opt.zero_grad();
  loss.backward();
  reduce_grads(m, grads_name, opt);
  opt.step();
  check_finite_params(params(m));
}

// The moving average of G's (and E's) weights after one of G's steps. Its
// decay ramps up as (1 + t) / (10 + t) over the first updates t, as in
// TensorFlow's ExponentialMovingAverage, so that the initial weights do not
// linger in a short run.
void update_ema(ds_model& m) {
  if (m.ema.empty()) return;
  torch::NoGradGuard no_grad;
  const double t = static_cast<double>(m.ema_updates++);
  const double d = std::min(m.cfg.ema, (1 + t) / (10 + t));
  at::_foreach_mul_(m.ema, d);
  at::_foreach_add_(m.ema, tensors(g_params(m)), 1 - d);
}

// For its scope, G and E hold the averaged weights where the run keeps
// them: inference uses those. Swapping the tensors' data copies nothing.
class AveragedWeights {
 public:
  explicit AveragedWeights(ds_model& m) : m_(m) { swap(); }
  ~AveragedWeights() { swap(); }
  AveragedWeights(const AveragedWeights&) = delete;
  AveragedWeights& operator=(const AveragedWeights&) = delete;

 private:
  void swap() {
    if (m_.ema.empty()) return;
    torch::NoGradGuard no_grad;
    auto params = g_params(m_);
    for (size_t i = 0; i < params.size(); i++) {
      auto live = params[i].second.data();
      params[i].second.set_data(m_.ema[i]);
      m_.ema[i] = live;
    }
  }
  ds_model& m_;
};

// Appends a named value to what a step logs.
void log_term(ds_step_log* out, const char* name, double value) {
  if (out->n_terms >= DS_MAX_TERMS) throw std::logic_error("a step logs too many terms");
  auto& t = out->terms[out->n_terms++];
  std::snprintf(t.name, DS_NAME_LEN, "%s", name);
  t.value = value;
}

// The value a step logged under name.
double term(const ds_step_log& out, const char* name) {
  for (int32_t i = 0; i < out.n_terms; i++)
    if (std::strncmp(out.terms[i].name, name, DS_NAME_LEN) == 0) return out.terms[i].value;
  throw std::logic_error(std::string("the step logged no ") + name);
}

// The memory format of the trained convolutions and their inputs.
// oneDNN's convolutions run faster on channels-last on some machines and
// on NCHW on others. Adam's state follows the parameters' format;
// checkpoints are written contiguous all the same.
torch::MemoryFormat layout(const ds_model& m) {
  return m.cfg.layout == DS_LAYOUT_NCHW ? torch::MemoryFormat::Contiguous
                                        : torch::MemoryFormat::ChannelsLast;
}

void to_layout(const ds_model& m, torch::nn::Module& mod) {
  torch::NoGradGuard no_grad;
  for (auto& p : mod.parameters())
    if (p.dim() == 4) p.set_data(p.data().contiguous(layout(m)));
}

std::unique_ptr<torch::optim::Adam> adam(const ds_config& cfg,
                                         std::vector<torch::Tensor> params, double lr) {
  return std::make_unique<torch::optim::Adam>(
      params, torch::optim::AdamOptions(lr)
                  .betas({cfg.beta1, cfg.beta2})
                  .weight_decay(cfg.weight_decay));
}

// D's learning rate: its own where the config gives one (a D that learns
// faster than G, as in TTUR), else G's.
double d_lr(const ds_config& cfg) { return cfg.lr_d > 0 ? cfg.lr_d : cfg.lr; }

// The code of x: for the VAE the posterior's mean and log-variance, for the
// autoencoder the code itself and an undefined log-variance.
std::pair<torch::Tensor, torch::Tensor> encode_x(ds_model& m, const torch::Tensor& x) {
  auto h = m.enc->forward(x);
  if (m.cfg.task != DS_TASK_VAE) return {h, torch::Tensor()};
  auto parts = h.chunk(2, 1);
  return {parts[0], parts[1].clamp(kMinLogVar, kMaxLogVar)};
}

// ---- the DeePSiM loss, shared by the generators ----

// What a task's generator made of a batch x: the output, the loss before
// the DeePSiM terms (the VAE's weighted KL), the KL itself, and for an
// inversion the features that D also sees.
struct Generated {
  torch::Tensor y, loss, kl, cond;
};

// D's logits for real images and for fake ones, in one pass.
std::pair<torch::Tensor, torch::Tensor> judge_pair(ds_model& m, const torch::Tensor& real,
                                                   const torch::Tensor& fake,
                                                   const torch::Tensor& cond) {
  return m.cdisc ? m.cdisc->forward_pair(real, fake, cond) : m.disc->forward_pair(real, fake);
}

// D's logits for img and the activations of its convolutions on the way.
std::pair<torch::Tensor, std::vector<torch::Tensor>> judge_features(ds_model& m,
                                                                    const torch::Tensor& img,
                                                                    const torch::Tensor& cond) {
  return m.cdisc ? m.cdisc->forward_features(img, cond) : m.disc->forward_features(img);
}

// D's convolutions alone, which need no logits and draw no dropout.
torch::nn::Sequential& d_trunk(ds_model& m) {
  return m.cdisc ? m.cdisc->features : m.disc->features;
}

torch::nn::Module& discriminator(ds_model& m) {
  if (m.cdisc) return *m.cdisc;
  return *m.disc;
}

// The weight of G's output convolution, where the adaptive adversarial
// weight compares the two losses' gradients.
torch::Tensor output_weight(ds_model& m) {
  auto& body = m.inv ? m.inv->body : m.gen->body;
  return body->ptr(body->size() - 1)->named_parameters(false)["weight"];
}

// VQGAN's adaptive adversarial weight (Esser et al., 2021): w_adv times
// ||grad L_rec|| / ||grad L_adv|| at G's output layer, so that the
// adversarial term pulls on G as hard as the reconstruction does, whatever
// the terms' scales. In a group the gradients are the global batch's.
// Each term is taken back to G's output y once: the output layer's
// gradients follow from those, and so does G's whole step (Adaptive::gy),
// so the comparator's and D's backward passes do not run twice.
struct Adaptive {
  double weight;
  torch::Tensor gy;  // d(rec + weight * adv) / dy
};

Adaptive adaptive_weight(ds_model& m, double w_adv, const torch::Tensor& y,
                         const torch::Tensor& rec, const torch::Tensor& adv) {
  auto gy_rec = torch::autograd::grad({rec}, {y}, {}, /*retain_graph=*/true)[0];
  auto gy_adv = torch::autograd::grad({adv}, {y}, {}, /*retain_graph=*/true)[0];
  auto last = output_weight(m);
  auto g_rec = torch::autograd::grad({y}, {last}, {gy_rec}, /*retain_graph=*/true)[0];
  auto g_adv = torch::autograd::grad({y}, {last}, {gy_adv}, /*retain_graph=*/true)[0];
  auto both = torch::cat({g_rec.flatten(), g_adv.flatten()}).to(torch::kFloat64).contiguous();
  if (m.group) {
    std::vector<double> v(both.data_ptr<double>(), both.data_ptr<double>() + both.numel());
    allreduce_values(*m.group, "adaptive weight's gradients", v, m.share);
    both = torch::tensor(v, torch::kFloat64);
  }
  const int64_t n = g_rec.numel();
  const double r = both.slice(0, 0, n).norm().item<double>(),
               a = both.slice(0, n).norm().item<double>();
  const double w = w_adv * std::clamp(r / (a + 1e-4), 0.0, 1e4);
  return {w, gy_rec + w * gy_adv};
}

// One DeePSiM step on what the generator made of x: G (and E) learn from
// the weighted loss terms, D from telling x from G's output. During D's
// warm-up D neither learns nor judges.
void deepsim_losses(ds_model& m, const torch::Tensor& x, const Generated& g,
                    const ds_step_input& in, ds_step_log* out) {
  const double w_img = m.weight("img"), w_feat = m.weight("feat"),
               w_adv = m.weight("adv"), w_match = m.weight("match");
  const bool adversarial = w_adv > 0 && !in.d_warmup;
  double adv_weight = adversarial ? w_adv : 0;
  discriminator(m).train();
  auto zero = torch::zeros({}, x.options());
  torch::Tensor l_img = zero, l_feat = zero, l_adv = zero, l_discr = zero, l_match = zero;
  torch::Tensor g_loss = g.loss, rec = zero;
  const auto& y = g.y;
  std::optional<Autocast> autocast(std::in_place, bf16(m));

  // Image and feature losses.
  if (w_img > 0) {
    l_img = F::mse_loss(y, x);
    rec = rec + w_img * l_img;
  }
  if (w_feat > 0) {
    if (!m.comp) throw std::invalid_argument("the feature loss needs a comparator");
    std::vector<torch::Tensor> target;
    {
      torch::NoGradGuard no_grad;
      target = features_of(*m.comp, x);
    }
    // With several taps, the sum of each tap's mean squared error.
    auto fy = features_of(*m.comp, y);
    l_feat = F::mse_loss(fy[0], target[0]);
    for (size_t i = 1; i < fy.size(); i++) l_feat = l_feat + F::mse_loss(fy[i], target[i]);
    rec = rec + w_feat * l_feat;
  }
  g_loss = g_loss + rec;

  // The discriminator's step, on x against G's output held fixed.
  const bool update_d = adversarial && m.train_d;
  const bool update_g = m.train_g;
  if (adversarial) {
    auto [real, fake] = judge_pair(m, x, y.detach(), g.cond);
    l_discr = F::binary_cross_entropy_with_logits(real, torch::ones_like(real)) +
              F::binary_cross_entropy_with_logits(fake, torch::zeros_like(fake));
    autocast.reset();  // backward passes run outside autocast
    if (update_d)
      learn(m, l_discr, "discriminator's loss", "discriminator's gradients", *m.opt_d, d_params);

    // The adversarial loss: G tries to make D call its output real. It must
    // not leave gradients in D.
    autocast.emplace(bf16(m));
    set_requires_grad(discriminator(m), false);
    auto [judged, fy] = judge_features(m, y, g.cond);
    set_requires_grad(discriminator(m), true);
    l_adv = F::binary_cross_entropy_with_logits(judged, torch::ones_like(judged));
    // Feature matching (pix2pixHD): the mean over D's layers of the L1
    // distance between its activations on x and on G's output, a
    // reconstruction term in the features D learns to tell them apart by.
    if (w_match > 0) {
      std::vector<torch::Tensor> fx;
      {
        torch::NoGradGuard no_grad;
        fx = activations(d_trunk(m), x);
      }
      for (size_t i = 0; i + 1 < fx.size(); i++) l_match = l_match + F::l1_loss(fy[i], fx[i]);
      l_match = l_match / static_cast<double>(fx.size() - 1);
      rec = rec + w_match * l_match;
      g_loss = g_loss + w_match * l_match;
    }
    autocast.reset();
    // Adaptive: the weight of a step where G does not learn is moot, and
    // logged as 0.
    if (m.cfg.adv_adaptive && update_g && rec.requires_grad()) {
      check_finite_loss("generator's weighted loss", g_loss + l_adv);
      auto a = adaptive_weight(m, w_adv, y, rec, l_adv);
      adv_weight = a.weight;
      // The same gradients as g_loss + weight * l_adv, from y down.
      g_loss = g.loss + (y * a.gy.detach()).sum();
    } else if (m.cfg.adv_adaptive) {
      adv_weight = 0;
    } else {
      g_loss = g_loss + adv_weight * l_adv;
    }
  }
  autocast.reset();

  // The generator's step.
  if (update_g && g_loss.requires_grad()) {
    learn(m, g_loss, "generator's weighted loss", "generator's gradients", *m.opt_g, g_params);
    update_ema(m);
  }

  // What the step logs, by name.
  std::vector<std::pair<const char*, torch::Tensor>> logged = {
      {"loss_feat", l_feat}, {"loss_adv", l_adv}, {"loss_img", l_img}, {"loss_discr", l_discr}};
  // Feature matching only where the run has it: the report plots each term
  // the step logs, and metrics lines hold 0 for the rest.
  if (w_match > 0) logged.push_back({"loss_match", l_match});
  if (m.cfg.task == DS_TASK_VAE) logged.push_back({"kl", g.kl});
  std::vector<double> values;
  for (const auto& [name, t] : logged) values.push_back(t.item<double>());
  // In a group the logged terms are the global batch's, so that balancing
  // takes the same branch on every rank; a stop asked by any rank is
  // everyone's.
  bool stop = m.stop_asked;
  if (m.group) {
    values.push_back(m.stop_asked);
    allreduce_values(*m.group, "logged losses", values, m.share);
    stop = values.back() > 0;
    values.pop_back();
  }
  for (size_t i = 0; i < logged.size(); i++) log_term(out, logged[i].first, values[i]);
  if (m.cfg.adv_adaptive) log_term(out, "adv_weight", adv_weight);
  out->updated_g = update_g;
  out->updated_d = update_d;
  out->stop = stop;

  // Balancing decides the next step's updates from this step's losses.
  if (adversarial) {
    const double r = term(*out, "loss_discr") / std::max(term(*out, "loss_adv"), 1e-12);
    if (m.train_d && r < kStopD) m.train_d = false;
    else if (!m.train_d && r > kResumeD) m.train_d = true;
    m.train_g = !(r > kFreezeG);
  }
}

// ---- the autoencoder and the VAE ----

// x through E and G. The VAE samples its code with the reparameterisation
// z = mu + sigma * eps, which keeps z differentiable, and pays
// KL(N(mu, sigma^2) || N(0, I)), summed over the latent, mean per image.
Generated autoencode(ds_model& m, const torch::Tensor& x, const ds_step_input& in) {
  m.enc->train();
  m.gen->train();
  auto zero = torch::zeros({}, x.options());
  Generated g{torch::Tensor(), zero, zero, torch::Tensor()};
  auto [code, logvar] = encode_x(m, x);
  if (m.cfg.task == DS_TASK_VAE) {
    // Drawn for the whole global batch, then this process's rows of it.
    auto shape = code.sizes().vec();
    shape[0] = m.rows->global;
    auto eps = torch::randn(shape, m.noise, torch::kFloat32)
                   .slice(0, m.rows->offset, m.rows->offset + code.size(0))
                   .to(code.device(), dtype(m));
    auto mu = code;
    code = mu + torch::exp(0.5 * logvar) * eps;
    // In the weights' type even under autocast: a sum over the whole latent.
    auto mu_w = mu.to(dtype(m)), lv_w = logvar.to(dtype(m));
    g.kl = 0.5 * (mu_w.pow(2) + lv_w.exp() - 1 - lv_w).sum() / x.size(0);
    if (in.kl_weight > 0) g.loss = g.loss + in.kl_weight * g.kl;
  }
  g.y = m.gen->forward(code);
  return g;
}

void autoencoder_step(ds_model& m, const torch::Tensor& x, const ds_step_input& in,
                      ds_step_log* out) {
  Generated g;
  {
    Autocast autocast(bf16(m));
    g = autoencode(m, x, in);
  }
  deepsim_losses(m, x, g, in, out);
}

void build_deepsim(ds_model& m, std::shared_ptr<Comparator> comp) {
  const auto& cfg = m.cfg;
  const int64_t s = cfg.size;
  if (cfg.upsample != DS_UPSAMPLE_DECONV && cfg.upsample != DS_UPSAMPLE_RESIZE)
    throw std::invalid_argument("unknown upsampling " + std::to_string(cfg.upsample));
  const bool vae = cfg.task == DS_TASK_VAE;
  m.comp = std::move(comp);
  m.enc = Encoder(s, vae ? 2 * cfg.code_channels : cfg.code_channels);
  m.gen = Generator(s, cfg.code_channels, static_cast<Upsample>(cfg.upsample));
  m.noise.set_current_seed(static_cast<uint64_t>(cfg.seed));
  m.disc = Discriminator(s, m.rows, cfg.patch_discriminator != 0);
  m.enc->to(m.device, dtype(m));
  m.gen->to(m.device, dtype(m));
  m.disc->to(m.device, dtype(m));
  to_layout(m, *m.enc);
  to_layout(m, *m.gen);
  to_layout(m, *m.disc);
  m.opt_d = adam(cfg, m.disc->parameters(), d_lr(cfg));
  m.step = autoencoder_step;
}

// ---- inversion: G reconstructs images from a fixed network's features ----

// The target's features of x: fixed, so without autograd. Vectors (fully
// connected layers) come as n x D x 1 x 1, like a 1 x 1 map.
torch::Tensor target_features(ds_model& m, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  auto f = features_of(*m.target, x)[0];
  return f.dim() == 2 ? f.view({f.size(0), f.size(1), 1, 1}) : f;
}

void inversion_step(ds_model& m, const torch::Tensor& x, const ds_step_input& in,
                    ds_step_log* out) {
  m.inv->train();
  auto f = target_features(m, x);
  auto zero = torch::zeros({}, x.options());
  Generated g{torch::Tensor(), zero, zero, f};
  {
    Autocast autocast(bf16(m));
    g.y = m.inv->forward(f);
  }
  deepsim_losses(m, x, g, in, out);
}

void build_inversion(ds_model& m, std::shared_ptr<Comparator> comp,
                     std::shared_ptr<Comparator> target) {
  const auto& cfg = m.cfg;
  if (!target) throw std::invalid_argument("an inversion needs a target network");
  if (cfg.upsample != DS_UPSAMPLE_DECONV && cfg.upsample != DS_UPSAMPLE_RESIZE)
    throw std::invalid_argument("unknown upsampling " + std::to_string(cfg.upsample));
  m.comp = std::move(comp);
  m.target = std::move(target);
  // The features' shape, from an image of the training size.
  std::vector<torch::Tensor> taps;
  {
    torch::NoGradGuard no_grad;
    taps = checked_features(*m.target, torch::zeros({1, 3, cfg.size, cfg.size}).to(m.device));
  }
  if (taps.size() != 1)
    throw std::invalid_argument("an inversion inverts one layer of its target, not " +
                                std::to_string(taps.size()));
  auto f = taps[0];
  if (f.dim() == 2) f = f.view({1, f.size(1), 1, 1});
  if (f.dim() != 4)
    throw std::invalid_argument("the target's features have " + std::to_string(f.dim()) +
                                " dimensions");
  m.feature_shape = {f.size(1), f.size(2), f.size(3)};
  torch::manual_seed(cfg.seed);
  m.inv = InversionGenerator(f.size(1), f.size(2), f.size(3), cfg.size,
                             static_cast<Upsample>(cfg.upsample));
  m.cdisc = ConditionalDiscriminator(cfg.size, f.size(1), f.size(2), f.size(3), m.rows);
  m.inv->to(m.device, dtype(m));
  m.cdisc->to(m.device, dtype(m));
  to_layout(m, *m.inv);
  to_layout(m, *m.cdisc);
  m.opt_d = adam(cfg, m.cdisc->parameters(), d_lr(cfg));
  m.step = inversion_step;
}

// ---- the comparator task: an Exemplar-CNN on surrogate classes ----

// Cross-entropy and accuracy of the surrogate-class head; one optimizer
// step when train.
void classify(ds_model& m, const torch::Tensor& x, const ds_step_input& in,
              bool train, ds_step_log* out) {
  if (!in.labels) throw std::invalid_argument("the comparator task needs labels");
  auto y = torch::from_blob(const_cast<int64_t*>(in.labels), {in.n}, torch::kInt64)
               .to(m.device);
  if (y.min().item<int64_t>() < 0 || y.max().item<int64_t>() >= m.cfg.classes)
    throw std::invalid_argument("label outside [0, classes)");
  train ? m.net->train() : m.net->eval();
  torch::Tensor logits, loss;
  {
    std::optional<torch::NoGradGuard> no_grad;
    if (!train) no_grad.emplace();
    logits = m.net->forward(x);
    loss = F::cross_entropy(logits, y);
  }
  if (train) learn(m, loss, "classifier's loss", "classifier's gradients", *m.opt_g, g_params);
  *out = ds_step_log{};
  log_term(out, "loss_class", loss.item<double>());
  log_term(out, "train_acc", logits.argmax(1).eq(y).to(torch::kFloat64).mean().item<double>());
  out->updated_g = train;
  out->stop = m.stop_asked;
}

void classify_step(ds_model& m, const torch::Tensor& x, const ds_step_input& in,
                   ds_step_log* out) {
  classify(m, x, in, true, out);
}

void build_classifier(ds_model& m) {
  if (m.cfg.classes < 2)
    throw std::invalid_argument("the comparator task needs at least 2 classes");
  m.net = exemplar(m.cfg.classes);
  msra_init(*m.net);
  m.net->cut(11, 4);  // through the surrogate-class logits
  m.net->to(m.device, dtype(m));
  m.step = classify_step;
}

// By default glibc serves blocks above its mmap threshold (128 KiB at
// first; activations are megabytes) with mmap and unmaps them on free, and
// trims the heap's top after each large free, so a step faulted much of
// its activations' memory in anew: measured, a quarter of the step
// (README, Performance). Freed activations stay in the heap for the next
// step instead; trim_now_and_then keeps the resident set flat. Setting
// these again for another model changes nothing.
void keep_freed_activations() {
  mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's largest on 64-bit
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
}

// glibc keeps the memory of freed activations in fragmented arenas and the
// resident set creeps up step after step; handing free pages back now and
// then keeps it flat. Not often: the steps after a trim fault those pages
// in again (every 16 steps, half the page faults of a 200-step run and 5%
// of its speed).
void trim_now_and_then(ds_model& m) {
  if (++m.steps_since_trim >= 256) {
    malloc_trim(0);
    m.steps_since_trim = 0;
  }
}

// Puts E and G in eval mode after checking that the run has them and that
// h and w are multiples of the encoder's downsampling factor.
void prepare_inference(ds_model& m, int64_t h, int64_t w) {
  if (!m.gen) throw std::invalid_argument("this run has no decoder to reconstruct with");
  const int64_t f = int64_t{1} << stages_for(m.cfg.size);
  if (h % f != 0 || w % f != 0)
    throw std::invalid_argument(std::to_string(h) + "x" + std::to_string(w) +
                                " is not a multiple of " + std::to_string(f));
  m.enc->eval();
  m.gen->eval();
}

}  // namespace

ds_model* new_model(const ds_config& cfg, ds_comparator* comp, ds_comparator* target) {
  const int64_t s = cfg.size;
  if (s < 16 || s % 8 != 0 || ((s / 8) & (s / 8 - 1)) != 0)
    throw std::invalid_argument("size " + std::to_string(s) +
                                " must be 8 times a power of two, >= 16");
  if (cfg.n_weights < 0 || cfg.n_weights > DS_MAX_TERMS)
    throw std::invalid_argument("too many loss weights");
  if (cfg.layout != DS_LAYOUT_CHANNELS_LAST && cfg.layout != DS_LAYOUT_NCHW)
    throw std::invalid_argument("unknown layout " + std::to_string(cfg.layout));
  if (std::isnan(cfg.ema) || cfg.ema < 0 || cfg.ema >= 1)
    throw std::invalid_argument("ema " + std::to_string(cfg.ema) + " is not in [0, 1)");
  if (cfg.ema > 0 && cfg.task == DS_TASK_COMPARATOR)
    throw std::invalid_argument("a moving average of weights is for generators");
  keep_freed_activations();
  auto m = std::make_unique<ds_model>();
  m->cfg = cfg;
  m->device = best_device();
  torch::manual_seed(cfg.seed);
  m->rows->rng.set_current_seed(static_cast<uint64_t>(cfg.seed) + kDropoutSeed);
  switch (cfg.task) {
    case DS_TASK_AUTOENCODER:
    case DS_TASK_VAE:
      build_deepsim(*m, comp ? comp->c : nullptr);
      break;
    case DS_TASK_COMPARATOR:
      build_classifier(*m);
      break;
    case DS_TASK_INVERSION:
      build_inversion(*m, comp ? comp->c : nullptr, target ? target->c : nullptr);
      break;
    default:
      throw std::invalid_argument("unknown task " + std::to_string(cfg.task));
  }
  m->opt_g = adam(cfg, tensors(g_params(*m)), cfg.lr);
  if (cfg.ema > 0) {
    torch::NoGradGuard no_grad;
    for (const auto& p : g_params(*m)) m->ema.push_back(p.second.detach().clone());
  }
  return m.release();
}

void free_model(ds_model* m) { delete m; }

// Sets each optimiser's rate to its configured one times scale (0: 1),
// which the caller's schedule gives for this step.
void set_learning_rates(ds_model& m, double scale) {
  if (scale == 0) scale = 1;
  if (!(scale > 0 && scale <= 1))
    throw std::invalid_argument("learning-rate scale " + std::to_string(scale) +
                                " is not in (0, 1]");
  auto set = [scale](torch::optim::Adam* opt, double lr) {
    if (!opt) return;
    for (auto& group : opt->param_groups())
      static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr * scale);
  };
  set(m.opt_g.get(), m.cfg.lr);
  set(m.opt_d.get(), d_lr(m.cfg));
}

void train_step(ds_model& m, const ds_step_input& in, ds_step_log* out) {
  const int64_t global = in.global_n > 0 ? in.global_n : in.n;
  if (in.n < 1 || in.offset < 0 || in.offset + in.n > global)
    throw std::invalid_argument("rows [" + std::to_string(in.offset) + ", " +
                                std::to_string(in.offset + in.n) + ") are not in a batch of " +
                                std::to_string(global));
  m.rows->offset = in.offset;
  m.rows->global = global;
  m.share = static_cast<double>(in.n) / global;
  m.stop_asked = in.stop != 0;
  set_learning_rates(m, in.lr_scale);
  auto x = images(m, in.x, in.n, m.cfg.size, m.cfg.size).contiguous(layout(m));
  *out = ds_step_log{};
  m.step(m, x, in, out);
  trim_now_and_then(m);
}

void evaluate(ds_model& m, const ds_step_input& in, ds_step_log* out) {
  if (!m.net) throw std::invalid_argument("evaluate is for the comparator task");
  classify(m, images(m, in.x, in.n, m.cfg.size, m.cfg.size), in, false, out);
}

// The VAE reconstructs from the posterior's mean, without noise; an
// inversion from the target's features of x.
void reconstruct(ds_model& m, const float* x, int64_t n, int64_t h, int64_t w,
                 float* out) {
  if (m.inv) {
    if (h != m.cfg.size || w != m.cfg.size)
      throw std::invalid_argument("an inversion reconstructs " + std::to_string(m.cfg.size) +
                                  "x" + std::to_string(m.cfg.size) + " images, not " +
                                  std::to_string(h) + "x" + std::to_string(w));
    m.inv->eval();
    torch::NoGradGuard no_grad;
    AveragedWeights averaged(m);
    auto f = target_features(m, images(m, x, n, h, w));
    copy_out(m.inv->forward(f).clamp(-1, 1), out);
    return;
  }
  prepare_inference(m, h, w);
  torch::NoGradGuard no_grad;
  AveragedWeights averaged(m);
  auto code = encode_x(m, images(m, x, n, h, w)).first;
  copy_out(m.gen->forward(code).clamp(-1, 1), out);
}

void encode(ds_model& m, const float* x, int64_t n, int64_t h, int64_t w,
            float* out) {
  prepare_inference(m, h, w);
  torch::NoGradGuard no_grad;
  AveragedWeights averaged(m);
  copy_out(encode_x(m, images(m, x, n, h, w)).first, out);
}

void decode(ds_model& m, const float* z_data, int64_t n, int64_t zh, int64_t zw,
            float* out) {
  prepare_inference(m, 0, 0);  // decode takes codes, not images
  if (n < 1 || zh < 1 || zw < 1) throw std::invalid_argument("decode: empty code");
  torch::NoGradGuard no_grad;
  auto z = torch::from_blob(const_cast<float*>(z_data),
                            {n, m.cfg.code_channels, zh, zw}, torch::kFloat32)
               .to(m.device, dtype(m));
  AveragedWeights averaged(m);
  copy_out(m.gen->forward(z).clamp(-1, 1), out);
}

void feature_shape(ds_model& m, int64_t shape[3]) {
  if (!m.inv) throw std::invalid_argument("only an inversion run inverts features");
  for (int i = 0; i < 3; i++) shape[i] = m.feature_shape[i];
}

void invert(ds_model& m, const float* f, int64_t n, float* out) {
  if (!m.inv) throw std::invalid_argument("only an inversion run inverts features");
  if (n < 1) throw std::invalid_argument("invert: no features");
  m.inv->eval();
  torch::NoGradGuard no_grad;
  const auto& s = m.feature_shape;
  auto t = torch::from_blob(const_cast<float*>(f), {n, s[0], s[1], s[2]}, torch::kFloat32)
               .to(m.device, dtype(m));
  AveragedWeights averaged(m);
  copy_out(m.inv->forward(t).clamp(-1, 1), out);
}

std::vector<char> save_model(ds_model& m, int64_t step) {
  TensorDict dict;
  for (const auto& [name, t] : g_params(m)) dict.insert(name, t.detach().cpu().contiguous());
  for (const auto& [name, t] : d_params(m)) dict.insert(name, t.detach().cpu().contiguous());
  put_adam(dict, "optim_g.", *m.opt_g, g_params(m));
  if (m.opt_d) put_adam(dict, "optim_d.", *m.opt_d, d_params(m));
  for (const auto& [name, t] : ema_params(m)) dict.insert(name, t.detach().cpu().contiguous());
  if (!m.ema.empty()) dict.insert("meta.ema_updates", torch::tensor(m.ema_updates, torch::kInt64));
  dict.insert("meta.step", torch::tensor(step, torch::kInt64));
  dict.insert("meta.train_d", torch::tensor(int64_t{m.train_d}, torch::kInt64));
  dict.insert("meta.train_g", torch::tensor(int64_t{m.train_g}, torch::kInt64));
  if (m.cfg.task == DS_TASK_VAE) dict.insert("meta.noise_rng", m.noise.get_state());
  dict.insert("meta.dropout_rng", m.rows->rng.get_state());
  return dict_to_bytes(dict);
}

// A failed load may leave the model half-loaded: callers discard it.
int64_t load_model(ds_model& m, const char* buf, int64_t len) {
  auto dict = dict_from_bytes(std::vector<char>(buf, buf + len));
  load_params(dict, g_params(m));
  load_params(dict, d_params(m));
  load_adam(dict, "optim_g.", *m.opt_g, g_params(m), m.device);
  if (m.opt_d) load_adam(dict, "optim_d.", *m.opt_d, d_params(m), m.device);
  if (!m.ema.empty()) {
    load_params(dict, ema_params(m));
    m.ema_updates = lookup(dict, "meta.ema_updates").item<int64_t>();
  }
  m.train_d = lookup(dict, "meta.train_d").item<int64_t>() != 0;
  m.train_g = lookup(dict, "meta.train_g").item<int64_t>() != 0;
  if (m.cfg.task == DS_TASK_VAE) m.noise.set_state(lookup(dict, "meta.noise_rng"));
  // Checkpoints from before the dropout generator existed lack it.
  if (dict.contains("meta.dropout_rng")) m.rows->rng.set_state(lookup(dict, "meta.dropout_rng"));
  return lookup(dict, "meta.step").item<int64_t>();
}

std::vector<char> export_comparator(ds_model& m) {
  if (!m.net) throw std::invalid_argument("only a comparator run exports a comparator");
  TensorDict dict;
  for (const auto& p : m.net->features->named_parameters())
    dict.insert("features." + p.key(), p.value().detach().cpu());
  return dict_to_bytes(dict);
}

namespace {
// The intra-op thread count asked for, 0 for libtorch's default: one per
// process, as libtorch's own.
std::atomic<int32_t> wanted_threads{0};
}  // namespace

void set_num_threads(int32_t n) {
  if (n <= 0) return;
  wanted_threads.store(n);
  sync_threads();
}

// libtorch keeps OpenMP's thread count per OS thread, fixed when a thread
// first runs an op; Go runs each call on whichever OS thread is free, so a
// count set after a thread's first op never reached it. Each call brings
// its own thread up to date.
void sync_threads() {
  thread_local int32_t applied = 0;
  const int32_t want = wanted_threads.load();
  if (want > 0 && applied != want) {
    torch::set_num_threads(want);
    applied = want;
  }
}

int32_t num_threads() {
  sync_threads();
  return torch::get_num_threads();
}

int64_t join_group(ds_model& m, ds_group& g, int64_t step) {
  if (m.net)
    throw std::invalid_argument(
        "the comparator task trains in one process; data-parallel training is for the "
        "autoencoder, the VAE and inversion");
  const bool lead = group_rank(g) == 0;
  auto state = broadcast_bytes(g, lead ? save_model(m, step) : std::vector<char>());
  if (!lead) step = load_model(m, state.data(), static_cast<int64_t>(state.size()));
  m.group = &g;
  return step;
}

int64_t num_params(ds_model& m) {
  int64_t n = 0;
  for (const auto& p : g_params(m)) n += p.second.numel();
  for (const auto& p : d_params(m)) n += p.second.numel();
  return n;
}

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
