// The extern "C" functions of deepsim.h, in its order: each one catches
// everything and hands the work to the engine. This file sees no libtorch
// header (see api.h).
#include <dlfcn.h>

#include "api.h"

using deepsim::guarded;

extern "C" {

// ---- comparators ----

char* ds_arch_input_size(const char* arch, int32_t* size) {
  *size = 0;
  return guarded([&] { *size = deepsim::arch_input_size(arch ? arch : ""); });
}

char* ds_comparator_new(const ds_comparator_spec* spec, ds_comparator** out) {
  *out = nullptr;
  return guarded([&] { *out = deepsim::new_comparator(*spec); });
}

void ds_comparator_free(ds_comparator* c) { deepsim::free_comparator(c); }

char* ds_comparator_features(ds_comparator* c, const float* x, int64_t n,
                             int64_t h, int64_t w, float** out,
                             int64_t shape[4]) {
  *out = nullptr;
  return guarded([&] { deepsim::comparator_features(*c, x, n, h, w, out, shape); });
}

char* ds_comparator_distance(ds_comparator* c, const float* a, const float* b,
                             int64_t n, int64_t h, int64_t w, double* out) {
  return guarded([&] { deepsim::comparator_distance(*c, a, b, n, h, w, out); });
}

char* ds_state_dict_check(const char* path, const char* arch, char** arch_out) {
  *arch_out = nullptr;
  return guarded([&] {
    *arch_out = deepsim::dup_string(deepsim::check_state_dict(path, arch ? arch : ""));
  });
}

// ---- trained models ----

char* ds_model_new(const ds_config* cfg, ds_comparator* comp, ds_comparator* target,
                   ds_model** out) {
  *out = nullptr;
  return guarded([&] { *out = deepsim::new_model(*cfg, comp, target); });
}

void ds_model_free(ds_model* m) { deepsim::free_model(m); }

char* ds_model_train_step(ds_model* m, const ds_step_input* in, ds_step_log* out) {
  return guarded([&] { deepsim::train_step(*m, *in, out); });
}

char* ds_model_evaluate(ds_model* m, const ds_step_input* in, ds_step_log* out) {
  return guarded([&] { deepsim::evaluate(*m, *in, out); });
}

char* ds_model_reconstruct(ds_model* m, const float* x, int64_t n, int64_t h,
                           int64_t w, float* out) {
  return guarded([&] { deepsim::reconstruct(*m, x, n, h, w, out); });
}

char* ds_model_encode(ds_model* m, const float* x, int64_t n, int64_t h,
                      int64_t w, float* out) {
  return guarded([&] { deepsim::encode(*m, x, n, h, w, out); });
}

char* ds_model_decode(ds_model* m, const float* z, int64_t n, int64_t zh,
                      int64_t zw, float* out) {
  return guarded([&] { deepsim::decode(*m, z, n, zh, zw, out); });
}

char* ds_model_feature_shape(ds_model* m, int64_t shape[3]) {
  return guarded([&] { deepsim::feature_shape(*m, shape); });
}

char* ds_model_invert(ds_model* m, const float* f, int64_t n, float* out) {
  return guarded([&] { deepsim::invert(*m, f, n, out); });
}

char* ds_model_save(ds_model* m, int64_t step, char** buf, int64_t* len) {
  *buf = nullptr;
  *len = 0;
  return guarded([&] { deepsim::to_malloc(deepsim::save_model(*m, step), buf, len); });
}

char* ds_model_load(ds_model* m, const char* buf, int64_t len, int64_t* step) {
  return guarded([&] { *step = deepsim::load_model(*m, buf, len); });
}

char* ds_model_save_weights(ds_model* m, char** buf, int64_t* len) {
  *buf = nullptr;
  *len = 0;
  return guarded([&] { deepsim::to_malloc(deepsim::save_weights(*m), buf, len); });
}

char* ds_model_load_weights(ds_model* m, const char* buf, int64_t len) {
  return guarded([&] { deepsim::load_weights(*m, buf, len); });
}

char* ds_model_export_comparator(ds_model* m, char** buf, int64_t* len) {
  *buf = nullptr;
  *len = 0;
  return guarded([&] { deepsim::to_malloc(deepsim::export_comparator(*m), buf, len); });
}

int64_t ds_model_num_params(ds_model* m) { return deepsim::num_params(*m); }

char* ds_upconv_check(int64_t in, int64_t out, int64_t n, int64_t h, int64_t w, int64_t seed,
                      int32_t channels_last, double err[4]) {
  return guarded([&] { deepsim::upconv_check(in, out, n, h, w, seed, channels_last != 0, err); });
}

char* ds_group_new(const ds_group_spec* spec, ds_group** out) {
  *out = nullptr;
  return guarded([&] { *out = deepsim::new_group(*spec); });
}

void ds_group_free(ds_group* g) { deepsim::free_group(g); }

char* ds_group_broadcast(ds_group* g, const char* buf, int64_t len, char** out,
                         int64_t* out_len) {
  *out = nullptr;
  *out_len = 0;
  return guarded([&] {
    std::vector<char> bytes;
    if (buf) bytes.assign(buf, buf + len);
    deepsim::to_malloc(deepsim::broadcast_bytes(*g, std::move(bytes)), out, out_len);
  });
}

char* ds_group_same(ds_group* g, int64_t value, int32_t* same) {
  return guarded([&] { *same = deepsim::group_same(*g, value); });
}

void ds_group_stats(ds_group* g, double* seconds, int64_t* calls) {
  deepsim::group_stats(*g, seconds, calls);
}

char* ds_model_join(ds_model* m, ds_group* g, int64_t step, int64_t* out_step) {
  return guarded([&] { *out_step = deepsim::join_group(*m, *g, step); });
}

void ds_set_num_threads(int32_t n) { deepsim::set_num_threads(n); }

int32_t ds_num_threads(void) { return deepsim::num_threads(); }

void ds_blas_info(const char** core, const char** config) {
  // OpenBLAS exports these; looked up at run time, so that any BLAS links.
  using Name = char* (*)();
  auto corename = reinterpret_cast<Name>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  auto cfg = reinterpret_cast<Name>(dlsym(RTLD_DEFAULT, "openblas_get_config"));
  *core = corename ? corename() : "";
  *config = cfg ? cfg() : "";
}

void ds_free(void* p) { std::free(p); }

}  // extern "C"
