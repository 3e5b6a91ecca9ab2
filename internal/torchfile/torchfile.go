// Package torchfile writes float32 state dicts in the format of Python's
// torch.save (PyTorch 1.6 and later): a zip archive holding a pickled
// OrderedDict of tensors and one raw little-endian file per storage. Tests
// use it to make the files users bring, without Python.
package torchfile

import (
	"encoding/binary"
	"io"
	"math"
	"strconv"
)

// Tensor is one named float32 tensor. Data may hold more values than Shape
// needs, as a view of a larger storage does.
type Tensor struct {
	Name  string
	Shape []int
	Data  []float32
}

// Write writes float32 tensors exactly as Python's
// torch.save(model.state_dict()) does: an OrderedDict, memoised globals,
// SETITEM for a single entry, and a BUILD that sets _metadata.
func Write(w io.Writer, tensors []Tensor) error {
	var entries []Entry
	storages := map[string][]byte{}
	for i, t := range tensors {
		key := strconv.Itoa(i)
		raw := make([]byte, 4*len(t.Data))
		for j, v := range t.Data {
			binary.LittleEndian.PutUint32(raw[4*j:], math.Float32bits(v))
		}
		storages[key] = raw
		entries = append(entries, Entry{Name: t.Name, StorageType: "FloatStorage", Key: key,
			Location: "cpu", Numel: len(t.Data), Shape: t.Shape, Stride: contiguousStrides(t.Shape)})
	}
	return writeArchive(w, pythonPickle(entries), entries, storages)
}

// pythonPickle is protocol 2 as Python's pickler writes a state dict.
func pythonPickle(entries []Entry) []byte {
	var p pickler
	p.WriteString("\x80\x02ccollections\nOrderedDict\nq\x00)R")
	p.WriteString("q\x01")
	if len(entries) != 1 {
		p.WriteByte('(')
	}
	for _, e := range entries {
		p.tensor(e, func() { p.WriteString("h\x00)R") })
	}
	if len(entries) == 1 {
		p.WriteByte('s')
	} else {
		p.WriteByte('u')
	}
	// state = {"_metadata": OrderedDict({"": {"version": 1}})}
	p.WriteString("}")
	p.str("_metadata")
	p.WriteString("h\x00)R")
	p.str("")
	p.WriteString("}")
	p.str("version")
	p.WriteString("K\x01sssb.")
	return p.Bytes()
}
func contiguousStrides(shape []int) []int {
	s := make([]int, len(shape))
	acc := 1
	for i := len(shape) - 1; i >= 0; i-- {
		s[i] = acc
		acc *= shape[i]
	}
	return s
}

// Numel is the number of values a shape holds.
func Numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// AlexNetShapes are torchvision's AlexNet parameters, in state dict order.
var AlexNetShapes = []struct {
	Name  string
	Shape []int
}{
	{"features.0.weight", []int{64, 3, 11, 11}}, {"features.0.bias", []int{64}},
	{"features.3.weight", []int{192, 64, 5, 5}}, {"features.3.bias", []int{192}},
	{"features.6.weight", []int{384, 192, 3, 3}}, {"features.6.bias", []int{384}},
	{"features.8.weight", []int{256, 384, 3, 3}}, {"features.8.bias", []int{256}},
	{"features.10.weight", []int{256, 256, 3, 3}}, {"features.10.bias", []int{256}},
	{"classifier.1.weight", []int{4096, 9216}}, {"classifier.1.bias", []int{4096}},
	{"classifier.4.weight", []int{4096, 4096}}, {"classifier.4.bias", []int{4096}},
	{"classifier.6.weight", []int{1000, 4096}}, {"classifier.6.bias", []int{1000}},
}

// RandomAlexNet returns torchvision-shaped AlexNet tensors with values
// drawn uniformly from +-sqrt(3/fan_in) (unit variance gain), from seed.
func RandomAlexNet(seed uint64) []Tensor {
	state := seed*2862933555777941757 + 3037000493
	next := func() float32 { // xorshift64*: fast enough for 61M values
		state ^= state >> 12
		state ^= state << 25
		state ^= state >> 27
		return float32((state*2685821657736338717)>>40) / float32(1<<24)
	}
	var out []Tensor
	for _, p := range AlexNetShapes {
		n := Numel(p.Shape)
		fanIn := 1
		if len(p.Shape) > 1 {
			fanIn = n / p.Shape[0]
		}
		bound := float32(math.Sqrt(6 / float64(fanIn)))
		if len(p.Shape) == 1 {
			bound = 0.1
		}
		data := make([]float32, n)
		for i := range data {
			data[i] = (2*next() - 1) * bound
		}
		out = append(out, Tensor{Name: p.Name, Shape: p.Shape, Data: data})
	}
	return out
}
