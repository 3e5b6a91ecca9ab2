package graphs

/*
#include <stdlib.h>
#include "deepsim.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Op is what one layer of a graph network computes.
type Op string

// The ops a graph network may use: those of the Keras layers deepsim
// imports (see pretrained/tfjs).
const (
	OpInput         Op = "input"
	OpZeroPad       Op = "zero_pad"
	OpConv          Op = "conv"
	OpDepthwiseConv Op = "depthwise_conv"
	OpBatchNorm     Op = "batch_norm"
	OpReLU          Op = "relu"
	OpActivation    Op = "activation"
	OpAdd           Op = "add"
	OpConcat        Op = "concat"
	OpMaxPool       Op = "max_pool"
	OpAvgPool       Op = "avg_pool"
	OpGlobalAvgPool Op = "global_avg_pool"
	OpFlatten       Op = "flatten"
	OpDense         Op = "dense"
	OpIdentity      Op = "identity"
)

var opCodes = map[Op]C.int32_t{
	OpInput: C.DS_OP_INPUT, OpZeroPad: C.DS_OP_ZERO_PAD, OpConv: C.DS_OP_CONV,
	OpDepthwiseConv: C.DS_OP_DEPTHWISE_CONV, OpBatchNorm: C.DS_OP_BATCH_NORM, OpReLU: C.DS_OP_RELU,
	OpActivation: C.DS_OP_ACTIVATION, OpAdd: C.DS_OP_ADD, OpConcat: C.DS_OP_CONCAT,
	OpMaxPool: C.DS_OP_MAX_POOL, OpAvgPool: C.DS_OP_AVG_POOL, OpGlobalAvgPool: C.DS_OP_GLOBAL_AVG_POOL,
	OpFlatten: C.DS_OP_FLATTEN, OpDense: C.DS_OP_DENSE, OpIdentity: C.DS_OP_IDENTITY,
}

// Activation is applied to a layer's output, by its Keras name ("" is
// linear).
type Activation string

// activationCodes are the activations a graph layer may apply.
var activationCodes = map[Activation]C.int32_t{
	"": C.DS_ACT_LINEAR, "linear": C.DS_ACT_LINEAR, "relu": C.DS_ACT_RELU,
	"softmax": C.DS_ACT_SOFTMAX, "sigmoid": C.DS_ACT_SIGMOID, "tanh": C.DS_ACT_TANH,
}

// Supported tells whether a graph layer may apply a.
func (a Activation) Supported() bool {
	_, ok := activationCodes[a]
	return ok
}

// MaxInputs is the most inputs one layer may have.
const MaxInputs = C.DS_MAX_INPUTS

// Layer is one layer of a graph network. Its parameters are named
// "NAME.weight", "NAME.bias" and, for batch norm, "NAME.running_mean" and
// "NAME.running_var", in PyTorch's layouts (convolutions out x in x kh x
// kw, depthwise (in*multiplier) x 1 x kh x kw, dense out x in).
type Layer struct {
	Name       string     `json:"name"`
	Op         Op         `json:"op"`
	Inputs     []int      `json:"inputs,omitempty"` // earlier layers, by index
	Activation Activation `json:"activation,omitempty"`
	Kernel     [2]int     `json:"kernel"`
	Stride     [2]int     `json:"stride"`
	Dilation   [2]int     `json:"dilation"`
	Pad        [4]int     `json:"pad"`  // top, bottom, left, right
	Same       bool       `json:"same"` // TensorFlow's "same" padding
	InChannels int        `json:"in_channels,omitempty"`
	// OutChannels of a convolution or dense layer.
	OutChannels int  `json:"out_channels,omitempty"`
	Multiplier  int  `json:"multiplier,omitempty"` // depthwise
	Bias        bool `json:"bias"`
	// Batch norm: whether it has gamma (Scale) and beta (Center), and its
	// epsilon.
	Scale   bool    `json:"scale"`
	Center  bool    `json:"center"`
	Epsilon float64 `json:"epsilon,omitempty"`
	// ReLU: the cap (negative: none), the slope below Threshold.
	MaxValue      float64 `json:"max_value"`
	NegativeSlope float64 `json:"negative_slope"`
	Threshold     float64 `json:"threshold"`
}

// Norm is how a network's weights expect their input, which deepsim
// hands over as RGB in [-1,1].
type Norm int

// Input normalisations.
const (
	// NormImageNet is [0,1] RGB less ImageNet's mean, over its std.
	NormImageNet Norm = C.DS_NORM_IMAGENET
	// NormUnit is [0,1]: 8-bit values over 255.
	NormUnit Norm = C.DS_NORM_UNIT
	// NormSigned is [-1,1].
	NormSigned Norm = C.DS_NORM_SIGNED
)

// cGraph copies layers into C memory for the spec of a graph comparator;
// free releases it.
func cGraph(layers []Layer) (p *C.ds_layer, free func(), err error) {
	if len(layers) == 0 {
		return nil, func() {}, nil
	}
	size := C.size_t(unsafe.Sizeof(C.ds_layer{})) * C.size_t(len(layers))
	mem := C.calloc(1, size)
	var names []*C.char
	free = func() {
		for _, n := range names {
			C.free(unsafe.Pointer(n))
		}
		C.free(mem)
	}
	out := unsafe.Slice((*C.ds_layer)(mem), len(layers))
	for i, l := range layers {
		op, ok := opCodes[l.Op]
		if !ok {
			free()
			return nil, nil, fmt.Errorf("layer %q: unknown op %q", l.Name, l.Op)
		}
		act, ok := activationCodes[l.Activation]
		if !ok {
			free()
			return nil, nil, fmt.Errorf("layer %q: unknown activation %q", l.Name, l.Activation)
		}
		if len(l.Inputs) > MaxInputs {
			free()
			return nil, nil, fmt.Errorf("layer %q: %d inputs, at most %d", l.Name, len(l.Inputs), MaxInputs)
		}
		name := C.CString(l.Name)
		names = append(names, name)
		c := &out[i]
		c.name, c.op, c.activation = name, op, act
		c.n_inputs = C.int32_t(len(l.Inputs))
		for k, in := range l.Inputs {
			c.inputs[k] = C.int32_t(in)
		}
		for k := range 2 {
			c.kernel[k], c.stride[k], c.dilation[k] = C.int32_t(l.Kernel[k]), C.int32_t(l.Stride[k]), C.int32_t(l.Dilation[k])
		}
		for k := range 4 {
			c.pad[k] = C.int32_t(l.Pad[k])
		}
		c.same = cBool(l.Same)
		c.in_channels, c.out_channels, c.multiplier = C.int32_t(l.InChannels), C.int32_t(l.OutChannels), C.int32_t(l.Multiplier)
		c.bias, c.scale, c.center = cBool(l.Bias), cBool(l.Scale), cBool(l.Center)
		c.epsilon, c.max_value = C.double(l.Epsilon), C.double(l.MaxValue)
		c.negative_slope, c.threshold = C.double(l.NegativeSlope), C.double(l.Threshold)
	}
	return (*C.ds_layer)(mem), free, nil
}

func cBool(b bool) C.int32_t {
	if b {
		return 1
	}
	return 0
}
