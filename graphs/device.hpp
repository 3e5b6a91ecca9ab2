// Compiled as part of engine.cpp, not on its own (see there).
// Where and how the engine computes: the device, the trained networks'
// type and memory layout, bfloat16 autocast, the allocator's tuning and
// libtorch's threads. A GPU path changes this part: best_device picks the
// device, and Autocast and the allocator's tuning are CPU's here.
#include <ATen/autocast_mode.h>
#include <malloc.h>

#include <atomic>

#include "engine.h"

namespace deepsim {

torch::Device best_device() {
  return torch::cuda::is_available() ? torch::Device(torch::kCUDA)
                                     : torch::Device(torch::kCPU);
}

namespace {

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

// The memory format of the trained convolutions and their inputs.
// oneDNN's convolutions run faster on channels-last on some machines and
// on NCHW on others. Adam's state follows the parameters' format;
// checkpoints are written contiguous all the same.
torch::MemoryFormat layout(const ds_model& m) {
  return m.cfg.layout == DS_LAYOUT_NCHW ? torch::MemoryFormat::Contiguous
                                        : torch::MemoryFormat::ChannelsLast;
}

// Moves a trained network to the model's device, type and layout.
void place(const ds_model& m, torch::nn::Module& mod) {
  mod.to(m.device, dtype(m));
  torch::NoGradGuard no_grad;
  for (auto& p : mod.parameters())
    if (p.dim() == 4) p.set_data(p.data().contiguous(layout(m)));
}

// By default glibc serves blocks above its mmap threshold (128 KiB at
// first; activations are megabytes) with mmap and unmaps them on free, and
// trims the heap's top after each large free, so a step faulted much of
// its activations' memory in anew: measured, a quarter of the step
// (docs/performance.md). Freed activations stay in the heap for the next
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

}  // namespace deepsim
