package graphs

/*
#include <stdlib.h>
#include "deepsim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"sort"
	"unsafe"
)

// Task selects which networks a Model holds and which step trains them.
type Task int

// Tasks known to the engine.
const (
	Autoencoder Task = C.DS_TASK_AUTOENCODER
	// ComparatorTask trains an Exemplar-CNN on surrogate classes.
	ComparatorTask Task = C.DS_TASK_COMPARATOR
	// VAE is the autoencoder with a Gaussian posterior and a KL term.
	VAE Task = C.DS_TASK_VAE
	// Inversion reconstructs images from a fixed target network's features.
	Inversion Task = C.DS_TASK_INVERSION
)

// Upsample is how the generator doubles its resolution.
type Upsample int

// Upsampling kinds.
const (
	// Deconv is the paper's transposed convolution (kernel 4, stride 2).
	Deconv Upsample = C.DS_UPSAMPLE_DECONV
	// Resize is nearest-neighbour resizing then a 3x3 convolution, free of
	// checkerboard artifacts.
	Resize Upsample = C.DS_UPSAMPLE_RESIZE
)

// Precision is the precision of a training step's forward passes.
type Precision int

// Precisions.
const (
	Float32 Precision = C.DS_PRECISION_FLOAT32
	// BF16 runs forward passes in bfloat16 autocast; weights, optimizer
	// state, losses and backward passes stay float32.
	BF16 Precision = C.DS_PRECISION_BF16
	// Float64 trains in double precision throughout; the comparator and
	// an inversion's target still compute in float32.
	Float64 Precision = C.DS_PRECISION_FLOAT64
)

// Layout is the memory layout of the trained networks' weights and
// activations.
type Layout int

// Layouts.
const (
	ChannelsLast Layout = C.DS_LAYOUT_CHANNELS_LAST
	NCHW         Layout = C.DS_LAYOUT_NCHW
)

// Config is everything the engine needs to build a model.
type Config struct {
	Task         Task
	Size         int // crop size; Size/8 must be a power of two
	CodeChannels int // channels of the 8 x 8 code (the VAE's latent)
	Upsample     Upsample
	Classes      int // surrogate classes, for ComparatorTask
	Precision    Precision
	Layout       Layout
	// AdaptiveAdv scales the "adv" weight by ||grad L_rec|| / ||grad L_adv||
	// at G's output layer (VQGAN's adaptive weight), logged as adv_weight.
	AdaptiveAdv bool
	// PatchD makes the autoencoder's and the VAE's D judge each 26 px patch
	// (PatchGAN) instead of the whole crop.
	PatchD bool
	// Weights are the loss terms' weights by the names the step looks them
	// up under ("feat", "adv", "img", "match"); a term without one is off.
	Weights      map[string]float64
	LR           float64
	LRD          float64 // D's learning rate; 0: LR
	Beta1, Beta2 float64
	WeightDecay  float64
	// EMA is the decay of a moving average of E's and G's weights, which
	// Reconstruct, Encode, Decode and Invert then use; 0: none.
	EMA  float64
	Seed int64
}

// Term is one named value a training step measured: a loss term before
// weighting, or an accuracy.
type Term struct {
	Name  string
	Value float64
}

// StepLog is what one training step measured, in the order it logged it.
type StepLog struct {
	Terms []Term
	// UpdatedG and UpdatedD tell whether the balancing rule let G and D
	// learn on this step.
	UpdatedG, UpdatedD bool
	// Stop tells that some process of the group asked to stop after this
	// step (Step.Stop); alone, that this one did.
	Stop bool
}

// Get returns the named term, 0 when the step does not log it.
func (l StepLog) Get(name string) float64 {
	for _, t := range l.Terms {
		if t.Name == name {
			return t.Value
		}
	}
	return 0
}

// Model is an opaque handle on the C++ networks and optimizers. It is not
// safe for concurrent use. Close releases it.
type Model struct {
	ptr   *C.ds_model
	cfg   Config
	group *Group // the group it trains in, nil for one process
}

var errClosed = errors.New("graphs: model is closed")

// NewModel builds the networks of cfg with freshly initialised weights.
// comp is the comparator of the feature loss; it may be nil when the loss
// has no feature term. target is the network an Inversion model inverts,
// tapped at one layer; nil for other tasks. The model keeps its own
// references: comp and target may be closed at any time.
func NewModel(cfg Config, comp, target *Comparator) (*Model, error) {
	c := C.ds_config{
		task:                C.int32_t(cfg.Task),
		size:                C.int32_t(cfg.Size),
		code_channels:       C.int32_t(cfg.CodeChannels),
		upsample:            C.int32_t(cfg.Upsample),
		classes:             C.int32_t(cfg.Classes),
		precision:           C.int32_t(cfg.Precision),
		layout:              C.int32_t(cfg.Layout),
		adv_adaptive:        cbool(cfg.AdaptiveAdv),
		patch_discriminator: cbool(cfg.PatchD),
		lr:                  C.double(cfg.LR),
		lr_d:                C.double(cfg.LRD),
		beta1:               C.double(cfg.Beta1),
		beta2:               C.double(cfg.Beta2),
		weight_decay:        C.double(cfg.WeightDecay),
		ema:                 C.double(cfg.EMA),
		seed:                C.int64_t(cfg.Seed),
	}
	names := make([]string, 0, len(cfg.Weights))
	for name := range cfg.Weights {
		names = append(names, name)
	}
	sort.Strings(names)
	// C memory: cgo forbids passing a Go pointer inside a struct.
	weights := (*C.ds_term)(C.calloc(C.size_t(max(len(names), 1)), C.size_t(unsafe.Sizeof(C.ds_term{}))))
	defer C.free(unsafe.Pointer(weights))
	for i, name := range names {
		if len(name) >= C.DS_NAME_LEN {
			return nil, fmt.Errorf("build model: loss weight name %q is too long", name)
		}
		w := (*C.ds_term)(unsafe.Add(unsafe.Pointer(weights), i*int(unsafe.Sizeof(C.ds_term{}))))
		for j := range len(name) {
			w.name[j] = C.char(name[j])
		}
		w.value = C.double(cfg.Weights[name])
	}
	c.weights = weights
	c.n_weights = C.int32_t(len(names))
	var cp, tp *C.ds_comparator
	for _, x := range []struct {
		c   *Comparator
		out **C.ds_comparator
	}{{comp, &cp}, {target, &tp}} {
		if x.c != nil {
			if x.c.ptr == nil {
				return nil, errors.New("build model: comparator is closed")
			}
			*x.out = x.c.ptr
		}
	}
	var p *C.ds_model
	err := errorFrom("build model", C.ds_model_new(&c, cp, tp, &p))
	runtime.KeepAlive(comp)
	runtime.KeepAlive(target)
	if err != nil {
		return nil, err
	}
	return owned(&Model{ptr: p, cfg: cfg}), nil
}

// Close frees the model. It is safe to call more than once.
func (m *Model) Close() {
	release(m, &m.ptr, func(p *C.ds_model) { C.ds_model_free(p) })
}

// NumParams is the number of trained parameters (E, G and D).
func (m *Model) NumParams() int64 {
	if m.ptr == nil {
		return 0
	}
	return int64(C.ds_model_num_params(m.ptr))
}

// CheckUpConv runs the generator's up-convolution and ConvTranspose2d
// (kernel 4, stride 2, padding 1) with the same parameters on seeded
// float64 n x in x h x w input, in channels-last when asked, and returns
// the largest absolute differences of the output and of the gradients of
// the input, the weight and the bias. The tests prove with it that the
// two are one function.
func CheckUpConv(in, out, n, h, w int, seed int64, channelsLast bool) ([4]float64, error) {
	var e [4]C.double
	cl := C.int32_t(0)
	if channelsLast {
		cl = 1
	}
	if err := errorFrom("up-convolution check", C.ds_upconv_check(C.int64_t(in), C.int64_t(out), C.int64_t(n),
		C.int64_t(h), C.int64_t(w), C.int64_t(seed), cl, &e[0])); err != nil {
		return [4]float64{}, err
	}
	return [4]float64{float64(e[0]), float64(e[1]), float64(e[2]), float64(e[3])}, nil
}

// Step is one training step's input: n crops, NCHW float32 in [-1,1].
type Step struct {
	Batch  []float32
	N      int
	Labels []int64 // n class indices for ComparatorTask, else nil
	// KLWeight weighs the VAE's KL term on this step; the caller owns its
	// warm-up schedule.
	KLWeight float64
	// In a group (Join), Batch holds rows [Offset, Offset+N) of a global
	// batch of Global rows; 0 means N.
	Offset, Global int
	// Stop asks the group to stop after this step.
	Stop bool
	// DWarmup: D neither learns nor judges G on this step; the caller owns
	// the warm-up's schedule.
	DWarmup bool
	// LRScale multiplies every optimiser's configured learning rate on this
	// step, in (0, 1]; 0 means 1. The caller owns the schedule.
	LRScale float64
}

// cbool is a C flag.
func cbool(b bool) C.int32_t {
	if b {
		return 1
	}
	return 0
}

// TrainStep runs one optimisation step and returns what it measured.
func (m *Model) TrainStep(s Step) (StepLog, error) {
	return m.step("train step", true, s)
}

// Evaluate returns the loss and accuracy of a ComparatorTask model on a
// labelled batch, without training.
func (m *Model) Evaluate(batch []float32, labels []int64, n int) (StepLog, error) {
	return m.step("evaluate", false, Step{Batch: batch, N: n, Labels: labels})
}

func (m *Model) step(op string, train bool, s Step) (StepLog, error) {
	batch, labels, n := s.Batch, s.Labels, s.N
	if m.ptr == nil {
		return StepLog{}, errClosed
	}
	if want := n * 3 * m.cfg.Size * m.cfg.Size; n <= 0 || len(batch) != want {
		return StepLog{}, fmt.Errorf("%s: batch has %d floats, want %d (n=%d, size=%d)", op, len(batch), want, n, m.cfg.Size)
	}
	// cgo forbids Go pointers inside a struct passed to C: the input's
	// buffers are pinned for the call instead.
	var pin runtime.Pinner
	defer pin.Unpin()
	pin.Pin(&batch[0])
	in := C.ds_step_input{x: (*C.float)(&batch[0]), n: C.int64_t(n), kl_weight: C.double(s.KLWeight),
		offset: C.int64_t(s.Offset), global_n: C.int64_t(s.Global)}
	in.d_warmup = cbool(s.DWarmup)
	in.lr_scale = C.double(s.LRScale)
	if s.Stop {
		in.stop = 1
	}
	if labels != nil {
		if len(labels) != n {
			return StepLog{}, fmt.Errorf("%s: %d labels for %d images", op, len(labels), n)
		}
		pin.Pin(&labels[0])
		in.labels = (*C.int64_t)(&labels[0])
	}
	var l C.ds_step_log
	var msg *C.char
	if train {
		msg = C.ds_model_train_step(m.ptr, &in, &l)
	} else {
		msg = C.ds_model_evaluate(m.ptr, &in, &l)
	}
	defer C.ds_free(unsafe.Pointer(l.terms))
	if m.group != nil {
		op = m.group.op(op)
	}
	if err := errorFrom(op, msg); err != nil {
		return StepLog{}, err
	}
	out := StepLog{UpdatedG: l.updated_g != 0, UpdatedD: l.updated_d != 0, Stop: l.stop != 0}
	if l.n_terms > 0 {
		for _, t := range unsafe.Slice(l.terms, int(l.n_terms)) {
			out.Terms = append(out.Terms, Term{Name: C.GoString(&t.name[0]), Value: float64(t.value)})
		}
	}
	return out, nil
}

// Reconstruct runs E then G on n images of h x w (NCHW float32 in [-1,1])
// and returns the outputs in the same layout. h and w must be multiples of
// Factor.
func (m *Model) Reconstruct(x []float32, n, h, w int) ([]float32, error) {
	if m.ptr == nil {
		return nil, errClosed
	}
	if want := n * 3 * h * w; n <= 0 || len(x) != want {
		return nil, fmt.Errorf("reconstruct: input has %d floats, want %d", len(x), want)
	}
	out := make([]float32, len(x))
	msg := C.ds_model_reconstruct(m.ptr, (*C.float)(&x[0]), C.int64_t(n), C.int64_t(h), C.int64_t(w), (*C.float)(&out[0]))
	runtime.KeepAlive(x)
	if err := errorFrom("reconstruct", msg); err != nil {
		return nil, err
	}
	return out, nil
}

// Factor is the encoder's total downsampling: inputs to Reconstruct and
// Encode must be multiples of it.
func (m *Model) Factor() int { return m.cfg.Size / 8 }

// CodeShape is the shape of one code (channels, height, width) for an
// image of h x w.
func (m *Model) CodeShape(h, w int) (c, ch, cw int) {
	return m.cfg.CodeChannels, h / m.Factor(), w / m.Factor()
}

// Encode returns the codes of n images of h x w: the VAE's posterior means,
// or the autoencoder's codes, n x CodeShape(h, w) floats.
func (m *Model) Encode(x []float32, n, h, w int) ([]float32, error) {
	if m.ptr == nil {
		return nil, errClosed
	}
	if want := n * 3 * h * w; n <= 0 || len(x) != want {
		return nil, fmt.Errorf("encode: input has %d floats, want %d", len(x), want)
	}
	c, ch, cw := m.CodeShape(h, w)
	out := make([]float32, n*c*ch*cw)
	msg := C.ds_model_encode(m.ptr, (*C.float)(&x[0]), C.int64_t(n), C.int64_t(h), C.int64_t(w), (*C.float)(&out[0]))
	runtime.KeepAlive(x)
	if err := errorFrom("encode", msg); err != nil {
		return nil, err
	}
	return out, nil
}

// Decode turns n codes of CodeChannels x zh x zw into images of
// (zh*Factor) x (zw*Factor), NCHW float32 in [-1,1].
func (m *Model) Decode(z []float32, n, zh, zw int) ([]float32, error) {
	if m.ptr == nil {
		return nil, errClosed
	}
	if want := n * m.cfg.CodeChannels * zh * zw; n <= 0 || zh <= 0 || zw <= 0 || len(z) != want {
		return nil, fmt.Errorf("decode: code has %d floats, want %d", len(z), want)
	}
	f := m.Factor()
	out := make([]float32, n*3*zh*f*zw*f)
	msg := C.ds_model_decode(m.ptr, (*C.float)(&z[0]), C.int64_t(n), C.int64_t(zh), C.int64_t(zw), (*C.float)(&out[0]))
	runtime.KeepAlive(z)
	if err := errorFrom("decode", msg); err != nil {
		return nil, err
	}
	return out, nil
}

// FeatureShape is the shape (C, H, W) of the target features an Inversion
// model inverts; fully connected layers give (D, 1, 1).
func (m *Model) FeatureShape() ([3]int, error) {
	var shape [3]int
	if m.ptr == nil {
		return shape, errClosed
	}
	var cs [3]C.int64_t
	if err := errorFrom("feature shape", C.ds_model_feature_shape(m.ptr, &cs[0])); err != nil {
		return shape, err
	}
	for i := range shape {
		shape[i] = int(cs[i])
	}
	return shape, nil
}

// Invert returns the images an Inversion model makes of n features of
// FeatureShape: n x 3 x Size x Size floats in [-1,1].
func (m *Model) Invert(f []float32, n int) ([]float32, error) {
	shape, err := m.FeatureShape()
	if err != nil {
		return nil, err
	}
	if want := n * shape[0] * shape[1] * shape[2]; n <= 0 || len(f) != want {
		return nil, fmt.Errorf("invert: %d floats for %d features of %v, want %d", len(f), n, shape, want)
	}
	out := make([]float32, n*3*m.cfg.Size*m.cfg.Size)
	msg := C.ds_model_invert(m.ptr, (*C.float)(&f[0]), C.int64_t(n), (*C.float)(&out[0]))
	runtime.KeepAlive(f)
	if err := errorFrom("invert", msg); err != nil {
		return nil, err
	}
	return out, nil
}

// Save serialises the model at the given step as a PyTorch state dict (the
// zip format of torch.save), including optimizer and balancing state.
func (m *Model) Save(step int64) ([]byte, error) {
	return m.bytesOf("save model", func(buf **C.char, n *C.int64_t) *C.char {
		return C.ds_model_save(m.ptr, C.int64_t(step), buf, n)
	})
}

// bytesOf runs an engine function that writes malloc'd bytes into buf
// and n, and takes them into Go memory.
func (m *Model) bytesOf(op string, f func(buf **C.char, n *C.int64_t) *C.char) ([]byte, error) {
	if m.ptr == nil {
		return nil, errClosed
	}
	var buf *C.char
	var n C.int64_t
	if err := errorFrom(op, f(&buf, &n)); err != nil {
		return nil, err
	}
	return takeBytes(buf, n), nil
}

// Load restores a state written by Save and returns its step. After a failed
// Load the model's weights are undefined: discard it.
func (m *Model) Load(state []byte) (int64, error) {
	if m.ptr == nil {
		return 0, errClosed
	}
	if len(state) == 0 {
		return 0, errors.New("load model: empty checkpoint")
	}
	var step C.int64_t
	msg := C.ds_model_load(m.ptr, (*C.char)(unsafe.Pointer(&state[0])), C.int64_t(len(state)), &step)
	runtime.KeepAlive(state)
	if err := errorFrom("load model", msg); err != nil {
		return 0, err
	}
	return int64(step), nil
}

// SaveWeights returns the generator's weights alone (E's and G's, the
// averaged ones where the run keeps a moving average): what inference
// needs, a few MB.
func (m *Model) SaveWeights() ([]byte, error) {
	return m.bytesOf("save weights", func(buf **C.char, n *C.int64_t) *C.char {
		return C.ds_model_save_weights(m.ptr, buf, n)
	})
}

// LoadWeights reads E's and G's weights from weights SaveWeights wrote or
// a checkpoint; a moving average, where the model keeps one, starts at
// them.
func (m *Model) LoadWeights(b []byte) error {
	if m.ptr == nil {
		return errClosed
	}
	if len(b) == 0 {
		return errors.New("load weights: empty file")
	}
	msg := C.ds_model_load_weights(m.ptr, (*C.char)(unsafe.Pointer(&b[0])), C.int64_t(len(b)))
	runtime.KeepAlive(b)
	return errorFrom("load weights", msg)
}

// ExportComparator returns a ComparatorTask model's feature layers as a
// state dict that an "exemplar" Comparator loads.
func (m *Model) ExportComparator() ([]byte, error) {
	return m.bytesOf("export comparator", func(buf **C.char, n *C.int64_t) *C.char {
		return C.ds_model_export_comparator(m.ptr, buf, n)
	})
}
