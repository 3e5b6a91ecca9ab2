package graphs

/*
#include <stdlib.h>
#include "deepsim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"unsafe"
)

// ComparatorSpec says how to build a comparator.
type ComparatorSpec struct {
	// Arch is a registered architecture ("alexnet", "vgg16", "exemplar"),
	// "torchscript" or "graph".
	Arch string
	// Layer is the layer whose output are the features, several joined by
	// '+', or "" for the architecture's default taps; for "torchscript" a
	// submodule, or "" for forward.
	Layer string
	// Weights is a state dict file (torch.save format), or the module file
	// for "torchscript"; WeightsData is a state dict in memory instead.
	// With neither, the weights are random from Seed.
	Weights     string
	WeightsData []byte
	Seed        int64
	// InputSize is the side the comparator resizes its input to: InputOwn
	// for the architecture's own, InputNative for none.
	InputSize int
	// A "graph" network: its layers, its input's normalisation and the
	// side its weights were trained at.
	Graph   []Layer
	Norm    Norm
	OwnSize int
}

// Special values of ComparatorSpec.InputSize.
const (
	InputOwn    = C.DS_INPUT_OWN
	InputNative = C.DS_INPUT_NATIVE
)

// ArchInputSize is the input side an architecture's weights were trained
// at; the error for an unknown one lists the known architectures.
func ArchInputSize(arch string) (int, error) {
	ca := C.CString(arch)
	defer C.free(unsafe.Pointer(ca))
	var size C.int32_t
	if msg := C.ds_arch_input_size(ca, &size); msg != nil {
		defer C.ds_free(unsafe.Pointer(msg))
		return 0, errors.New(C.GoString(msg))
	}
	return int(size), nil
}

// Comparator is a fixed network whose features define perceptual
// similarity. It takes [-1,1] pixels and applies its own normalisation.
type Comparator struct {
	ptr  *C.ds_comparator
	spec ComparatorSpec
}

// NewComparator builds a comparator.
func NewComparator(spec ComparatorSpec) (*Comparator, error) {
	cs := []*C.char{C.CString(spec.Arch), C.CString(spec.Layer), C.CString(spec.Weights)}
	defer func() {
		for _, p := range cs {
			C.free(unsafe.Pointer(p))
		}
	}()
	c := C.ds_comparator_spec{arch: cs[0], layer: cs[1], weights: cs[2],
		seed: C.int64_t(spec.Seed), input_size: C.int32_t(spec.InputSize),
		norm: C.int32_t(spec.Norm), own_size: C.int32_t(spec.OwnSize)}
	graph, freeGraph, err := cGraph(spec.Graph)
	if err != nil {
		return nil, fmt.Errorf("build comparator: %w", err)
	}
	defer freeGraph()
	c.graph, c.n_graph = graph, C.int32_t(len(spec.Graph))
	if len(spec.WeightsData) > 0 {
		// A C copy: cgo forbids Go pointers inside the struct passed to C.
		data := C.CBytes(spec.WeightsData)
		defer C.free(data)
		c.weights_data = (*C.char)(data)
		c.weights_len = C.int64_t(len(spec.WeightsData))
	}
	var p *C.ds_comparator
	if err := errorFrom("build comparator", C.ds_comparator_new(&c, &p)); err != nil {
		return nil, err
	}
	return owned(&Comparator{ptr: p, spec: spec}), nil
}

// Close frees the comparator. Models built with it keep their own reference.
func (c *Comparator) Close() {
	release(c, &c.ptr, func(p *C.ds_comparator) { C.ds_comparator_free(p) })
}

// Features returns the comparator's features for n images of h x w (NCHW
// float32 in [-1,1]) and their shape (n, channels, height, width).
func (c *Comparator) Features(x []float32, n, h, w int) ([]float32, [4]int, error) {
	var shape [4]int
	if c.ptr == nil {
		return nil, shape, errors.New("features: comparator is closed")
	}
	if want := n * 3 * h * w; n <= 0 || len(x) != want {
		return nil, shape, fmt.Errorf("features: input has %d floats, want %d", len(x), want)
	}
	var out *C.float
	var cs [4]C.int64_t
	msg := C.ds_comparator_features(c.ptr, (*C.float)(&x[0]), C.int64_t(n), C.int64_t(h), C.int64_t(w), &out, &cs[0])
	runtime.KeepAlive(x)
	if err := errorFrom("features", msg); err != nil {
		return nil, shape, err
	}
	defer C.ds_free(unsafe.Pointer(out))
	total := 1
	for i := range shape {
		shape[i] = int(cs[i])
		if shape[i] < 1 || total > math.MaxInt32/shape[i] {
			return nil, shape, fmt.Errorf("features: the comparator gave shape %v", cs)
		}
		total *= shape[i]
	}
	if shape[0] != n {
		return nil, shape, fmt.Errorf("features: the comparator gave %d entries for %d images", shape[0], n)
	}
	f := make([]float32, total)
	copy(f, unsafe.Slice((*float32)(unsafe.Pointer(out)), total))
	return f, shape, nil
}

// maxProbe bounds MinSide's search: no network here needs more.
const maxProbe = 512

// MinSide is the smallest side of a square image whose features c
// computes at the image's own size: pooling and unpadded layers leave
// nothing of a smaller one (InceptionV3's taps need 75 px). It is found by
// trying, one forward pass of a blank image a try, so it is meant for a
// comparator built with InputNative (one that resizes takes any image).
func (c *Comparator) MinSide() (int, error) {
	var err error
	takes := func(side int) bool {
		_, _, err = c.Features(make([]float32, 3*side*side), 1, side, side)
		return err == nil
	}
	// Doubling to the first side it takes, then halving the interval.
	lo, hi := 1, 8
	for !takes(hi) {
		if hi >= maxProbe {
			return 0, fmt.Errorf("computes no features of an image of %d px: %w", maxProbe, err)
		}
		lo, hi = hi+1, hi*2
	}
	for lo < hi {
		if mid := (lo + hi) / 2; takes(mid) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return hi, nil
}

// Distance returns the perceptual distance of n pairs of images of h x w
// (a[i], b[i], NCHW float32 in [-1,1]): LPIPS without its learned weights.
// At each tap the features are scaled to unit length over channels at every
// position; their squared differences are summed over channels and averaged
// over positions, and the taps' distances are summed.
func (c *Comparator) Distance(a, b []float32, n, h, w int) ([]float64, error) {
	if c.ptr == nil {
		return nil, errors.New("distance: comparator is closed")
	}
	if want := n * 3 * h * w; n <= 0 || len(a) != want || len(b) != want {
		return nil, fmt.Errorf("distance: inputs have %d and %d floats, want %d", len(a), len(b), want)
	}
	out := make([]float64, n)
	msg := C.ds_comparator_distance(c.ptr, (*C.float)(&a[0]), (*C.float)(&b[0]), C.int64_t(n), C.int64_t(h), C.int64_t(w), (*C.double)(&out[0]))
	runtime.KeepAlive(a)
	runtime.KeepAlive(b)
	if err := errorFrom("distance", msg); err != nil {
		return nil, err
	}
	return out, nil
}

// CheckStateDict checks every key and shape of a state dict file against
// an architecture ("" detects it from the keys) and returns the
// architecture. The error names the first mismatch.
func CheckStateDict(path, arch string) (string, error) {
	cp, ca := C.CString(path), C.CString(arch)
	defer C.free(unsafe.Pointer(cp))
	defer C.free(unsafe.Pointer(ca))
	var out *C.char
	if err := errorFrom("check state dict", C.ds_state_dict_check(cp, ca, &out)); err != nil {
		return "", err
	}
	defer C.ds_free(unsafe.Pointer(out))
	return C.GoString(out), nil
}
