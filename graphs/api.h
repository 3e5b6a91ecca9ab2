// Private to graphs/: the guard that keeps C++ exceptions out of Go, and the
// engine functions that the C ABI (abi.cpp) calls. Only C and standard
// types appear here, so abi.cpp compiles without libtorch's heavy headers.
#pragma once

#include <c10/util/Exception.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "deepsim.h"

namespace deepsim {

inline char* dup_string(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  if (p) std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

// Runs f and turns every exception into an error string: nothing may unwind
// into Go, where it would abort the process. It first gives the calling
// thread the intra-op thread count (sync_threads).
void sync_threads();

template <typename Fn>
char* guarded(Fn&& f) {
  try {
    sync_threads();
    f();
    return nullptr;
  } catch (const c10::Error& e) {
    return dup_string(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return dup_string(e.what());
  } catch (...) {
    return dup_string("unknown C++ exception");
  }
}

// Copies bytes into a malloc'd buffer that Go frees with ds_free.
inline void to_malloc(const std::vector<char>& bytes, char** buf, int64_t* len) {
  char* p = static_cast<char*>(std::malloc(bytes.size()));
  if (!p) throw std::bad_alloc();
  std::memcpy(p, bytes.data(), bytes.size());
  *buf = p;
  *len = static_cast<int64_t>(bytes.size());
}

// ---- comparators.hpp ----

int32_t arch_input_size(const std::string& arch);
ds_comparator* new_comparator(const ds_comparator_spec& spec);
void free_comparator(ds_comparator* c);
// Features of n images of h x w; *out is malloc'd, shape gets 4 dims.
void comparator_features(ds_comparator& c, const float* x, int64_t n, int64_t h,
                         int64_t w, float** out, int64_t shape[4]);
void comparator_distance(ds_comparator& c, const float* a, const float* b, int64_t n,
                         int64_t h, int64_t w, double* out);
// Checks a state dict file against arch ("" detects it) and returns arch.
std::string check_state_dict(const std::string& path, std::string arch);

// ---- model.hpp ----

ds_model* new_model(const ds_config& cfg, ds_comparator* comp, ds_comparator* target);
void free_model(ds_model* m);
void train_step(ds_model& m, const ds_step_input& in, ds_step_log* out);
void evaluate(ds_model& m, const ds_step_input& in, ds_step_log* out);
void reconstruct(ds_model& m, const float* x, int64_t n, int64_t h, int64_t w,
                 float* out);
void encode(ds_model& m, const float* x, int64_t n, int64_t h, int64_t w,
            float* out);
void decode(ds_model& m, const float* z, int64_t n, int64_t zh, int64_t zw,
            float* out);
void feature_shape(ds_model& m, int64_t shape[3]);
void invert(ds_model& m, const float* f, int64_t n, float* out);
int64_t num_params(ds_model& m);
int64_t join_group(ds_model& m, ds_group& g, int64_t step);

// ---- checkpoint.hpp ----

std::vector<char> save_model(ds_model& m, int64_t step);
int64_t load_model(ds_model& m, const char* buf, int64_t len);
std::vector<char> export_comparator(ds_model& m);
std::vector<char> save_weights(ds_model& m);
void load_weights(ds_model& m, const char* buf, int64_t len);

// ---- selftest.hpp ----

void upconv_check(int64_t in, int64_t out, int64_t n, int64_t h, int64_t w, int64_t seed,
                  bool channels_last, double err[4]);

// ---- distributed.hpp ----

ds_group* new_group(const ds_group_spec& spec);
void free_group(ds_group* g);
int group_rank(const ds_group& g);
// Rank 0's bytes, on every rank.
std::vector<char> broadcast_bytes(ds_group& g, std::vector<char> bytes);
bool group_same(ds_group& g, int64_t value);
void group_stats(const ds_group& g, double* seconds, int64_t* calls);

// ---- device.hpp ----

void set_num_threads(int32_t n);
int32_t num_threads();

}  // namespace deepsim
