// Package torchfiletest makes torchvision-shaped state dicts with random
// values, for tests that need the files users bring.
package torchfiletest

import (
	"math"

	"github.com/deepsim/deepsim/internal/torchfile"
)

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
func RandomAlexNet(seed uint64) []torchfile.Tensor {
	state := seed*2862933555777941757 + 3037000493
	next := func() float32 { // xorshift64*: fast enough for 61M values
		state ^= state >> 12
		state ^= state << 25
		state ^= state >> 27
		return float32((state*2685821657736338717)>>40) / float32(1<<24)
	}
	var out []torchfile.Tensor
	for _, p := range AlexNetShapes {
		n := torchfile.Numel(p.Shape)
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
		out = append(out, torchfile.Tensor{Name: p.Name, Shape: p.Shape, Data: data})
	}
	return out
}
