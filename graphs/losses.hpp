// Compiled as part of engine.cpp, not on its own (see there).
// The DeePSiM loss terms (PAPER.md), each a function of the images and the
// networks that returns its unweighted value. Weighing them, learning from
// them and logging them is update.hpp's.
#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "engine.h"

namespace deepsim {
namespace {

void set_requires_grad(torch::nn::Module& mod, bool on) {
  for (auto& p : mod.parameters()) p.requires_grad_(on);
}

namespace F = torch::nn::functional;

// The log-variance is clamped so that exp() can neither overflow nor
// vanish while the KL weight is still warming up.
constexpr double kMinLogVar = -30, kMaxLogVar = 20;

// A fixed network's features of x, in x's type: the comparator and the
// target compute in float32.
std::vector<torch::Tensor> features_of(Comparator& c, const torch::Tensor& x) {
  auto f = checked_features(c, x.to(torch::kFloat32));
  for (auto& t : f) t = t.to(x.scalar_type());
  return f;
}

// Pixel space: the mean squared error, for stability.
torch::Tensor image_loss(const torch::Tensor& y, const torch::Tensor& x) {
  return F::mse_loss(y, x);
}

// Feature space: with several taps, the sum of each tap's mean squared
// error. The target's features need no gradient.
torch::Tensor feature_loss(Comparator& c, const torch::Tensor& y, const torch::Tensor& x) {
  std::vector<torch::Tensor> target;
  {
    torch::NoGradGuard no_grad;
    target = features_of(c, x);
  }
  auto fy = features_of(c, y);
  auto loss = F::mse_loss(fy[0], target[0]);
  for (size_t i = 1; i < fy.size(); i++) loss = loss + F::mse_loss(fy[i], target[i]);
  return loss;
}

// D's loss: real images are 1, G's outputs 0.
torch::Tensor discriminator_loss(const torch::Tensor& real, const torch::Tensor& fake) {
  return F::binary_cross_entropy_with_logits(real, torch::ones_like(real)) +
         F::binary_cross_entropy_with_logits(fake, torch::zeros_like(fake));
}

// G's adversarial loss: G tries to make D call its output real.
torch::Tensor adversarial_loss(const torch::Tensor& judged) {
  return F::binary_cross_entropy_with_logits(judged, torch::ones_like(judged));
}

// Feature matching (pix2pixHD): the mean over D's convolutions of the L1
// distance between its activations on G's output (fy) and on x (fx), a
// reconstruction term in the features D tells them apart by. The last
// activation is D's output, which the adversarial term already judges.
// The sum starts from a zero of x's type and device (opts).
torch::Tensor feature_matching(const std::vector<torch::Tensor>& fy,
                               const std::vector<torch::Tensor>& fx,
                               const torch::TensorOptions& opts) {
  auto loss = torch::zeros({}, opts);
  for (size_t i = 0; i + 1 < fx.size(); i++) loss = loss + F::l1_loss(fy[i], fx[i]);
  return loss / static_cast<double>(fx.size() - 1);
}

// KL(N(mu, exp(logvar)) || N(0, I)), summed over the latent, mean per
// image of n.
torch::Tensor kl_divergence(const torch::Tensor& mu, const torch::Tensor& logvar, int64_t n) {
  return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum() / n;
}

// A loss's named terms, unweighted, in the order a step logs them.
using Terms = std::vector<std::pair<std::string, torch::Tensor>>;

// D as the DeePSiM losses reach it; each generator task has one.
class Adversary {
 public:
  virtual ~Adversary() = default;
  // D's logits for real images and for fake ones, in one pass; cond is
  // what an inversion's D also sees (undefined otherwise).
  virtual std::pair<torch::Tensor, torch::Tensor> logits_pair(const torch::Tensor& real,
                                                              const torch::Tensor& fake,
                                                              const torch::Tensor& cond) = 0;
  // D's logits for img and the activations of its convolutions on the way.
  virtual std::pair<torch::Tensor, std::vector<torch::Tensor>> logits_and_activations(
      const torch::Tensor& img, const torch::Tensor& cond) = 0;
  // D's convolutions alone, which need no logits and draw no dropout.
  virtual torch::nn::Sequential& trunk() = 0;
  virtual torch::nn::Module& module() = 0;
};

// What a task's generator made of a batch x: the output, what G pays
// besides the DeePSiM terms (the VAE's weighted KL), the task's own terms
// to log (the KL), the features an inversion's D also sees, the weight
// of G's output layer, where the adaptive weight compares gradients, and
// the VAE's decoded draws from its prior (undefined: none), which D sees
// as fakes beside y and G learns to pass as real (Larsen et al., 2016).
struct Generated {
  torch::Tensor y, base;
  Terms logged;
  torch::Tensor cond, last, prior;
};

// The terms of a step before D's step: the weighted reconstruction terms
// (rec), G's loss so far (base + rec), and D's loss (undefined while D is
// off), with each term kept for the log.
struct Reconstruction {
  torch::Tensor rec, loss, d_loss;
  torch::Tensor img, feat, discr;
};

// What G learns from once D has stepped (update.hpp).
struct GeneratorLoss {
  torch::Tensor y, last;
  torch::Tensor base;  // what G pays besides the DeePSiM terms
  torch::Tensor rec;   // the weighted reconstruction terms
  torch::Tensor loss;  // base + rec: G's loss before the adversarial term
  torch::Tensor adv;   // the adversarial term; undefined while D is off
  Terms logged;        // every term, unweighted, in the order the step logs them
};

// The image and feature terms of G's output, and D's loss on x against
// that output held fixed when adversarial.
Reconstruction reconstruction_terms(const ds_model& m, Comparator* comp, Adversary& d,
                                    const torch::Tensor& x, const Generated& g,
                                    bool adversarial) {
  const double w_img = m.weight("img"), w_feat = m.weight("feat");
  auto zero = torch::zeros({}, x.options());
  Reconstruction r{zero, {}, {}, zero, zero, zero};
  Autocast autocast(bf16(m));
  if (w_img > 0) {
    r.img = image_loss(g.y, x);
    r.rec = r.rec + w_img * r.img;
  }
  if (w_feat > 0) {
    if (!comp) throw std::invalid_argument("the feature loss needs a comparator");
    r.feat = feature_loss(*comp, g.y, x);
    r.rec = r.rec + w_feat * r.feat;
  }
  r.loss = g.base + r.rec;
  if (adversarial) {
    auto [real, fake] = d.logits_pair(x, g.y.detach(), g.cond);
    r.d_loss = r.discr = discriminator_loss(real, fake);
    if (g.prior.defined()) {
      auto drawn = d.logits_and_activations(g.prior.detach(), g.cond).first;
      r.d_loss = r.discr =
          r.discr + F::binary_cross_entropy_with_logits(drawn, torch::zeros_like(drawn));
    }
  }
  return r;
}

// G's terms after D's step: the adversarial term with D's new weights (it
// must leave no gradients in D) and feature matching on D's activations.
GeneratorLoss generator_terms(const ds_model& m, Adversary& d, const torch::Tensor& x,
                              const Generated& g, const Reconstruction& r) {
  const double w_match = m.weight("match"), w_prior = m.weight("prior_adv");
  auto zero = torch::zeros({}, x.options());
  GeneratorLoss out{g.y, g.last, g.base, r.rec, r.loss, {}, {}};
  torch::Tensor adv = zero, match = zero, prior = zero;
  if (r.d_loss.defined()) {
    Autocast autocast(bf16(m));
    set_requires_grad(d.module(), false);
    auto [judged, fy] = d.logits_and_activations(g.y, g.cond);
    if (g.prior.defined()) prior = adversarial_loss(d.logits_and_activations(g.prior, g.cond).first);
    set_requires_grad(d.module(), true);
    out.adv = adv = adversarial_loss(judged);
    // The draws have no target, so no reconstruction term to weigh this
    // against: a fixed weight, outside the adaptive one.
    if (g.prior.defined()) {
      out.base = out.base + w_prior * prior;
      out.loss = out.loss + w_prior * prior;
    }
    if (w_match > 0) {
      std::vector<torch::Tensor> fx;
      {
        torch::NoGradGuard no_grad;
        fx = activations(d.trunk(), x);
      }
      match = feature_matching(fy, fx, x.options());
      out.rec = out.rec + w_match * match;
      out.loss = out.loss + w_match * match;
    }
  }
  out.logged = {{"loss_feat", r.feat}, {"loss_adv", adv}, {"loss_img", r.img}, {"loss_discr", r.discr}};
  // Feature matching only where the run has it: the report plots each term
  // the step logs, and metrics lines hold 0 for the rest.
  if (w_match > 0) out.logged.emplace_back("loss_match", match);
  if (g.prior.defined()) out.logged.emplace_back("loss_prior_adv", prior);
  out.logged.insert(out.logged.end(), g.logged.begin(), g.logged.end());
  return out;
}

}  // namespace
}  // namespace deepsim
