// Private to graphs/: the structs behind the C ABI's handles and what the
// engine's parts share. They are compiled as one translation unit,
// engine.cpp, which includes them in this order:
//
//   statedict.hpp    state dicts and Adam state in torch.save's format
//   comparators.hpp  the architecture registry and the comparators
//   distributed.hpp  data-parallel training: the c10d process group
//   model.hpp        the trained networks: tasks, train steps, inference,
//                    checkpoints
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

inline torch::Device best_device() {
  return torch::cuda::is_available() ? torch::Device(torch::kCUDA)
                                     : torch::Device(torch::kCPU);
}

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

// The trained networks of one run, their optimizers and the state of their
// training. Which networks exist depends on the task; the step function is
// chosen once, when the model is built.
struct ds_model {
  ds_config cfg;
  torch::Device device{torch::kCPU};

  // Autoencoder and VAE. The VAE's encoder gives 2 x code_channels: the
  // posterior's mean, then its log-variance.
  deepsim::Encoder enc{nullptr};
  deepsim::Generator gen{nullptr};
  deepsim::Discriminator disc{nullptr};
  std::shared_ptr<deepsim::Comparator> comp;
  // Inversion: the fixed network whose features G inverts, their shape
  // (C, H, W), G, and D that also sees the features.
  std::shared_ptr<deepsim::Comparator> target;
  std::vector<int64_t> feature_shape;
  deepsim::InversionGenerator inv{nullptr};
  deepsim::ConditionalDiscriminator cdisc{nullptr};
  // Comparator task: the Exemplar-CNN with its surrogate-class head.
  deepsim::FeatureNet net{nullptr};
  // opt_g trains E and G (or the Exemplar-CNN), opt_d trains D.
  std::unique_ptr<torch::optim::Adam> opt_g, opt_d;
  // With cfg.ema, the moving average of opt_g's parameters, in g_params'
  // order, and how many of G's steps it has averaged.
  std::vector<torch::Tensor> ema;
  int64_t ema_updates = 0;

  // The task's step.
  void (*step)(ds_model& m, const torch::Tensor& x, const ds_step_input& in,
               ds_step_log* out) = nullptr;

  // Discriminator balancing (see model.hpp): D pauses when it wins too
  // easily and G pauses when D is hopelessly behind.
  bool train_d = true;
  bool train_g = true;
  int steps_since_trim = 0;
  // Draws the VAE's reparameterisation noise; its state is checkpointed so
  // that a resumed run draws what the uninterrupted one would have.
  at::Generator noise = at::detail::createCPUGenerator();
  // This process's rows of the global batch and the dropout generator.
  std::shared_ptr<deepsim::BatchRows> rows = std::make_shared<deepsim::BatchRows>();

  // Data-parallel training: the group (not owned), and whether this
  // process asked it to stop after the current step.
  ds_group* group = nullptr;
  bool stop_asked = false;
  double share = 1;  // this process's fraction of the global batch

  // The weight the config gives a loss term, 0 when it names none.
  double weight(const char* name) const {
    for (int32_t i = 0; i < cfg.n_weights; i++)
      if (std::strncmp(cfg.weights[i].name, name, DS_NAME_LEN) == 0)
        return cfg.weights[i].value;
    return 0;
  }
};
