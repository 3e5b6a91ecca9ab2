package measure

import (
	"math"
	"testing"
)

// texture is a square CHW image with detail at every scale.
func texture(size int) []float32 {
	x := make([]float32, 3*size*size)
	for i := range x {
		x[i] = float32(math.Sin(float64(i) * 0.37))
	}
	return x
}

func TestMeasures(t *testing.T) {
	const size = 32
	x := texture(size)
	flat := make([]float32, len(x))
	half := make([]float32, len(x))
	for i, v := range x {
		half[i] = v / 2
	}
	tests := []struct {
		name   string
		got    float64
		lo, hi float64
	}{
		{"ssim of an image with itself", SSIM(x, x, size), 1 - 1e-9, 1 + 1e-9},
		{"ssim against a flat image", SSIM(x, flat, size), -1, 0.5},
		{"sharpness of a flat image", Sharpness(flat, 1, size), 0, 0},
		{"sharpness of a textured image", Sharpness(x, 1, size), 1e-3, math.Inf(1)},
		{"halving the contrast halves the sharpness", Sharpness(half, 1, size) / Sharpness(x, 1, size), 0.5 - 1e-6, 0.5 + 1e-6},
		{"psnr of a 0.1 offset (mse 0.01)", PSNR(flat, fill(len(x), 0.1)), 26.0206 - 1e-3, 26.0206 + 1e-3},
		{"mse", MSE([]float32{0, 1}, []float32{1, 1}), 0.5, 0.5},
	}
	for _, tc := range tests {
		if tc.got < tc.lo || tc.got > tc.hi {
			t.Errorf("%s = %v, want in [%v, %v]", tc.name, tc.got, tc.lo, tc.hi)
		}
	}
}

func fill(n int, v float32) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func TestDerangement(t *testing.T) {
	for _, n := range []int{2, 3, 10, 257} {
		p := Derangement(n, 1)
		seen := make([]bool, n)
		for i, j := range p {
			if i == j {
				t.Fatalf("n=%d: pairs %d with itself", n, i)
			}
			if seen[j] {
				t.Fatalf("n=%d: %d chosen twice", n, j)
			}
			seen[j] = true
		}
	}
}

// The normalised error is 0 for a perfect output and 100 for an output
// that is as far as the inputs are from one another.
func TestNormalisedError(t *testing.T) {
	x := []float32{0, 0, 1, 1, 3, 3}
	pairs := []int{1, 2, 0}
	if e := NormalisedError(x, x, 2, pairs); e != 0 {
		t.Fatalf("perfect output: %v", e)
	}
	shuffled := []float32{1, 1, 3, 3, 0, 0} // each item replaced by its pair
	if e := NormalisedError(x, shuffled, 2, pairs); math.Abs(e-100) > 1e-9 {
		t.Fatalf("output as far as a random input: %v, want 100", e)
	}
}
