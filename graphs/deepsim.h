/* The C ABI between Go and the libtorch networks.
 *
 * Rules: handles are opaque; every function that can fail returns NULL on
 * success or a malloc'd error string that the caller frees with ds_free.
 * No C++ exception ever leaves these functions. */
#ifndef DEEPSIM_H
#define DEEPSIM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ds_model ds_model;

enum ds_task { DS_TASK_AUTOENCODER = 0 };

/* Everything needed to build the networks and their optimizers. */
typedef struct {
  int32_t task;
  int32_t size;          /* crop size in pixels; size/8 must be a power of two */
  int32_t code_channels; /* channels of the size/8 x size/8 code */
  int32_t comparator_size; /* the comparator sees its input resized to this */
  double lambda_feat;
  double lambda_adv;
  double lambda_img;
  double lr;
  double beta1;
  double beta2;
  double weight_decay;
  int64_t seed;
  int64_t comparator_seed; /* seed of the random AlexNet comparator */
} ds_config;

/* One training step's losses, before weighting, plus the balancing state
 * that was in force for the step. */
typedef struct {
  double loss_feat;
  double loss_adv;
  double loss_img;
  double loss_discr;
  int32_t updated_g;
  int32_t updated_d;
} ds_losses;

char *ds_model_new(const ds_config *cfg, ds_model **out);
void ds_model_free(ds_model *m);

/* x: n*3*size*size floats, NCHW, pixels in [-1,1]. */
char *ds_model_train_step(ds_model *m, const float *x, int64_t n,
                          ds_losses *out);

/* x and out: n*3*h*w floats in [-1,1]; h and w must be multiples of the
 * encoder's downsampling factor. Runs in eval mode without autograd. */
char *ds_model_reconstruct(ds_model *m, const float *x, int64_t n, int64_t h,
                           int64_t w, float *out);

/* Serialises the networks, the optimizer state and the balancing state as a
 * PyTorch state dict (torch.save's zip format). *buf is malloc'd. */
char *ds_model_save(ds_model *m, int64_t step, char **buf, int64_t *len);
char *ds_model_load(ds_model *m, const char *buf, int64_t len, int64_t *step);

/* Number of parameters of the trained networks (for logs and tests). */
int64_t ds_model_num_params(ds_model *m);

void ds_set_num_threads(int32_t n);
void ds_free(void *p);

#ifdef __cplusplus
}
#endif

#endif
