// Package measure holds the image measures that evaluation reports: PSNR,
// SSIM, the paper's normalised error and a sharpness measure. Images are
// float32 CHW (or NCHW for n images) with pixels in [-1,1]; the package is
// pure Go and has no state.
package measure

import (
	"math"
	"math/rand/v2"
)

// MSE is the mean squared difference of two equally long vectors.
func MSE(a, b []float32) float64 {
	var s float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		s += d * d
	}
	return s / float64(len(a))
}

// PSNR is the peak signal-to-noise ratio in dB of two [-1,1] images, whose
// peak-to-peak range is 2.
func PSNR(a, b []float32) float64 {
	return 10 * math.Log10(4/math.Max(MSE(a, b), 1e-12))
}

// Derangement pairs each of n items with another one, at random under a
// seed: no item is its own partner.
func Derangement(n int, seed uint64) []int {
	rng := rand.New(rand.NewPCG(seed, 0xd1ce))
	p := rng.Perm(n)
	for i := range p {
		if p[i] == i {
			j := (i + 1) % n
			p[i], p[j] = p[j], p[i]
		}
	}
	return p
}

// NormalisedError is the paper's error measure in %: 100 * mean
// ||y_i - x_i||^2 / mean ||x_i - x_pair(i)||^2 over items of d values, so
// that 100 is as far as a random other input.
func NormalisedError(x, y []float32, d int, pairs []int) float64 {
	var num, den float64
	for i, j := range pairs {
		num += MSE(x[i*d:(i+1)*d], y[i*d:(i+1)*d])
		den += MSE(x[i*d:(i+1)*d], x[j*d:(j+1)*d])
	}
	return 100 * num / math.Max(den, 1e-12)
}

// luma returns image i's luminance in [0,1].
func luma(x []float32, i, size int) []float64 {
	plane := size * size
	base := i * 3 * plane
	out := make([]float64, plane)
	for p := range plane {
		r, g, b := float64(x[base+p]), float64(x[base+plane+p]), float64(x[base+2*plane+p])
		out[p] = (0.299*r + 0.587*g + 0.114*b + 1) / 2
	}
	return out
}

// Sharpness is the mean magnitude of the luminance gradient (forward
// differences) over n square images of size x size: blur lowers it,
// high-frequency artifacts raise it.
func Sharpness(x []float32, n, size int) float64 {
	var s float64
	for i := range n {
		l := luma(x, i, size)
		for y := 0; y < size-1; y++ {
			for xx := 0; xx < size-1; xx++ {
				p := y*size + xx
				s += math.Hypot(l[p+1]-l[p], l[p+size]-l[p])
			}
		}
	}
	return s / float64(n*(size-1)*(size-1))
}

// GridSpectrum is the luminance's power in each bin of the spectrum's
// lattice for a period: the bins at multiples of size/period cycles in
// each direction, where anything that repeats every period pixels (a grid,
// a checkerboard) puts its energy, summed over n square images of size x
// size. Bin (u, v), u and v in [0, period), is entry u*period+v; DC is 0.
// It is the 2-D DFT of the image's mean period x period tile, which by the
// sampling theorem holds exactly those bins of the image's DFT (scaled by
// the number of tiles). Tiles start at the origin; a remainder at the right
// or bottom is left out.
func GridSpectrum(x []float32, n, size, period int) []float64 {
	power := make([]float64, period*period)
	tiles := size / period
	if tiles < 1 {
		return power
	}
	tile := make([]float64, period*period)
	for i := range n {
		l := luma(x, i, size)
		clear(tile)
		for y := range tiles * period {
			for xx := range tiles * period {
				tile[(y%period)*period+xx%period] += l[y*size+xx] / float64(tiles*tiles)
			}
		}
		for u := range period {
			for v := range period {
				if u == 0 && v == 0 {
					continue
				}
				var re, im float64
				for y := range period {
					for xx := range period {
						a := -2 * math.Pi * float64(u*y+v*xx) / float64(period)
						re += tile[y*period+xx] * math.Cos(a)
						im += tile[y*period+xx] * math.Sin(a)
					}
				}
				power[u*period+v] += re*re + im*im
			}
		}
	}
	return power
}

// GridRatio compares n outputs y with their n inputs x on the lattice of a
// period (GridSpectrum): the largest ratio, over the lattice's bins, of the
// outputs' power to the inputs'. A grid or checkerboard that the inputs do
// not have raises it in its own bins, however small its share of the whole
// spectrum; blur lowers every bin. Bins where the inputs have no power are
// left out.
func GridRatio(x, y []float32, n, size, period int) float64 {
	px, py := GridSpectrum(x, n, size, period), GridSpectrum(y, n, size, period)
	var worst float64
	for k := range px {
		if px[k] > 0 {
			worst = math.Max(worst, py[k]/px[k])
		}
	}
	return worst
}

// SSIM is the structural similarity of two square images' luminance, with
// the usual 11x11 Gaussian window (sigma 1.5) over the valid region.
func SSIM(a, b []float32, size int) float64 {
	const c1, c2 = 0.01 * 0.01, 0.03 * 0.03
	la, lb := luma(a, 0, size), luma(b, 0, size)
	prod := func(p, q []float64) []float64 {
		out := make([]float64, len(p))
		for i := range p {
			out[i] = p[i] * q[i]
		}
		return out
	}
	w := gaussian11()
	mu1, mu2 := blur(la, size, w), blur(lb, size, w)
	s11, s22, s12 := blur(prod(la, la), size, w), blur(prod(lb, lb), size, w), blur(prod(la, lb), size, w)
	var s float64
	for i := range mu1 {
		m1, m2 := mu1[i], mu2[i]
		v1, v2, cv := s11[i]-m1*m1, s22[i]-m2*m2, s12[i]-m1*m2
		s += (2*m1*m2 + c1) * (2*cv + c2) / ((m1*m1 + m2*m2 + c1) * (v1 + v2 + c2))
	}
	return s / float64(len(mu1))
}

func gaussian11() []float64 {
	w := make([]float64, 11)
	var sum float64
	for i := range w {
		d := float64(i - 5)
		w[i] = math.Exp(-d * d / (2 * 1.5 * 1.5))
		sum += w[i]
	}
	for i := range w {
		w[i] /= sum
	}
	return w
}

// blur filters a size x size image with a separable window, keeping the
// valid region.
func blur(img []float64, size int, w []float64) []float64 {
	k := len(w)
	o := size - k + 1
	tmp := make([]float64, size*o)
	for y := range size {
		for x := range o {
			var s float64
			for i, wi := range w {
				s += wi * img[y*size+x+i]
			}
			tmp[y*o+x] = s
		}
	}
	out := make([]float64, o*o)
	for y := range o {
		for x := range o {
			var s float64
			for i, wi := range w {
				s += wi * tmp[(y+i)*o+x]
			}
			out[y*o+x] = s
		}
	}
	return out
}
