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
typedef struct ds_comparator ds_comparator;
typedef struct ds_group ds_group;

/* ---- comparators ---- */

/* input_size: the side a comparator resizes its input to. */
enum {
  DS_INPUT_OWN = 0,     /* the architecture's own input size */
  DS_INPUT_NATIVE = -1  /* no resizing: the input's own size */
};

/* How a network's weights expect their input, which the caller hands over
 * as RGB in [-1,1]. */
enum ds_norm {
  DS_NORM_IMAGENET = 0, /* [0,1], then ImageNet's per-channel mean and std */
  DS_NORM_UNIT = 1,     /* [0,1]: 8-bit values / 255 */
  DS_NORM_SIGNED = 2    /* [-1,1], as it comes */
};

/* A network given as a graph of layers (arch "graph"), as imported from a
 * Keras model: each layer computes one op from earlier layers' outputs.
 * Parameters are named "<name>.weight", "<name>.bias" and, for batch norm,
 * "<name>.running_mean" and "<name>.running_var", in PyTorch's layouts. */
enum ds_op {
  DS_OP_INPUT = 0,
  DS_OP_ZERO_PAD,       /* pad */
  DS_OP_CONV,           /* kernel, stride, dilation, pad or same, channels, bias */
  DS_OP_DEPTHWISE_CONV, /* the same, out = in * multiplier */
  DS_OP_BATCH_NORM,     /* epsilon, scale (has gamma), center (has beta) */
  DS_OP_RELU,           /* max_value (< 0: none), negative_slope, threshold */
  DS_OP_ACTIVATION,     /* activation */
  DS_OP_ADD,
  DS_OP_CONCAT,         /* along channels */
  DS_OP_MAX_POOL,       /* kernel, stride, pad or same */
  DS_OP_AVG_POOL,       /* the same; padded cells are not counted */
  DS_OP_GLOBAL_AVG_POOL,
  DS_OP_FLATTEN,        /* in Keras' order: rows, columns, channels */
  DS_OP_DENSE,          /* channels, bias */
  DS_OP_IDENTITY        /* dropout, at inference */
};

enum ds_activation {
  DS_ACT_LINEAR = 0,
  DS_ACT_RELU,
  DS_ACT_SOFTMAX,
  DS_ACT_SIGMOID,
  DS_ACT_TANH
};

enum { DS_MAX_INPUTS = 8 };

typedef struct {
  const char *name;
  int32_t op;         /* enum ds_op */
  int32_t activation; /* enum ds_activation, applied after the op */
  int32_t n_inputs;
  int32_t inputs[DS_MAX_INPUTS]; /* indices of earlier layers */
  int32_t kernel[2], stride[2], dilation[2];
  int32_t pad[4]; /* top, bottom, left, right */
  int32_t same;   /* TF's "same" padding, from the input's size */
  int32_t in_channels, out_channels, multiplier;
  int32_t bias, scale, center;
  double epsilon;
  double max_value;
  double negative_slope, threshold;
} ds_layer;

/* arch: a registered architecture ("alexnet", "vgg16", "exemplar"),
 * "torchscript" or "graph". layer: the layer whose output is the features,
 * or several joined by '+', or "" for the architecture's default taps; for
 * torchscript a submodule name or "" for forward. weights: a state dict
 * file (torch.save format) or, for torchscript, the module file;
 * weights_data/weights_len: a state dict in memory instead. With neither,
 * random weights from seed (not for torchscript or graph). input_size: > 0,
 * or DS_INPUT_OWN or DS_INPUT_NATIVE. graph, norm and own_size describe an
 * arch "graph" network. */
typedef struct {
  const char *arch;
  const char *layer;
  const char *weights;
  const char *weights_data;
  int64_t weights_len;
  int64_t seed;
  int32_t input_size;
  const ds_layer *graph;
  int32_t n_graph;
  int32_t norm;     /* enum ds_norm */
  int32_t own_size; /* the input side its weights were trained at */
} ds_comparator_spec;

/* The input side an architecture's weights were trained at; an error names
 * the known architectures. */
char *ds_arch_input_size(const char *arch, int32_t *size);

char *ds_comparator_new(const ds_comparator_spec *spec, ds_comparator **out);
void ds_comparator_free(ds_comparator *c);

/* Features of n images (NCHW floats in [-1,1]); *out is malloc'd and shape
 * gets 4 dims (fully connected layers give n x d x 1 x 1; several taps give
 * each image's taps flattened and joined, n x d x 1 x 1). */
char *ds_comparator_features(ds_comparator *c, const float *x, int64_t n,
                             int64_t h, int64_t w, float **out,
                             int64_t shape[4]);

/* The perceptual distance of n pairs of images (a[i], b[i]), LPIPS without
 * its learned weights: at each tap the features are scaled to unit length
 * over channels at every position, their squared differences are summed
 * over channels and averaged over positions, and the taps' distances are
 * summed. out gets n values. */
char *ds_comparator_distance(ds_comparator *c, const float *a, const float *b,
                             int64_t n, int64_t h, int64_t w, double *out);

/* Checks that a state dict file fits an architecture, every key and shape.
 * arch may be "" to detect it from the keys; *arch_out (malloc'd) names
 * the architecture it fits. */
char *ds_state_dict_check(const char *path, const char *arch, char **arch_out);

/* ---- trained models ---- */

enum ds_task {
  DS_TASK_AUTOENCODER = 0,
  DS_TASK_COMPARATOR = 1,
  DS_TASK_VAE = 2,
  DS_TASK_INVERSION = 3 /* G inverts a fixed target network's features */
};

/* How the generator doubles its resolution. */
enum ds_upsample { DS_UPSAMPLE_DECONV = 0, DS_UPSAMPLE_RESIZE = 1 };

/* The precision of training: float32 throughout; bfloat16 autocast for
 * the forward passes with float32 weights, optimizer state and losses; or
 * float64 weights, optimizer state and passes (the fixed comparator and
 * target still compute in float32). */
enum ds_precision { DS_PRECISION_FLOAT32 = 0, DS_PRECISION_BF16 = 1, DS_PRECISION_FLOAT64 = 2 };

/* The memory layout of the trained networks' weights and activations:
 * which is faster depends on the machine (runner measures it). */
enum ds_layout { DS_LAYOUT_CHANNELS_LAST = 0, DS_LAYOUT_NCHW = 1 };

enum { DS_NAME_LEN = 24 };

/* A named value: a loss weight by the name the step looks it up under
 * ("feat", "adv", "img", "match"; one the config does not name is 0), or a
 * term a step logged ("loss_feat", "kl", "accuracy"). */
typedef struct {
  char name[DS_NAME_LEN];
  double value;
} ds_term;

/* Everything needed to build the networks and their optimizers. */
typedef struct {
  int32_t task;
  int32_t size;          /* crop size in pixels; size/8 must be a power of two */
  int32_t code_channels; /* channels of the 8 x 8 code; for the VAE, of the latent */
  int32_t upsample;      /* enum ds_upsample */
  int32_t classes;       /* surrogate classes (comparator task) */
  int32_t precision;     /* enum ds_precision */
  int32_t layout;        /* enum ds_layout */
  /* VQGAN's adaptive adversarial weight: the "adv" weight multiplies
   * ||grad L_rec|| / ||grad L_adv|| at G's output layer, L_rec being the
   * weighted image and feature terms; logged as "adv_weight". */
  int32_t adv_adaptive;
  /* Autoencoder and VAE: D judges each 26 px patch (PatchGAN) instead of
   * the whole crop. */
  int32_t patch_discriminator;
  int32_t n_weights;
  const ds_term *weights; /* n_weights of them, read while building */
  double lr;
  double lr_d; /* D's learning rate; 0: lr */
  double beta1;
  double beta2;
  double weight_decay;
  /* Autoencoder, VAE and inversion: the decay of an exponential moving
   * average of E's and G's weights, which reconstructions, codes and
   * samples then use; 0: none. */
  double ema;
  int64_t seed;
} ds_config;

/* One training step's input. x: n*3*size*size floats, NCHW, pixels in
 * [-1,1]. labels: n class indices for the comparator task, NULL otherwise.
 * kl_weight weighs the VAE's KL term on this step (the caller owns its
 * warm-up schedule). In a group (ds_model_join), x holds rows
 * [offset, offset+n) of a global batch of global_n; 0 means n. stop: this
 * process asks the group to stop after this step. The caller owns D's
 * warm-up schedule too, and the learning rates' schedule: lr_scale
 * multiplies every optimiser's configured rate on this step (0 means 1). */
typedef struct {
  const float *x;
  const int64_t *labels;
  int64_t n;
  double kl_weight;
  int64_t offset;
  int64_t global_n;
  int32_t stop;
  int32_t d_warmup; /* D's warm-up: D neither learns nor judges G's output */
  double lr_scale;
} ds_step_input;

/* What a step measured: n_terms named values (losses before weighting,
 * accuracies) in the order the step logged them, plus whether the
 * balancing rule let G and D learn on the step. terms is malloc'd: the
 * caller frees it with ds_free, also when the step fails. */
typedef struct {
  ds_term *terms;
  int32_t n_terms;
  int32_t updated_g;
  int32_t updated_d;
  int32_t stop; /* some process of the group asked to stop */
} ds_step_log;

/* comp and target are shared with the caller, who may free their handles
 * at any time. comp is the feature loss's comparator; it may be NULL when
 * the loss is off or for the comparator task. target is the network whose
 * features an inversion model inverts (its one tap), NULL otherwise. */
char *ds_model_new(const ds_config *cfg, ds_comparator *comp,
                   ds_comparator *target, ds_model **out);
void ds_model_free(ds_model *m);

char *ds_model_train_step(ds_model *m, const ds_step_input *in,
                          ds_step_log *out);

/* Comparator task: the step's terms on a batch, in eval mode. */
char *ds_model_evaluate(ds_model *m, const ds_step_input *in,
                        ds_step_log *out);

/* x and out: n*3*h*w floats in [-1,1]; h and w must be multiples of the
 * encoder's downsampling factor (an inversion model: h = w = size, and it
 * inverts the target's features of x). Runs in eval mode without
 * autograd. */
char *ds_model_reconstruct(ds_model *m, const float *x, int64_t n, int64_t h,
                           int64_t w, float *out);

/* The code of n images of h x w (multiples of the downsampling factor f):
 * the VAE's posterior mean, or the autoencoder's code. out holds
 * n*code_channels*(h/f)*(w/f) floats. */
char *ds_model_encode(ds_model *m, const float *x, int64_t n, int64_t h,
                      int64_t w, float *out);

/* Decodes n codes of code_channels x zh x zw into n*3*(zh*f)*(zw*f) pixels
 * in [-1,1]. */
char *ds_model_decode(ds_model *m, const float *z, int64_t n, int64_t zh,
                      int64_t zw, float *out);

/* Inversion: the shape (C, H, W) of the features G inverts; fully
 * connected layers give D x 1 x 1. */
char *ds_model_feature_shape(ds_model *m, int64_t shape[3]);

/* Inversion: n images (n*3*size*size floats in [-1,1]) from n features of
 * the shape above. */
char *ds_model_invert(ds_model *m, const float *f, int64_t n, float *out);

/* Serialises the networks, the optimizer state and the balancing state as a
 * PyTorch state dict (torch.save's zip format). *buf is malloc'd. */
char *ds_model_save(ds_model *m, int64_t step, char **buf, int64_t *len);
char *ds_model_load(ds_model *m, const char *buf, int64_t len, int64_t *step);

/* The trained generator's weights alone (E's and G's, the averaged ones
 * where the run keeps a moving average), as a state dict, for inference.
 * ds_model_load_weights reads E's and G's weights from such a state dict
 * or a checkpoint; a moving average, if the model keeps one, starts at
 * them. */
char *ds_model_save_weights(ds_model *m, char **buf, int64_t *len);
char *ds_model_load_weights(ds_model *m, const char *buf, int64_t len);

/* Comparator task: the trained feature layers alone, as a state dict that
 * ds_comparator_new loads with arch "exemplar". */
char *ds_model_export_comparator(ds_model *m, char **buf, int64_t *len);

/* Number of parameters of the trained networks (for logs and tests). */
int64_t ds_model_num_params(ds_model *m);

/* The up-convolution against ConvTranspose2d(in, out, 4, stride 2,
 * padding 1) with the same parameters, on seeded float64 n x in x h x w
 * input (channels-last when channels_last is set): err gets the largest
 * absolute differences of the output, the input's gradient, the weight's
 * and the bias's, for a seeded upstream gradient (for tests). */
char *ds_upconv_check(int64_t in, int64_t out, int64_t n, int64_t h, int64_t w,
                      int64_t seed, int32_t channels_last, double err[4]);

/* ---- data-parallel training (c10d, Gloo) ---- */

/* One process's place in a group of world_size processes. Rendezvous is
 * through a store: a FileStore at store_file when it is not empty (one
 * machine), else a TCPStore at master_addr:master_port that rank 0 serves
 * when host_store is set (otherwise an agent such as torchrun's does),
 * with keys under store_prefix. Gloo binds the network interface ifname when it is not empty,
 * the loopback address when master_addr is a loopback address, else the
 * address this machine's hostname resolves to. timeout_ms bounds the
 * rendezvous and every collective. */
typedef struct {
  int32_t rank;
  int32_t world_size;
  const char *master_addr;
  int32_t master_port;
  int32_t host_store;
  const char *store_prefix;
  const char *store_file;
  const char *ifname;
  int64_t timeout_ms;
} ds_group_spec;

char *ds_group_new(const ds_group_spec *spec, ds_group **out);
void ds_group_free(ds_group *g);

/* Rank 0's len bytes to every rank: *out (malloc'd) gets them. Other ranks
 * pass buf = NULL. */
char *ds_group_broadcast(ds_group *g, const char *buf, int64_t len, char **out,
                         int64_t *out_len);

/* Whether every rank passed the same value. */
char *ds_group_same(ds_group *g, int64_t value, int32_t *same);

/* Wall time spent in the training steps' all-reduces so far, and how many
 * there were. */
void ds_group_stats(ds_group *g, double *seconds, int64_t *calls);

/* Makes m train in g from now on: every rank takes rank 0's networks,
 * optimizer and balancing state, and rank 0's step, which *out_step gets;
 * gradients and logged terms are then averaged over the group each step.
 * g must outlive m's training. */
char *ds_model_join(ds_model *m, ds_group *g, int64_t step, int64_t *out_step);

void ds_set_num_threads(int32_t n);
/* The intra-op threads libtorch uses. */
int32_t ds_num_threads(void);

/* The BLAS kernel that libtorch's OpenBLAS runs (openblas_get_corename)
 * and its build (openblas_get_config); "" for each when the BLAS is not
 * OpenBLAS. The strings are static. */
void ds_blas_info(const char **core, const char **config);

void ds_free(void *p);

#ifdef __cplusplus
}
#endif

#endif
