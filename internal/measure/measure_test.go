package measure

import (
	"math"
	"math/rand/v2"
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

// withPattern is x plus a luminance pattern of the given period in both
// directions, of amplitude a.
func withPattern(x []float32, size, period int, a float32) []float32 {
	out := append([]float32(nil), x...)
	plane := size * size
	for y := range size {
		for xx := range size {
			v := a * float32(math.Cos(2*math.Pi*float64(xx%period)/float64(period))*math.Cos(2*math.Pi*float64(y%period)/float64(period)))
			for c := range 3 {
				out[c*plane+y*size+xx] += v
			}
		}
	}
	return out
}

func TestGridRatio(t *testing.T) {
	const size = 64
	x := noise(size, 1) // power in every bin, as photographs have
	flat := fill(3*size*size, 0.2)
	checker := append([]float32(nil), x...)
	for i := range checker {
		if (i%size+i/size)%2 == 0 { // alternating pixels, both ways
			checker[i] += 0.05
		}
	}
	// An 8 px pattern of luma amplitude 0.05 in [0,1], cos x cos: its four
	// bins (+-1, +-1) hold (0.05/4 * 64)^2 each.
	onFlat := GridSpectrum(withPattern(flat, size, 8, 0.1), 1, size, 8)
	tests := []struct {
		name   string
		got    float64
		lo, hi float64
	}{
		{"an image against itself", GridRatio(x, x, 1, size, 8), 1, 1},
		{"a flat image has no power on the lattice", GridSpectrum(flat, 1, size, 8)[9], 0, 1e-20},
		{"an 8 px pattern's bin", onFlat[1*8+1], 0.64 * (1 - 1e-6), 0.64 * (1 + 1e-6)},
		{"an 8 px pattern's other bins", onFlat[1*8+2] + onFlat[0*8+1], 0, 1e-12},
		{"an 8 px pattern", GridRatio(x, withPattern(x, size, 8, 0.2), 1, size, 8), 10, math.Inf(1)},
		{"a 2 px checkerboard is on the lattice too", GridRatio(x, checker, 1, size, 8), 10, math.Inf(1)},
		{"a 7 px pattern is not: it leaks a little", GridRatio(x, withPattern(x, size, 7, 0.2), 1, size, 8) / GridRatio(x, withPattern(x, size, 8, 0.2), 1, size, 8), 0, 0.05},
		{"halving the contrast quarters every bin", GridRatio(x, scaled(x, 0.5), 1, size, 8), 0.25 - 1e-6, 0.25 + 1e-6},
	}
	for _, tc := range tests {
		if tc.got < tc.lo || tc.got > tc.hi {
			t.Errorf("%s = %v, want in [%v, %v]", tc.name, tc.got, tc.lo, tc.hi)
		}
	}
}

// noise is a square CHW image of uniform noise in [-0.5, 0.5], seeded.
func noise(size int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, 3*size*size)
	for i := range x {
		x[i] = rng.Float32() - 0.5
	}
	return x
}

func scaled(x []float32, f float32) []float32 {
	out := make([]float32, len(x))
	for i, v := range x {
		out[i] = v * f
	}
	return out
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
