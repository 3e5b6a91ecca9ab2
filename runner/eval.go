package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/internal/measure"
	"github.com/deepsim/deepsim/pretrained"
)

// EvalOptions controls Evaluate.
type EvalOptions struct {
	Run  string
	Data []string
	N    int    // crops to evaluate on
	Seed uint64 // fixes the crops, so runs are measured on identical inputs
	// Judge is the independent comparator; "" picks one the run did not
	// train with (DefaultJudge). JudgeSize is the side it sees the crops
	// at; 0 is the crops' own (or the least its network takes).
	Judge     string
	JudgeSize int
	Store     pretrained.Store
	Log       *slog.Logger
}

// EvalResult holds the measurements of one run on fixed held-out crops.
// Errors in % are normalised, as in the paper, by the mean squared distance
// between random pairs of the inputs in the same space.
type EvalResult struct {
	Run        string `json:"run"`
	N          int    `json:"n"`
	Comparator string `json:"comparator"`
	Judge      string `json:"judge"`
	// JudgeSize is the side the judge saw the crops at when not their own:
	// --judge-size, or the least its network takes.
	JudgeSize                  int     `json:"judge_size,omitempty"`
	PSNR                       float64 `json:"psnr"`
	SSIM                       float64 `json:"ssim"`
	ImageErrorPct              float64 `json:"image_error_pct"`
	FeatureErrorPct            float64 `json:"feature_error_pct"`
	FeatureErrorIndependentPct float64 `json:"feature_error_independent_pct"`
	// PerceptualDistance is the judge's LPIPS-style distance between each
	// crop and its reconstruction, averaged (see graphs.Comparator.Distance).
	PerceptualDistance float64 `json:"perceptual_distance"`
	SharpnessRatio     float64 `json:"sharpness_ratio"`
	// GridRatio is the largest ratio of the reconstructions' power to the
	// crops' over the bins of the spectrum where anything that repeats every
	// 8 pixels lies (measure.GridRatio): the 8x8 code's cells showing
	// through, or an up-convolution's checkerboard, raise it above 1.
	GridRatio float64 `json:"grid_ratio"`
}

// gridPeriod is the pixels per code cell of the autoencoder and the VAE
// (their code is size/8 square), where a grid would repeat.
const gridPeriod = 8

// The trained judges make models imports, in order of preference.
var trainedJudges = []string{"mobilenetv2", "inceptionv3"}

// DefaultJudge is the independent comparator eval uses unless told: the
// trained MobileNetV2 that make models imports, or for runs that trained with
// it the InceptionV3, at its default taps. With neither in the store it is
// a random VGG16 (a random AlexNet for runs that trained with a VGG16), and
// trained is false: a random network is a weak judge, which callers say.
func DefaultJudge(runComparator string, store pretrained.Store) (judge string, trained bool) {
	s, _ := pretrained.Parse(runComparator)
	for _, j := range trainedJudges {
		if j == s.Name {
			continue
		}
		if _, err := store.Lookup(j); err == nil {
			return j, true
		}
	}
	if s.Name == "vgg16-random" {
		return "alexnet-random:conv2", false
	}
	return "vgg16-random:conv3_3", false
}

// Evaluate reconstructs N seeded crops of the images in Data with a trained
// run and measures pixel, feature and sharpness errors.
func Evaluate(ctx context.Context, opt EvalOptions) (*EvalResult, error) {
	log := opt.Log
	if log == nil {
		log = slog.Default()
	}
	if opt.N < 2 {
		return nil, errors.New("eval needs at least 2 crops")
	}
	if opt.N > maxImages {
		return nil, fmt.Errorf("%d crops: at most %d", opt.N, maxImages)
	}
	model, cfg, err := OpenModel(opt.Run, opt.Store)
	if err != nil {
		return nil, err
	}
	defer model.Close()
	if !cfg.Generative() {
		return nil, fmt.Errorf("%s is a %s run: eval measures reconstructions", opt.Run, cfg.Task)
	}
	// Feature errors are in the run's comparator's space, or for an
	// inversion in its target's at the inverted layer, as in the paper.
	t, _ := taskNamed(cfg.Task)
	space, spaceSize := t.space(cfg)
	res := &EvalResult{Run: opt.Run, N: opt.N, Comparator: space, Judge: opt.Judge}
	if res.Judge == "" {
		judge, trained := DefaultJudge(res.Comparator, opt.Store)
		if !trained {
			log.Warn("no trained judge in the store: judging with random weights (make models imports mobilenetv2)", "judge", judge)
		}
		res.Judge = judge
	}
	comp, err := pretrained.OpenString(space, opt.Store, spaceSize)
	if err != nil {
		return nil, err
	}
	defer comp.Close()
	judge, err := openJudge(res, cfg.Size, opt, log)
	if err != nil {
		return nil, err
	}
	defer judge.Close()

	// The crops, their reconstructions and their features are held at once.
	if err := fits(fmt.Sprintf("evaluating %d crops of %d px", opt.N, cfg.Size), 8*pixels(opt.N, cfg.Size)); err != nil {
		return nil, err
	}
	data, err := openData(cfg, opt.Data, log, nil)
	if err != nil {
		return nil, err
	}
	defer data.Close()
	x := fixedCrops(data, opt.N, opt.Seed).Data
	y, err := inChunks(x, opt.N, 3*cfg.Size*cfg.Size, func(part []float32, n int) ([]float32, error) {
		return model.Reconstruct(part, n, cfg.Size, cfg.Size)
	})
	if err != nil {
		return nil, err
	}
	pairs := measure.Derangement(opt.N, opt.Seed)
	plane := 3 * cfg.Size * cfg.Size
	res.ImageErrorPct = measure.NormalisedError(x, y, plane, pairs)
	var p HeldoutPoint
	if err := reconstructionMeasures(&p, x, y, opt.N, cfg.Size, judge); err != nil {
		return nil, err
	}
	res.PSNR, res.SSIM, res.SharpnessRatio, res.GridRatio, res.PerceptualDistance =
		p.PSNR, p.SSIM, p.SharpnessRatio, p.GridRatio, p.PerceptualDistance
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
		*m.out = measure.NormalisedError(fx, fy, d, pairs)
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

// openJudge opens res.Judge at the side it sees the crops at: their own
// (resizing 64 px crops to 224 would measure the resampling more than the
// reconstruction), --judge-size, or the least its network takes when the
// crops are smaller, which res then records.
func openJudge(res *EvalResult, crop int, opt EvalOptions, log *slog.Logger) (*graphs.Comparator, error) {
	net, err := pretrained.Resolve(res.Judge, opt.Store)
	if err != nil {
		return nil, err
	}
	side, err := fitSide(net, crop, opt.JudgeSize, "judge_size", log)
	if err != nil {
		return nil, err
	}
	if side != crop {
		res.JudgeSize = side
	}
	return net.Open(side)
}

// distances returns the judge's perceptual distance of each pair of n
// images (x[i], y[i]).
func distances(judge *graphs.Comparator, x, y []float32, n, size int) ([]float64, error) {
	per := 3 * size * size
	var out []float64
	for i := 0; i < n; i += 32 {
		k := min(32, n-i)
		d, err := judge.Distance(x[i*per:(i+k)*per], y[i*per:(i+k)*per], k, size, size)
		if err != nil {
			return nil, err
		}
		out = append(out, d...)
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
