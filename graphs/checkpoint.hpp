// Compiled as part of engine.cpp, not on its own (see there).
// Checkpoints: a run's weights, optimiser state, moving average and the
// state of its training, as a state dict in torch.save's format; and the
// comparator task's exported features.
#include "engine.h"

namespace deepsim {

namespace {

// The moving average's tensors, by checkpoint name ("ema." and G's).
Named ema_params(ds_model& m) {
  Named out;
  if (m.ema.empty()) return out;
  auto g = m.task->g_params();
  for (size_t i = 0; i < g.size(); i++) out.emplace_back("ema." + g[i].first, m.ema[i]);
  return out;
}

}  // namespace

std::vector<char> save_model(ds_model& m, int64_t step) {
  const auto g = m.task->g_params(), d = m.task->d_params();
  TensorDict dict;
  for (const auto& [name, t] : g) dict.insert(name, t.detach().cpu().contiguous());
  for (const auto& [name, t] : d) dict.insert(name, t.detach().cpu().contiguous());
  put_adam(dict, "optim_g.", *m.opt_g, g);
  if (m.opt_d) put_adam(dict, "optim_d.", *m.opt_d, d);
  for (const auto& [name, t] : ema_params(m)) dict.insert(name, t.detach().cpu().contiguous());
  if (!m.ema.empty()) dict.insert("meta.ema_updates", torch::tensor(m.ema_updates, torch::kInt64));
  dict.insert("meta.step", torch::tensor(step, torch::kInt64));
  dict.insert("meta.train_d", torch::tensor(int64_t{m.train_d}, torch::kInt64));
  dict.insert("meta.train_g", torch::tensor(int64_t{m.train_g}, torch::kInt64));
  m.task->save_state(dict);
  dict.insert("meta.dropout_rng", m.rows->rng.get_state());
  return dict_to_bytes(dict);
}

// A failed load may leave the model half-loaded: callers discard it.
int64_t load_model(ds_model& m, const char* buf, int64_t len) {
  auto dict = dict_from_bytes(std::vector<char>(buf, buf + len));
  const auto g = m.task->g_params(), d = m.task->d_params();
  load_params(dict, g);
  load_params(dict, d);
  load_adam(dict, "optim_g.", *m.opt_g, g, m.device);
  if (m.opt_d) load_adam(dict, "optim_d.", *m.opt_d, d, m.device);
  if (!m.ema.empty()) {
    load_params(dict, ema_params(m));
    m.ema_updates = lookup(dict, "meta.ema_updates").item<int64_t>();
  }
  m.train_d = lookup(dict, "meta.train_d").item<int64_t>() != 0;
  m.train_g = lookup(dict, "meta.train_g").item<int64_t>() != 0;
  m.task->load_state(dict);
  // Checkpoints from before the dropout generator existed lack it.
  if (dict.contains("meta.dropout_rng")) m.rows->rng.set_state(lookup(dict, "meta.dropout_rng"));
  return lookup(dict, "meta.step").item<int64_t>();
}

// G's (and E's) weights alone, the averaged ones where the run keeps
// them: what inference needs, and what deepsim ships.
std::vector<char> save_weights(ds_model& m) {
  AveragedWeights averaged(m);
  TensorDict dict;
  for (const auto& [name, t] : m.task->g_params()) dict.insert(name, t.detach().cpu().contiguous());
  return dict_to_bytes(dict);
}

// Loads G's (and E's) weights from a state dict that holds them (weights
// save_weights wrote, or a checkpoint); a moving average starts at them.
void load_weights(ds_model& m, const char* buf, int64_t len) {
  const auto g = m.task->g_params();
  load_params(dict_from_bytes(std::vector<char>(buf, buf + len)), g);
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < m.ema.size(); i++) m.ema[i].copy_(g[i].second);
}

std::vector<char> export_comparator(ds_model& m) {
  return dict_to_bytes(m.task->export_comparator());
}

}  // namespace deepsim
