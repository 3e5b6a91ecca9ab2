// Compiled as part of engine.cpp, not on its own (see there).
// The tasks: each builds its networks and optimisers, runs its step (its
// losses, then the one update) and its inference. A new task is a class
// here and a case in make_task.
#include <optional>
#include <stdexcept>

#include "engine.h"

namespace deepsim {

// What a task cannot do, with the messages a user sees.
[[noreturn]] static void no_decoder() {
  throw std::invalid_argument("this run has no decoder to reconstruct with");
}
[[noreturn]] static void no_features() {
  throw std::invalid_argument("only an inversion run inverts features");
}
torch::Tensor Task::reconstruct(ds_model&, const torch::Tensor&) { no_decoder(); }
torch::Tensor Task::encode(ds_model&, const torch::Tensor&) { no_decoder(); }
torch::Tensor Task::decode(ds_model&, const float*, int64_t, int64_t, int64_t) { no_decoder(); }
std::vector<int64_t> Task::feature_shape() { no_features(); }
torch::Tensor Task::invert(ds_model&, const float*, int64_t) { no_features(); }
void Task::evaluate(ds_model&, const torch::Tensor&, const ds_step_input&, StepLog&) {
  throw std::invalid_argument("evaluate is for the comparator task");
}
TensorDict Task::export_comparator() {
  throw std::invalid_argument("only a comparator run exports a comparator");
}

namespace {

// The dropout generator's seed is the run's plus this, so that its stream
// differs from the VAE noise's, which starts from the run's seed.
constexpr uint64_t kDropoutSeed = 0x9e3779b97f4a7c15;

void check_upsample(const ds_config& cfg) {
  if (cfg.upsample != DS_UPSAMPLE_DECONV && cfg.upsample != DS_UPSAMPLE_RESIZE)
    throw std::invalid_argument("unknown upsampling " + std::to_string(cfg.upsample));
}

// The weight of a generator's output convolution, the last of body.
torch::Tensor output_weight(torch::nn::Sequential& body) {
  return body->ptr(body->size() - 1)->named_parameters(false)["weight"];
}

// A DeePSiM step on what G made of x: the reconstruction terms and D's
// loss, then the update, which asks for G's adversarial terms after D's
// step. During D's warm-up D neither learns nor judges.
void deepsim_step(ds_model& m, Comparator* comp, Adversary& d, const torch::Tensor& x,
                  const Generated& g, const ds_step_input& in, StepLog& out) {
  const bool adversarial = m.weight("adv") > 0 && !in.d_warmup;
  d.module().train();
  auto r = reconstruction_terms(m, comp, d, x, g, adversarial);
  update(m, r.d_loss, [&] { return generator_terms(m, d, x, g, r); }, out);
}

// ---- the autoencoder and the VAE ----

class Autoencoder : public Task, public Adversary {
 public:
  Autoencoder(ds_model& m, std::shared_ptr<Comparator> comp, bool vae)
      : vae_(vae), comp_(std::move(comp)) {
    const auto& cfg = m.cfg;
    check_upsample(cfg);
    enc_ = Encoder(cfg.size, vae ? 2 * cfg.code_channels : cfg.code_channels);
    gen_ = Generator(cfg.size, cfg.code_channels, static_cast<Upsample>(cfg.upsample));
    noise_.set_current_seed(static_cast<uint64_t>(cfg.seed));
    disc_ = Discriminator(cfg.size, m.rows, cfg.patch_discriminator != 0);
    place(m, *enc_);
    place(m, *gen_);
    place(m, *disc_);
    m.opt_d = adam(cfg, disc_->parameters(), d_lr(cfg));
  }

  void step(ds_model& m, const torch::Tensor& x, const ds_step_input& in,
            StepLog& out) override {
    Generated g;
    {
      Autocast autocast(bf16(m));
      g = autoencode(m, x, in);
    }
    deepsim_step(m, comp_.get(), *this, x, g, in, out);
  }

  Named g_params() override {
    auto out = named("encoder.", *enc_);
    auto g = named("generator.", *gen_);
    out.insert(out.end(), g.begin(), g.end());
    return out;
  }
  Named d_params() override { return named("discriminator.", *disc_); }

  torch::Tensor reconstruct(ds_model& m, const torch::Tensor& x) override {
    return gen_->forward(encode(m, x)).clamp(-1, 1);
  }
  torch::Tensor encode(ds_model& m, const torch::Tensor& x) override {
    prepare_inference(m, x.size(2), x.size(3));
    return encode_x(x).first;
  }
  torch::Tensor decode(ds_model& m, const float* z, int64_t n, int64_t zh,
                       int64_t zw) override {
    prepare_inference(m, 0, 0);  // decode takes codes, not images
    if (n < 1 || zh < 1 || zw < 1) throw std::invalid_argument("decode: empty code");
    auto t = torch::from_blob(const_cast<float*>(z), {n, m.cfg.code_channels, zh, zw},
                              torch::kFloat32)
                 .to(m.device, dtype(m));
    return gen_->forward(t).clamp(-1, 1);
  }

  void save_state(TensorDict& dict) override {
    if (vae_) dict.insert("meta.noise_rng", noise_.get_state());
  }
  void load_state(const TensorDict& dict) override {
    if (vae_) noise_.set_state(lookup(dict, "meta.noise_rng"));
  }

  std::pair<torch::Tensor, torch::Tensor> logits_pair(const torch::Tensor& real,
                                                      const torch::Tensor& fake,
                                                      const torch::Tensor&) override {
    return disc_->forward_pair(real, fake);
  }
  std::pair<torch::Tensor, std::vector<torch::Tensor>> logits_and_activations(
      const torch::Tensor& img, const torch::Tensor&) override {
    return disc_->forward_features(img);
  }
  torch::nn::Sequential& trunk() override { return disc_->features; }
  torch::nn::Module& module() override { return *disc_; }

 private:
  // The code of x: for the VAE the posterior's mean and log-variance, for
  // the autoencoder the code itself and an undefined log-variance.
  std::pair<torch::Tensor, torch::Tensor> encode_x(const torch::Tensor& x) {
    auto h = enc_->forward(x);
    if (!vae_) return {h, torch::Tensor()};
    auto parts = h.chunk(2, 1);
    return {parts[0], parts[1].clamp(kMinLogVar, kMaxLogVar)};
  }

  // x through E and G. The VAE samples its code with the reparameterisation
  // z = mu + sigma * eps, which keeps z differentiable, and pays
  // in.kl_weight times the KL divergence from the prior.
  Generated autoencode(ds_model& m, const torch::Tensor& x, const ds_step_input& in) {
    enc_->train();
    gen_->train();
    Generated g{torch::Tensor(), torch::zeros({}, x.options()), {}, torch::Tensor(),
                output_weight(gen_->body)};
    auto [code, logvar] = encode_x(x);
    if (vae_) {
      // Drawn for the whole global batch, then this process's rows of it.
      auto shape = code.sizes().vec();
      shape[0] = m.rows->global;
      auto eps = torch::randn(shape, noise_, torch::kFloat32)
                     .slice(0, m.rows->offset, m.rows->offset + code.size(0))
                     .to(code.device(), dtype(m));
      auto mu = code;
      code = mu + torch::exp(0.5 * logvar) * eps;
      // As many draws from the prior as rows, where D judges them: this
      // process's rows of one global draw, after eps from the same stream.
      if (m.weight("prior_adv") > 0) {
        auto z = torch::randn(shape, noise_, torch::kFloat32)
                     .slice(0, m.rows->offset, m.rows->offset + code.size(0))
                     .to(code.device(), dtype(m));
        g.prior = gen_->forward(z.contiguous(layout(m)));
      }
      // In the weights' type even under autocast: a sum over the whole latent.
      auto kl = kl_divergence(mu.to(dtype(m)), logvar.to(dtype(m)), x.size(0));
      g.logged.emplace_back("kl", kl);
      if (in.kl_weight > 0) g.base = g.base + in.kl_weight * kl;
    }
    g.y = gen_->forward(code);
    return g;
  }

  // Puts E and G in eval mode after checking that h and w are multiples of
  // the encoder's downsampling factor.
  void prepare_inference(ds_model& m, int64_t h, int64_t w) {
    const int64_t f = int64_t{1} << stages_for(m.cfg.size);
    if (h % f != 0 || w % f != 0)
      throw std::invalid_argument(std::to_string(h) + "x" + std::to_string(w) +
                                  " is not a multiple of " + std::to_string(f));
    enc_->eval();
    gen_->eval();
  }

  bool vae_;
  std::shared_ptr<Comparator> comp_;
  Encoder enc_{nullptr};  // the VAE's gives the posterior's mean, then its log-variance
  Generator gen_{nullptr};
  Discriminator disc_{nullptr};
  // Draws the VAE's reparameterisation noise; its state is checkpointed so
  // that a resumed run draws what the uninterrupted one would have.
  at::Generator noise_ = at::detail::createCPUGenerator();
};

// ---- inversion: G reconstructs images from a fixed network's features ----

class Inversion : public Task, public Adversary {
 public:
  Inversion(ds_model& m, std::shared_ptr<Comparator> comp, std::shared_ptr<Comparator> target)
      : comp_(std::move(comp)), target_(std::move(target)) {
    const auto& cfg = m.cfg;
    if (!target_) throw std::invalid_argument("an inversion needs a target network");
    check_upsample(cfg);
    // The features' shape, from an image of the training size.
    std::vector<torch::Tensor> taps;
    {
      torch::NoGradGuard no_grad;
      taps = checked_features(*target_, torch::zeros({1, 3, cfg.size, cfg.size}).to(m.device));
    }
    if (taps.size() != 1)
      throw std::invalid_argument("an inversion inverts one layer of its target, not " +
                                  std::to_string(taps.size()));
    auto f = taps[0];
    if (f.dim() == 2) f = f.view({1, f.size(1), 1, 1});
    if (f.dim() != 4)
      throw std::invalid_argument("the target's features have " + std::to_string(f.dim()) +
                                  " dimensions");
    shape_ = {f.size(1), f.size(2), f.size(3)};
    torch::manual_seed(cfg.seed);
    gen_ = InversionGenerator(f.size(1), f.size(2), f.size(3), cfg.size,
                              static_cast<Upsample>(cfg.upsample));
    disc_ = ConditionalDiscriminator(cfg.size, f.size(1), f.size(2), f.size(3), m.rows);
    place(m, *gen_);
    place(m, *disc_);
    m.opt_d = adam(cfg, disc_->parameters(), d_lr(cfg));
  }

  void step(ds_model& m, const torch::Tensor& x, const ds_step_input& in,
            StepLog& out) override {
    gen_->train();
    auto f = target_features(x);
    Generated g{torch::Tensor(), torch::zeros({}, x.options()), {}, f,
                output_weight(gen_->body)};
    {
      Autocast autocast(bf16(m));
      g.y = gen_->forward(f);
    }
    deepsim_step(m, comp_.get(), *this, x, g, in, out);
  }

  Named g_params() override { return named("generator.", *gen_); }
  Named d_params() override { return named("discriminator.", *disc_); }

  // An inversion reconstructs from the target's features of x.
  torch::Tensor reconstruct(ds_model& m, const torch::Tensor& x) override {
    if (x.size(2) != m.cfg.size || x.size(3) != m.cfg.size)
      throw std::invalid_argument("an inversion reconstructs " + std::to_string(m.cfg.size) +
                                  "x" + std::to_string(m.cfg.size) + " images, not " +
                                  std::to_string(x.size(2)) + "x" + std::to_string(x.size(3)));
    gen_->eval();
    return gen_->forward(target_features(x)).clamp(-1, 1);
  }
  std::vector<int64_t> feature_shape() override { return shape_; }
  torch::Tensor invert(ds_model& m, const float* f, int64_t n) override {
    if (n < 1) throw std::invalid_argument("invert: no features");
    gen_->eval();
    auto t = torch::from_blob(const_cast<float*>(f), {n, shape_[0], shape_[1], shape_[2]},
                              torch::kFloat32)
                 .to(m.device, dtype(m));
    return gen_->forward(t).clamp(-1, 1);
  }

  std::pair<torch::Tensor, torch::Tensor> logits_pair(const torch::Tensor& real,
                                                      const torch::Tensor& fake,
                                                      const torch::Tensor& cond) override {
    return disc_->forward_pair(real, fake, cond);
  }
  std::pair<torch::Tensor, std::vector<torch::Tensor>> logits_and_activations(
      const torch::Tensor& img, const torch::Tensor& cond) override {
    return disc_->forward_features(img, cond);
  }
  torch::nn::Sequential& trunk() override { return disc_->features; }
  torch::nn::Module& module() override { return *disc_; }

 private:
  // The target's features of x: fixed, so without autograd. Vectors (fully
  // connected layers) come as n x D x 1 x 1, like a 1 x 1 map.
  torch::Tensor target_features(const torch::Tensor& x) {
    torch::NoGradGuard no_grad;
    auto f = features_of(*target_, x)[0];
    return f.dim() == 2 ? f.view({f.size(0), f.size(1), 1, 1}) : f;
  }

  std::shared_ptr<Comparator> comp_, target_;
  std::vector<int64_t> shape_;  // (C, H, W) of the features G inverts
  InversionGenerator gen_{nullptr};
  ConditionalDiscriminator disc_{nullptr};  // D also sees the features
};

// ---- the comparator task: an Exemplar-CNN on surrogate classes ----

class Classifier : public Task {
 public:
  explicit Classifier(ds_model& m) {
    if (m.cfg.ema > 0)
      throw std::invalid_argument("a moving average of weights is for generators");
    if (m.cfg.classes < 2)
      throw std::invalid_argument("the comparator task needs at least 2 classes");
    net_ = exemplar(m.cfg.classes);
    msra_init(*net_);
    net_->cut(11, 4);  // through the surrogate-class logits
    net_->to(m.device, dtype(m));
  }

  void step(ds_model& m, const torch::Tensor& x, const ds_step_input& in,
            StepLog& out) override {
    classify(m, x, in, true, out);
  }
  // On held-out images: the loss and the accuracy, without learning.
  void evaluate(ds_model& m, const torch::Tensor& x, const ds_step_input& in,
                StepLog& out) override {
    classify(m, x, in, false, out);
  }
  Named g_params() override { return named("", *net_); }
  TensorDict export_comparator() override {
    TensorDict dict;
    for (const auto& p : net_->features->named_parameters())
      dict.insert("features." + p.key(), p.value().detach().cpu());
    return dict;
  }
  const char* single_process_only() const override {
    return "the comparator task trains in one process; data-parallel training is for the "
           "autoencoder, the VAE and inversion";
  }

 private:
  // Cross-entropy and accuracy of the surrogate-class head, logged as
  // train_acc on a training step and as accuracy on held-out images; one
  // optimizer step when train.
  void classify(ds_model& m, const torch::Tensor& x, const ds_step_input& in, bool train,
                StepLog& out) {
    if (!in.labels) throw std::invalid_argument("the comparator task needs labels");
    auto y = torch::from_blob(const_cast<int64_t*>(in.labels), {in.n}, torch::kInt64)
                 .to(m.device);
    if (y.min().item<int64_t>() < 0 || y.max().item<int64_t>() >= m.cfg.classes)
      throw std::invalid_argument("label outside [0, classes)");
    train ? net_->train() : net_->eval();
    torch::Tensor logits, loss;
    {
      std::optional<torch::NoGradGuard> no_grad;
      if (!train) no_grad.emplace();
      logits = net_->forward(x);
      loss = F::cross_entropy(logits, y);
    }
    if (train)
      learn(m, loss, "classifier's loss", "classifier's gradients", *m.opt_g, g_params());
    out.terms.emplace_back("loss_class", loss.item<double>());
    out.terms.emplace_back(train ? "train_acc" : "accuracy",
                           logits.argmax(1).eq(y).to(torch::kFloat64).mean().item<double>());
    out.updated_g = train;
    out.stop = m.stop_asked;
  }

  FeatureNet net_{nullptr};
};

// The task cfg names, built on m's device.
std::unique_ptr<Task> make_task(ds_model& m, ds_comparator* comp, ds_comparator* target) {
  auto c = comp ? comp->c : nullptr;
  switch (m.cfg.task) {
    case DS_TASK_AUTOENCODER:
      return std::make_unique<Autoencoder>(m, c, false);
    case DS_TASK_VAE:
      return std::make_unique<Autoencoder>(m, c, true);
    case DS_TASK_INVERSION:
      return std::make_unique<Inversion>(m, c, target ? target->c : nullptr);
    case DS_TASK_COMPARATOR:
      return std::make_unique<Classifier>(m);
  }
  throw std::invalid_argument("unknown task " + std::to_string(m.cfg.task));
}

}  // namespace
}  // namespace deepsim
