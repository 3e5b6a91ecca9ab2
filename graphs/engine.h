// Private to graphs/: the structs behind the C ABI's handles and what the
// engine's parts share. They are compiled as one translation unit,
// engine.cpp, which includes them in this order:
//
//   device.hpp       where the engine runs: device, autocast, allocator,
//                    threads
//   statedict.hpp    state dicts and Adam state in torch.save's format
//   comparators.hpp  the architecture registry and the comparators
//   distributed.hpp  data-parallel training: the c10d process group
//   losses.hpp       the DeePSiM loss terms, each a function
//   update.hpp       the one update: backward passes, all-reduce, optimiser
//                    steps, the moving average, balancing
//   tasks.hpp        each task: its networks, its step, its inference
//   model.hpp        the C ABI's model functions, over the task
//   checkpoint.hpp   save and load
//
// abi.cpp, the extern "C" functions of deepsim.h in its order, is compiled
// on its own without libtorch's heavy headers (api.h). The networks are in
// layers.h (shared layers), trained.h (E, G, D) and backbones.h (AlexNet,
// VGG16, the Exemplar-CNN), and graphnet.h (imported Keras graphs).
#pragma once

#include <torch/torch.h>

#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "api.h"
#include "deepsim.h"
#include "backbones.h"
#include "trained.h"

namespace deepsim {

using Named = std::vector<std::pair<std::string, torch::Tensor>>;
using TensorDict = c10::Dict<std::string, torch::Tensor>;

// ---- device.hpp ----

// The device the engine computes on: the one place a GPU path would change.
torch::Device best_device();

// n images of h x w from Go memory, on dev. from_blob does not copy: the Go
// buffer outlives this call's use of it.
inline torch::Tensor input_tensor(const float* x, int64_t n, int64_t h,
                                  int64_t w, torch::Device dev) {
  return torch::from_blob(const_cast<float*>(x), {n, 3, h, w}, torch::kFloat32)
      .to(dev);
}

// Copies a tensor into Go memory as contiguous float32.
inline void copy_out(const torch::Tensor& t, float* out) {
  auto c = t.to(torch::kCPU, torch::kFloat32).contiguous();
  std::memcpy(out, c.data_ptr<float>(), sizeof(float) * c.numel());
}

// ---- statedict.hpp ----

TensorDict dict_from_bytes(std::vector<char> bytes);
TensorDict dict_from_file(const std::string& path);
std::vector<char> dict_to_bytes(const TensorDict& dict);
const torch::Tensor& lookup(const TensorDict& dict, const std::string& key);
std::string shape_mismatch(const std::string& name, const torch::Tensor& got,
                           const torch::Tensor& want);
// A module's parameters, each named prefix + its own name.
Named named(const std::string& prefix, const torch::nn::Module& mod);
// Copies every named parameter's value from dict; shapes must agree.
void load_params(const TensorDict& dict, const Named& params);
// Adam's moments and step counts of params, keyed prefix + name + ".exp_avg"
// and so on; load_adam restores what put_adam stored.
void put_adam(TensorDict& dict, const std::string& prefix,
              torch::optim::Adam& opt, const Named& params);
void load_adam(const TensorDict& dict, const std::string& prefix,
               torch::optim::Adam& opt, const Named& params, torch::Device dev);

// ---- comparators.hpp ----

// The comparator C: a fixed network whose features define similarity. It
// owns its input normalisation and size, so callers pass [-1,1] pixels.
// Its features are the outputs of one or more layers (taps).
class Comparator {
 public:
  virtual ~Comparator() = default;
  virtual std::vector<torch::Tensor> features(const torch::Tensor& x) = 0;
  virtual void to(torch::Device d) = 0;
};

// c's features of x, checked: one batch entry per image, values in each,
// and finite. A user's TorchScript module may return anything.
std::vector<torch::Tensor> checked_features(Comparator& c, const torch::Tensor& x);

// ---- distributed.hpp ----

// Replaces each gradient by the sum over ranks of scale * it, all-reduced
// in a few flat buckets rather than one call per parameter.
void allreduce_grads(ds_group& g, const char* what, const std::vector<torch::Tensor>& grads,
                     double scale);
// The same for a few values.
void allreduce_values(ds_group& g, const char* what, std::vector<double>& values,
                      double scale);

}  // namespace deepsim

struct ds_comparator {
  std::shared_ptr<deepsim::Comparator> c;
  torch::Device device{torch::kCPU};
};

namespace deepsim {

// Named values a step measured, in the order it logged them.
using Logged = std::vector<std::pair<std::string, double>>;

// What one training step reports (ds_step_log, before it crosses the ABI).
struct StepLog {
  Logged terms;
  bool updated_g = false, updated_d = false;
  bool stop = false;  // some process of the group asked to stop
};

// A task: the networks it trains, its step and its inference. A new task
// is a subclass in tasks.hpp and a case in make_task. What a task cannot
// do throws, with the message a user sees.
class Task {
 public:
  virtual ~Task() = default;
  // One optimisation step on x, this process's rows of the batch.
  virtual void step(ds_model& m, const torch::Tensor& x, const ds_step_input& in,
                    StepLog& out) = 0;
  // The parameters opt_g trains (G's, and E's) and opt_d trains (D's), by
  // checkpoint name; the moving average follows g_params' order.
  virtual Named g_params() = 0;
  virtual Named d_params() { return {}; }
  // Inference, in eval mode and without autograd (the caller's guard):
  // images from images, codes from images, images from n codes of
  // code_channels x zh x zw or from n features of feature_shape, in Go's
  // memory.
  virtual torch::Tensor reconstruct(ds_model& m, const torch::Tensor& x);
  virtual torch::Tensor encode(ds_model& m, const torch::Tensor& x);
  virtual torch::Tensor decode(ds_model& m, const float* z, int64_t n, int64_t zh, int64_t zw);
  virtual std::vector<int64_t> feature_shape();
  virtual torch::Tensor invert(ds_model& m, const float* f, int64_t n);
  // The comparator task's held-out measures and its exported features.
  virtual void evaluate(ds_model& m, const torch::Tensor& x, const ds_step_input& in,
                        StepLog& out);
  virtual TensorDict export_comparator();
  // State beyond weights that a checkpoint keeps (the VAE's noise).
  virtual void save_state(TensorDict&) {}
  virtual void load_state(const TensorDict&) {}
  // Whether the task trains as a data-parallel group; why not, if not.
  virtual const char* single_process_only() const { return nullptr; }
};

}  // namespace deepsim

// The trained networks of one run, their optimizers and the state of their
// training. The task holds the networks; the model holds what every task
// shares.
struct ds_model {
  ds_config cfg;  // weights point nowhere after building: see weight()
  std::vector<std::pair<std::string, double>> weights;
  torch::Device device{torch::kCPU};
  std::unique_ptr<deepsim::Task> task;
  // opt_g trains E and G (or the Exemplar-CNN), opt_d trains D.
  std::unique_ptr<torch::optim::Adam> opt_g, opt_d;
  // With cfg.ema, the moving average of opt_g's parameters, in g_params'
  // order, and how many of G's steps it has averaged.
  std::vector<torch::Tensor> ema;
  int64_t ema_updates = 0;

  // Discriminator balancing (see update.hpp): D pauses when it wins too
  // easily and G pauses when D is hopelessly behind.
  bool train_d = true;
  bool train_g = true;
  int steps_since_trim = 0;
  // This process's rows of the global batch and the dropout generator.
  std::shared_ptr<deepsim::BatchRows> rows = std::make_shared<deepsim::BatchRows>();

  // Data-parallel training: the group (not owned), and whether this
  // process asked it to stop after the current step.
  ds_group* group = nullptr;
  bool stop_asked = false;
  double share = 1;  // this process's fraction of the global batch

  // The weight the config gives a loss term, 0 when it names none.
  double weight(const char* name) const {
    for (const auto& [n, v] : weights)
      if (n == name) return v;
    return 0;
  }
};
