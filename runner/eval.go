package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/pretrained"
)

// EvalOptions controls Evaluate.
type EvalOptions struct {
	Run  string
	Data []string
	N    int    // crops to evaluate on
	Seed uint64 // fixes the crops, so runs are measured on identical inputs
	// Judge is the independent comparator; "" picks one the run did not
	// train with (DefaultJudge).
	Judge string
	Store pretrained.Store
	Log   *slog.Logger
}

// EvalResult holds the measurements of one run on fixed held-out crops.
// Errors in % are normalised, as in the paper, by the mean squared distance
// between random pairs of the inputs in the same space.
type EvalResult struct {
	Run                        string  `json:"run"`
	N                          int     `json:"n"`
	Comparator                 string  `json:"comparator"`
	Judge                      string  `json:"judge"`
	PSNR                       float64 `json:"psnr"`
	SSIM                       float64 `json:"ssim"`
	ImageErrorPct              float64 `json:"image_error_pct"`
	FeatureErrorPct            float64 `json:"feature_error_pct"`
	FeatureErrorIndependentPct float64 `json:"feature_error_independent_pct"`
	SharpnessRatio             float64 `json:"sharpness_ratio"`
}

// DefaultJudge is the independent comparator eval uses unless told: a
// random VGG16, or a random AlexNet for runs that trained with a VGG16.
func DefaultJudge(runComparator string) string {
	if s, err := pretrained.Parse(runComparator); err == nil && s.Name == "vgg16-random" {
		return "alexnet-random:conv2"
	}
	return "vgg16-random:conv3_3"
}

// Evaluate reconstructs N seeded crops of the images in Data with a trained
// run and measures pixel, feature and sharpness errors.
func Evaluate(ctx context.Context, opt EvalOptions) (*EvalResult, error) {
	log := opt.Log
	if log == nil {
		log = slog.Default()
	}
	if opt.N < 2 {
		return nil, errors.New("eval needs --n of at least 2")
	}
	model, cfg, err := OpenModel(opt.Run)
	if err != nil {
		return nil, err
	}
	defer model.Close()
	if !cfg.Generative() {
		return nil, fmt.Errorf("%s is a %s run: eval measures reconstructions", opt.Run, cfg.Task)
	}
	res := &EvalResult{Run: opt.Run, N: opt.N, Comparator: cfg.ComparatorSpec(), Judge: opt.Judge}
	if res.Judge == "" {
		res.Judge = DefaultJudge(res.Comparator)
	}
	// The judge sees crops at their own size: resizing 64 px crops to 224
	// would measure the resampling more than the reconstruction.
	comp, err := pretrained.OpenString(res.Comparator, opt.Store, cfg.ComparatorSize)
	if err != nil {
		return nil, err
	}
	defer comp.Close()
	judge, err := pretrained.OpenString(res.Judge, opt.Store, cfg.Size)
	if err != nil {
		return nil, err
	}
	defer judge.Close()

	set, err := loadImages(ctx, cfg, opt.Data, log)
	if err != nil {
		return nil, err
	}
	x := fixedCrops(set, cfg, opt.N, opt.Seed).Data
	y, err := inChunks(x, opt.N, 3*cfg.Size*cfg.Size, func(part []float32, n int) ([]float32, error) {
		return model.Reconstruct(part, n, cfg.Size, cfg.Size)
	})
	if err != nil {
		return nil, err
	}
	pairs := derangement(opt.N, opt.Seed)
	plane := 3 * cfg.Size * cfg.Size
	res.ImageErrorPct = normalisedError(x, y, plane, pairs)
	for i := range opt.N {
		xi, yi := x[i*plane:(i+1)*plane], y[i*plane:(i+1)*plane]
		res.PSNR += 10 * math.Log10(4/math.Max(mse(xi, yi), 1e-12)) / float64(opt.N)
		res.SSIM += ssim(xi, yi, cfg.Size) / float64(opt.N)
	}
	res.SharpnessRatio = meanGradient(y, opt.N, cfg.Size) / meanGradient(x, opt.N, cfg.Size)
	for _, m := range []struct {
		c   *graphs.Comparator
		out *float64
	}{{comp, &res.FeatureErrorPct}, {judge, &res.FeatureErrorIndependentPct}} {
		fx, d, err := features(m.c, x, opt.N, cfg.Size)
		if err != nil {
			return nil, err
		}
		fy, _, err := features(m.c, y, opt.N, cfg.Size)
		if err != nil {
			return nil, err
		}
		*m.out = normalisedError(fx, fy, d, pairs)
	}
	return res, nil
}

// inChunks applies f to n items of x (images or codes, per values each),
// 32 at a time.
func inChunks(x []float32, n, per int, f func([]float32, int) ([]float32, error)) ([]float32, error) {
	const chunk = 32
	var out []float32
	for i := 0; i < n; i += chunk {
		k := min(chunk, n-i)
		part, err := f(x[i*per:(i+k)*per], k)
		if err != nil {
			return nil, err
		}
		out = append(out, part...)
	}
	return out, nil
}

// features returns the comparator's features of n images and the number
// of values per image.
func features(c *graphs.Comparator, x []float32, n, size int) ([]float32, int, error) {
	var per int
	f, err := inChunks(x, n, 3*size*size, func(part []float32, k int) ([]float32, error) {
		out, shape, err := c.Features(part, k, size, size)
		per = shape[1] * shape[2] * shape[3]
		return out, err
	})
	return f, per, err
}

// derangement pairs every input with another, at random.
func derangement(n int, seed uint64) []int {
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

func mse(a, b []float32) float64 {
	var s float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		s += d * d
	}
	return s / float64(len(a))
}

// normalisedError is 100 * mean ||y_i - x_i||^2 / mean ||x_i - x_pair(i)||^2
// over vectors of d values.
func normalisedError(x, y []float32, d int, pairs []int) float64 {
	var num, den float64
	for i, j := range pairs {
		num += mse(x[i*d:(i+1)*d], y[i*d:(i+1)*d])
		den += mse(x[i*d:(i+1)*d], x[j*d:(j+1)*d])
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

// meanGradient is the mean magnitude of the luminance gradient (forward
// differences) over n images.
func meanGradient(x []float32, n, size int) float64 {
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

// ssim is the structural similarity of two images' luminance, with the
// usual 11x11 Gaussian window (sigma 1.5) over the valid region.
func ssim(a, b []float32, size int) float64 {
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
