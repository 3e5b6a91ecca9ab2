package tfjs

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/deepsim/deepsim/graphs"
)

// kerasLayer is one entry of a Keras model_config's layers.
type kerasLayer struct {
	ClassName    string          `json:"class_name"`
	Name         string          `json:"name"`
	Config       json.RawMessage `json:"config"`
	InboundNodes json.RawMessage `json:"inbound_nodes"`
}

// layerConfig holds every field of the supported layers' configs that
// deepsim reads; a layer uses the ones its class has.
type layerConfig struct {
	Name            string          `json:"name"`
	BatchInputShape []*int          `json:"batch_input_shape"`
	DataFormat      string          `json:"data_format"`
	Padding         json.RawMessage `json:"padding"`
	Filters         int             `json:"filters"`
	KernelSize      []int           `json:"kernel_size"`
	Strides         []int           `json:"strides"`
	DilationRate    json.RawMessage `json:"dilation_rate"`
	Groups          int             `json:"groups"`
	DepthMultiplier int             `json:"depth_multiplier"`
	Activation      string          `json:"activation"`
	UseBias         *bool           `json:"use_bias"`
	Axis            json.RawMessage `json:"axis"`
	Epsilon         *float64        `json:"epsilon"`
	Center          *bool           `json:"center"`
	Scale           *bool           `json:"scale"`
	MaxValue        *float64        `json:"max_value"`
	NegativeSlope   float64         `json:"negative_slope"`
	Threshold       float64         `json:"threshold"`
	PoolSize        []int           `json:"pool_size"`
	Units           int             `json:"units"`
	KeepDims        bool            `json:"keepdims"`
}

// shape is a layer output's shape without the batch: [H, W, C] for images
// (H and W are -1 when the model does not fix its input size) or [D].
type shape []int

func (s shape) String() string {
	parts := make([]string, len(s))
	for i, d := range s {
		parts[i] = "?"
		if d >= 0 {
			parts[i] = fmt.Sprint(d)
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}

// weightSpec is what a layer needs from the weights manifest: the Keras
// variable name, its shape there, and where it goes in the state dict.
type weightSpec struct {
	variable string // kernel, bias, gamma, ...
	shape    []int  // Keras' shape
	param    string // weight, bias, running_mean, running_var
	convert  func(w []float32, shape []int) ([]float32, []int)
}

// converted is a layer in deepsim's graph form, its output shape and the
// weights it takes.
type converted struct {
	layer   graphs.Layer
	out     shape
	weights []weightSpec
}

var supported = []string{"InputLayer", "ZeroPadding2D", "Conv2D", "DepthwiseConv2D", "BatchNormalization",
	"ReLU", "Activation", "Add", "Concatenate", "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D",
	"Flatten", "Dense", "Dropout"}

// convert turns one Keras layer into a graph layer, given its inputs'
// shapes.
func convert(class string, c layerConfig, ins []shape) (converted, error) {
	out := converted{layer: graphs.Layer{Op: graphs.OpIdentity, MaxValue: -1}}
	l := &out.layer
	if c.DataFormat != "" && c.DataFormat != "channels_last" {
		return out, fmt.Errorf("data_format %q: only channels_last is supported", c.DataFormat)
	}
	one := func() (shape, error) {
		if len(ins) != 1 {
			return nil, fmt.Errorf("%s takes one input, has %d", class, len(ins))
		}
		return ins[0], nil
	}
	image := func() (shape, error) {
		in, err := one()
		if err == nil && len(in) != 3 {
			err = fmt.Errorf("%s needs an image-shaped input, gets %v", class, in)
		}
		return in, err
	}
	if c.Activation != "" {
		l.Activation = graphs.Activation(c.Activation)
		if !l.Activation.Supported() {
			return out, fmt.Errorf("activation %q is not supported (have linear, relu, softmax, sigmoid, tanh)", c.Activation)
		}
	}
	bias := c.UseBias == nil || *c.UseBias
	switch class {
	case "InputLayer":
		if len(c.BatchInputShape) != 4 && len(c.BatchInputShape) != 2 {
			return out, fmt.Errorf("batch_input_shape %v: want [batch, height, width, channels] or [batch, features]", dims(c.BatchInputShape))
		}
		l.Op = graphs.OpInput
		for _, d := range c.BatchInputShape[1:] {
			if d == nil {
				out.out = append(out.out, -1)
			} else {
				out.out = append(out.out, *d)
			}
		}
		if len(out.out) == 3 && out.out[2] != 3 {
			return out, fmt.Errorf("the input has %d channels: deepsim feeds RGB images", out.out[2])
		}
		return out, nil
	case "ZeroPadding2D":
		in, err := image()
		if err != nil {
			return out, err
		}
		p, err := padding2(c.Padding)
		if err != nil {
			return out, err
		}
		l.Op, l.Pad = graphs.OpZeroPad, p
		out.out = shape{grow(in[0], p[0]+p[1]), grow(in[1], p[2]+p[3]), in[2]}
		return out, nil
	case "Conv2D", "DepthwiseConv2D":
		in, err := image()
		if err != nil {
			return out, err
		}
		if c.Groups > 1 {
			return out, fmt.Errorf("grouped convolutions (groups %d) are not supported", c.Groups)
		}
		if err := window(l, c.KernelSize, c.Strides, c.DilationRate, c.Padding); err != nil {
			return out, err
		}
		l.InChannels, l.Bias = in[2], bias
		kh, kw := l.Kernel[0], l.Kernel[1]
		if class == "Conv2D" {
			if c.Filters < 1 {
				return out, fmt.Errorf("filters %d", c.Filters)
			}
			l.Op, l.OutChannels = graphs.OpConv, c.Filters
			out.weights = append(out.weights, weightSpec{"kernel", []int{kh, kw, in[2], c.Filters}, "weight", convKernel})
		} else {
			m := max(c.DepthMultiplier, 1)
			l.Op, l.Multiplier, l.OutChannels = graphs.OpDepthwiseConv, m, in[2]*m
			out.weights = append(out.weights, weightSpec{"depthwise_kernel", []int{kh, kw, in[2], m}, "weight", depthwiseKernel})
		}
		if bias {
			out.weights = append(out.weights, weightSpec{"bias", []int{l.OutChannels}, "bias", nil})
		}
		h, err := windowOut(in[0], l, 0)
		if err != nil {
			return out, err
		}
		w, err := windowOut(in[1], l, 1)
		out.out = shape{h, w, l.OutChannels}
		return out, err
	case "BatchNormalization":
		in, err := one()
		if err != nil {
			return out, err
		}
		if !lastAxis(c.Axis, len(in)) {
			return out, fmt.Errorf("axis %s: only the channel axis (-1) is supported", c.Axis)
		}
		ch := in[len(in)-1]
		l.Op, l.InChannels, l.Epsilon = graphs.OpBatchNorm, ch, 1e-3 // Keras' default epsilon
		if c.Epsilon != nil {
			l.Epsilon = *c.Epsilon
		}
		l.Scale, l.Center = c.Scale == nil || *c.Scale, c.Center == nil || *c.Center
		if l.Scale {
			out.weights = append(out.weights, weightSpec{"gamma", []int{ch}, "weight", nil})
		}
		if l.Center {
			out.weights = append(out.weights, weightSpec{"beta", []int{ch}, "bias", nil})
		}
		out.weights = append(out.weights, weightSpec{"moving_mean", []int{ch}, "running_mean", nil},
			weightSpec{"moving_variance", []int{ch}, "running_var", nil})
		out.out = in
		return out, nil
	case "ReLU":
		in, err := one()
		l.Op, l.NegativeSlope, l.Threshold = graphs.OpReLU, c.NegativeSlope, c.Threshold
		if c.MaxValue != nil {
			if *c.MaxValue < 0 {
				return out, fmt.Errorf("max_value %g is negative", *c.MaxValue)
			}
			l.MaxValue = *c.MaxValue
		}
		out.out = in
		return out, err
	case "Activation":
		in, err := one()
		l.Op, out.out = graphs.OpActivation, in
		if c.Activation == "" {
			return out, fmt.Errorf("Activation without an activation")
		}
		return out, err
	case "Dropout":
		in, err := one()
		l.Op, out.out = graphs.OpIdentity, in
		return out, err
	case "Add":
		if len(ins) < 2 {
			return out, fmt.Errorf("Add needs at least two inputs")
		}
		for _, in := range ins[1:] {
			if in.String() != ins[0].String() {
				return out, fmt.Errorf("Add of shapes %v and %v", ins[0], in)
			}
		}
		l.Op, out.out = graphs.OpAdd, ins[0]
		return out, nil
	case "Concatenate":
		if len(ins) < 2 {
			return out, fmt.Errorf("Concatenate needs at least two inputs")
		}
		if !lastAxis(c.Axis, len(ins[0])) {
			return out, fmt.Errorf("axis %s: only the channel axis (-1) is supported", c.Axis)
		}
		out.out = append(shape{}, ins[0]...)
		last := len(out.out) - 1
		for _, in := range ins[1:] {
			if len(in) != len(ins[0]) || (len(in) == 3 && (in[0] != ins[0][0] || in[1] != ins[0][1])) {
				return out, fmt.Errorf("Concatenate of shapes %v and %v", ins[0], in)
			}
			out.out[last] += in[last]
		}
		l.Op = graphs.OpConcat
		return out, nil
	case "MaxPooling2D", "AveragePooling2D":
		in, err := image()
		if err != nil {
			return out, err
		}
		strides := c.Strides
		if len(strides) == 0 {
			strides = c.PoolSize // Keras: strides default to the pool size
		}
		if err := window(l, c.PoolSize, strides, nil, c.Padding); err != nil {
			return out, err
		}
		l.Op = graphs.OpMaxPool
		if class == "AveragePooling2D" {
			l.Op = graphs.OpAvgPool
		}
		h, err := windowOut(in[0], l, 0)
		if err != nil {
			return out, err
		}
		w, err := windowOut(in[1], l, 1)
		out.out = shape{h, w, in[2]}
		return out, err
	case "GlobalAveragePooling2D":
		in, err := image()
		if err != nil {
			return out, err
		}
		if c.KeepDims {
			return out, fmt.Errorf("keepdims is not supported")
		}
		l.Op, out.out = graphs.OpGlobalAvgPool, shape{in[2]}
		return out, nil
	case "Flatten":
		in, err := one()
		if err != nil {
			return out, err
		}
		n := 1
		for _, d := range in {
			if d < 0 {
				n = -1
				break
			}
			n *= d
		}
		l.Op, out.out = graphs.OpFlatten, shape{n}
		return out, nil
	case "Dense":
		in, err := one()
		if err != nil {
			return out, err
		}
		if len(in) != 1 {
			return out, fmt.Errorf("Dense on a %d-dimensional input: flatten it first", len(in)+1)
		}
		if in[0] < 0 {
			return out, fmt.Errorf("Dense after an input of unknown size: give the model a fixed input size")
		}
		if c.Units < 1 {
			return out, fmt.Errorf("units %d", c.Units)
		}
		l.Op, l.InChannels, l.OutChannels, l.Bias = graphs.OpDense, in[0], c.Units, bias
		out.weights = append(out.weights, weightSpec{"kernel", []int{in[0], c.Units}, "weight", denseKernel})
		if bias {
			out.weights = append(out.weights, weightSpec{"bias", []int{c.Units}, "bias", nil})
		}
		out.out = shape{c.Units}
		return out, nil
	}
	return out, fmt.Errorf("layer class %s is not supported (supported: %s)", class, strings.Join(supported, ", "))
}

func dims(ds []*int) []any {
	out := make([]any, len(ds))
	for i, d := range ds {
		if d != nil {
			out[i] = *d
		}
	}
	return out
}

func grow(d, by int) int {
	if d < 0 {
		return d
	}
	return d + by
}

// padding2 reads ZeroPadding2D's padding: n, [h, w] or [[top, bottom],
// [left, right]].
func padding2(raw json.RawMessage) ([4]int, error) {
	var n int
	if json.Unmarshal(raw, &n) == nil {
		return [4]int{n, n, n, n}, nil
	}
	var hw []int
	if json.Unmarshal(raw, &hw) == nil && len(hw) == 2 {
		return [4]int{hw[0], hw[0], hw[1], hw[1]}, nil
	}
	var tb [][]int
	if json.Unmarshal(raw, &tb) == nil && len(tb) == 2 && len(tb[0]) == 2 && len(tb[1]) == 2 {
		return [4]int{tb[0][0], tb[0][1], tb[1][0], tb[1][1]}, nil
	}
	return [4]int{}, fmt.Errorf("padding %s: want n, [h, w] or [[top, bottom], [left, right]]", raw)
}

// window reads a convolution's or pooling's kernel, strides, dilation and
// padding ("valid" or "same").
func window(l *graphs.Layer, kernel, strides []int, dilation json.RawMessage, padding json.RawMessage) error {
	pair := func(v []int, what string, def int) ([2]int, error) {
		switch len(v) {
		case 0:
			return [2]int{def, def}, nil
		case 1:
			return [2]int{v[0], v[0]}, nil
		case 2:
			if v[0] < 1 || v[1] < 1 {
				return [2]int{}, fmt.Errorf("%s %v", what, v)
			}
			return [2]int{v[0], v[1]}, nil
		}
		return [2]int{}, fmt.Errorf("%s %v", what, v)
	}
	var err error
	if len(kernel) == 0 {
		return fmt.Errorf("no kernel size")
	}
	if l.Kernel, err = pair(kernel, "kernel size", 1); err != nil {
		return err
	}
	if l.Stride, err = pair(strides, "strides", 1); err != nil {
		return err
	}
	var d []int
	var one int
	if len(dilation) > 0 && json.Unmarshal(dilation, &one) == nil {
		d = []int{one}
	} else if len(dilation) > 0 && json.Unmarshal(dilation, &d) != nil {
		return fmt.Errorf("dilation_rate %s", dilation)
	}
	if l.Dilation, err = pair(d, "dilation_rate", 1); err != nil {
		return err
	}
	if (l.Dilation[0] > 1 || l.Dilation[1] > 1) && (l.Stride[0] > 1 || l.Stride[1] > 1) {
		return fmt.Errorf("dilation with strides is not supported")
	}
	var p string
	if err := json.Unmarshal(padding, &p); err != nil || (p != "valid" && p != "same") {
		return fmt.Errorf("padding %s: want \"valid\" or \"same\"", padding)
	}
	l.Same = p == "same"
	return nil
}

// windowOut is the output size along one axis of a convolution or pooling.
func windowOut(in int, l *graphs.Layer, axis int) (int, error) {
	if in < 0 {
		return -1, nil
	}
	s := l.Stride[axis]
	if l.Same {
		return (in + s - 1) / s, nil
	}
	span := (l.Kernel[axis]-1)*l.Dilation[axis] + 1
	if in < span {
		return 0, fmt.Errorf("input side %d is smaller than the window %d", in, span)
	}
	return (in-span)/s + 1, nil
}

// lastAxis tells whether a Keras axis setting names the last of n axes
// (after the batch): -1, n, or a list holding one of those.
func lastAxis(raw json.RawMessage, n int) bool {
	if len(raw) == 0 {
		return true // the default, -1
	}
	var a int
	if json.Unmarshal(raw, &a) != nil {
		var list []int
		if json.Unmarshal(raw, &list) != nil || len(list) != 1 {
			return false
		}
		a = list[0]
	}
	return a == -1 || a == n
}

// Layout conversions from Keras (channels last) to PyTorch.

// convKernel: [kh, kw, in, out] to [out, in, kh, kw].
func convKernel(w []float32, s []int) ([]float32, []int) {
	kh, kw, in, out := s[0], s[1], s[2], s[3]
	t := make([]float32, len(w))
	for y := range kh {
		for x := range kw {
			for i := range in {
				for o := range out {
					t[((o*in+i)*kh+y)*kw+x] = w[((y*kw+x)*in+i)*out+o]
				}
			}
		}
	}
	return t, []int{out, in, kh, kw}
}

// depthwiseKernel: [kh, kw, c, m] to [c*m, 1, kh, kw]; output channel
// c*m+j comes from input channel c, as in both frameworks.
func depthwiseKernel(w []float32, s []int) ([]float32, []int) {
	kh, kw, ch, m := s[0], s[1], s[2], s[3]
	t := make([]float32, len(w))
	for y := range kh {
		for x := range kw {
			for c := range ch {
				for j := range m {
					t[((c*m+j)*kh+y)*kw+x] = w[((y*kw+x)*ch+c)*m+j]
				}
			}
		}
	}
	return t, []int{ch * m, 1, kh, kw}
}

// denseKernel: [in, out] to [out, in].
func denseKernel(w []float32, s []int) ([]float32, []int) {
	in, out := s[0], s[1]
	t := make([]float32, len(w))
	for i := range in {
		for o := range out {
			t[o*in+i] = w[i*out+o]
		}
	}
	return t, []int{out, in}
}
