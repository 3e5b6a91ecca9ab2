// Compiled as part of engine.cpp, not on its own (see there).
// The one update of a training step: the backward passes, the all-reduce
// of a group's gradients and logged terms, the optimisers' steps, the
// moving average of G's weights, the adaptive adversarial weight, and
// discriminator balancing. The losses come from losses.hpp, by way of a
// task (tasks.hpp).
#include <algorithm>
#include <cmath>
#include <functional>
#include <stdexcept>

#include "engine.h"

namespace deepsim {
namespace {

// Discriminator balancing, with r = L_discr / L_adv after each step: D stops
// learning when it wins too easily and resumes once it no longer does; G
// stops while D is hopelessly behind. The first threshold is the paper's,
// the others come from the authors' released code.
constexpr double kStopD = 0.1;
constexpr double kResumeD = 0.5;
constexpr double kFreezeG = 10;

std::vector<torch::Tensor> tensors(const Named& n) {
  std::vector<torch::Tensor> out;
  for (const auto& p : n) out.push_back(p.second);
  return out;
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
  if (std::isfinite(torch::stack(at::_foreach_norm(tensors(params), 2)).sum().item<double>()))
    return;
  for (const auto& [name, t] : params)
    if (!torch::isfinite(t).all().item<bool>())
      throw std::runtime_error("training diverged: parameter \"" + name +
                               "\" is not finite after the step");
  throw std::runtime_error("training diverged: the weights' norm is not finite after the step");
}

// One optimizer step on loss over params: a loss that diverged never
// reaches the weights, and a step that leaves a weight non-finite fails.
// In a group the gradients are the global batch's.
void learn(ds_model& m, const torch::Tensor& loss, const char* loss_name,
           const char* grads_name, torch::optim::Adam& opt, const Named& params) {
  check_finite_loss(loss_name, loss);
  opt.zero_grad();
  loss.backward();
  reduce_grads(m, grads_name, opt);
  opt.step();
  check_finite_params(params);
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
  at::_foreach_add_(m.ema, tensors(m.task->g_params()), 1 - d);
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
    auto params = m_.task->g_params();
    for (size_t i = 0; i < params.size(); i++) {
      auto live = params[i].second.data();
      params[i].second.set_data(m_.ema[i]);
      m_.ema[i] = live;
    }
  }
  ds_model& m_;
};

// VQGAN's adaptive adversarial weight (Esser et al., 2021): w_adv times
// ||grad L_rec|| / ||grad L_adv|| at G's output layer (last), so that the
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
                         const torch::Tensor& last, const torch::Tensor& rec,
                         const torch::Tensor& adv) {
  auto gy_rec = torch::autograd::grad({rec}, {y}, {}, /*retain_graph=*/true)[0];
  auto gy_adv = torch::autograd::grad({adv}, {y}, {}, /*retain_graph=*/true)[0];
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

// Writes the step's terms and decides the next step's updates. In a group
// the logged terms are the global batch's, so that balancing takes the
// same branch on every rank; a stop asked by any rank is everyone's.
void log_and_balance(ds_model& m, const Terms& logged, double adv_weight, bool adversarial,
                     StepLog& out) {
  std::vector<double> values;
  for (const auto& [name, t] : logged) values.push_back(t.item<double>());
  bool stop = m.stop_asked;
  if (m.group) {
    values.push_back(m.stop_asked);
    allreduce_values(*m.group, "logged losses", values, m.share);
    stop = values.back() > 0;
    values.pop_back();
  }
  double discr = 0, adv = 0;
  for (size_t i = 0; i < logged.size(); i++) {
    out.terms.emplace_back(logged[i].first, values[i]);
    if (logged[i].first == "loss_discr") discr = values[i];
    if (logged[i].first == "loss_adv") adv = values[i];
  }
  if (m.cfg.adv_adaptive) out.terms.emplace_back("adv_weight", adv_weight);
  out.stop = stop;
  if (!adversarial) return;
  const double r = discr / std::max(adv, 1e-12);
  if (m.train_d && r < kStopD) m.train_d = false;
  else if (!m.train_d && r > kResumeD) m.train_d = true;
  m.train_g = !(r > kFreezeG);
}

// The update of a DeePSiM step. D learns from d_loss (undefined: D neither
// learns nor judges on this step) where balancing lets it; then
// generator() computes G's terms, the adversarial one with D's new
// weights, as the authors' released code does. G learns from their
// weighted sum, the moving average follows, and balancing picks the next
// step's updates. The backward passes run outside autocast.
void update(ds_model& m, const torch::Tensor& d_loss,
            const std::function<GeneratorLoss()>& generator, StepLog& out) {
  const bool adversarial = d_loss.defined();
  out.updated_d = adversarial && m.train_d;
  out.updated_g = m.train_g;
  if (out.updated_d)
    learn(m, d_loss, "discriminator's loss", "discriminator's gradients", *m.opt_d,
          m.task->d_params());
  GeneratorLoss g = generator();
  double adv_weight = adversarial ? m.weight("adv") : 0;
  torch::Tensor loss = g.loss;
  if (adversarial) {
    // Adaptive: the weight of a step where G does not learn is moot, and
    // logged as 0.
    if (m.cfg.adv_adaptive && out.updated_g && g.rec.requires_grad()) {
      check_finite_loss("generator's weighted loss", loss + g.adv);
      auto a = adaptive_weight(m, adv_weight, g.y, g.last, g.rec, g.adv);
      adv_weight = a.weight;
      // The same gradients as loss + weight * adv, from y down.
      loss = g.base + (g.y * a.gy.detach()).sum();
    } else if (m.cfg.adv_adaptive) {
      adv_weight = 0;
    } else {
      loss = loss + adv_weight * g.adv;
    }
  }
  if (out.updated_g && loss.requires_grad()) {
    learn(m, loss, "generator's weighted loss", "generator's gradients", *m.opt_g,
          m.task->g_params());
    update_ema(m);
  }
  log_and_balance(m, g.logged, adv_weight, adversarial, out);
}

}  // namespace
}  // namespace deepsim
