// Compiled as part of engine.cpp, not on its own (see there).
// The model functions of the C ABI: build a run's task, train it a step at
// a time, infer with it, join a group. What differs by task is the task's
// (tasks.hpp).
#include <cmath>
#include <stdexcept>

#include "engine.h"

namespace deepsim {

ds_model* new_model(const ds_config& cfg, ds_comparator* comp, ds_comparator* target) {
  const int64_t s = cfg.size;
  if (s < 16 || s % 8 != 0 || ((s / 8) & (s / 8 - 1)) != 0)
    throw std::invalid_argument("size " + std::to_string(s) +
                                " must be 8 times a power of two, >= 16");
  if (cfg.n_weights < 0 || (cfg.n_weights > 0 && !cfg.weights))
    throw std::invalid_argument("bad loss weights");
  if (cfg.layout != DS_LAYOUT_CHANNELS_LAST && cfg.layout != DS_LAYOUT_NCHW)
    throw std::invalid_argument("unknown layout " + std::to_string(cfg.layout));
  if (std::isnan(cfg.ema) || cfg.ema < 0 || cfg.ema >= 1)
    throw std::invalid_argument("ema " + std::to_string(cfg.ema) + " is not in [0, 1)");
  keep_freed_activations();
  auto m = std::make_unique<ds_model>();
  m->cfg = cfg;
  for (int32_t i = 0; i < cfg.n_weights; i++)
    m->weights.emplace_back(std::string(cfg.weights[i].name, strnlen(cfg.weights[i].name, DS_NAME_LEN)),
                            cfg.weights[i].value);
  m->cfg.weights = nullptr;
  m->device = best_device();
  torch::manual_seed(cfg.seed);
  m->rows->rng.set_current_seed(static_cast<uint64_t>(cfg.seed) + kDropoutSeed);
  m->task = make_task(*m, comp, target);
  m->opt_g = adam(cfg, tensors(m->task->g_params()), cfg.lr);
  if (cfg.ema > 0) {
    torch::NoGradGuard no_grad;
    for (const auto& p : m->task->g_params()) m->ema.push_back(p.second.detach().clone());
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

// Copies what a step logged into the ABI's struct; terms is malloc'd.
void log_out(const StepLog& log, ds_step_log* out) {
  *out = ds_step_log{};
  const size_t n = log.terms.size();
  out->terms = static_cast<ds_term*>(std::calloc(std::max<size_t>(n, 1), sizeof(ds_term)));
  if (!out->terms) throw std::bad_alloc();
  for (size_t i = 0; i < n; i++) {
    std::snprintf(out->terms[i].name, DS_NAME_LEN, "%s", log.terms[i].first.c_str());
    out->terms[i].value = log.terms[i].second;
  }
  out->n_terms = static_cast<int32_t>(n);
  out->updated_g = log.updated_g;
  out->updated_d = log.updated_d;
  out->stop = log.stop;
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
  StepLog log;
  m.task->step(m, x, in, log);
  log_out(log, out);
  trim_now_and_then(m);
}

void evaluate(ds_model& m, const ds_step_input& in, ds_step_log* out) {
  StepLog log;
  m.task->evaluate(m, images(m, in.x, in.n, m.cfg.size, m.cfg.size), in, log);
  log_out(log, out);
}

// Inference runs without autograd, on the averaged weights where the run
// keeps them.
void reconstruct(ds_model& m, const float* x, int64_t n, int64_t h, int64_t w,
                 float* out) {
  torch::NoGradGuard no_grad;
  AveragedWeights averaged(m);
  copy_out(m.task->reconstruct(m, images(m, x, n, h, w)), out);
}

void encode(ds_model& m, const float* x, int64_t n, int64_t h, int64_t w,
            float* out) {
  torch::NoGradGuard no_grad;
  AveragedWeights averaged(m);
  copy_out(m.task->encode(m, images(m, x, n, h, w)), out);
}

void decode(ds_model& m, const float* z, int64_t n, int64_t zh, int64_t zw,
            float* out) {
  torch::NoGradGuard no_grad;
  AveragedWeights averaged(m);
  copy_out(m.task->decode(m, z, n, zh, zw), out);
}

void feature_shape(ds_model& m, int64_t shape[3]) {
  auto s = m.task->feature_shape();
  for (int i = 0; i < 3; i++) shape[i] = s[i];
}

void invert(ds_model& m, const float* f, int64_t n, float* out) {
  torch::NoGradGuard no_grad;
  AveragedWeights averaged(m);
  copy_out(m.task->invert(m, f, n), out);
}

int64_t join_group(ds_model& m, ds_group& g, int64_t step) {
  if (const char* why = m.task->single_process_only()) throw std::invalid_argument(why);
  const bool lead = group_rank(g) == 0;
  auto state = broadcast_bytes(g, lead ? save_model(m, step) : std::vector<char>());
  if (!lead) step = load_model(m, state.data(), static_cast<int64_t>(state.size()));
  m.group = &g;
  return step;
}

int64_t num_params(ds_model& m) {
  int64_t n = 0;
  for (const auto& p : m.task->g_params()) n += p.second.numel();
  for (const auto& p : m.task->d_params()) n += p.second.numel();
  return n;
}

}  // namespace deepsim
