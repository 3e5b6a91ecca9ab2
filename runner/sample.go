package runner

import (
	"context"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/disintegration/imaging"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/internal/measure"
	"github.com/deepsim/deepsim/pipeline"
	"github.com/deepsim/deepsim/pretrained"
)

// SampleOptions controls Sample.
type SampleOptions struct {
	Run string
	// Out is a .png file for one sheet, or else a folder that gets one PNG
	// per image: 000.png, 001.png, ...
	Out  string
	N    int    // samples to draw from the prior
	Seed uint64 // fixes the latents: the same seed gives the same images
	// Interpolate, when set, replaces sampling: Steps images from the
	// encoding of the first image to that of the second.
	Interpolate []string
	Steps       int
	// Ref, when set, is a folder of real images: Sample then measures the
	// outputs against N seeded crops of it (SampleResult).
	Ref string
	// Judge is the network whose features KID and FID compare
	// (SampleJudge when empty), from Store.
	Judge string
	Store pretrained.Store
	Log   *slog.Logger
}

// SampleJudge is the features KID and FID compare by default: the global
// pool of the imported InceptionV3, 2048 values an image. That network is
// nsfwjs's, not the ImageNet Inception of published FIDs: the figures
// compare deepsim runs with each other, not with papers.
const SampleJudge = "inceptionv3:flatten_1"

// kidSubsets is how many subsets KID averages, as clean-fid's default.
const kidSubsets = 100

// SampleResult says what Sample wrote and measured against Ref.
type SampleResult struct {
	Written []string `json:"-"`
	// SharpnessRatio is the outputs' mean luminance-gradient magnitude over
	// that of the reference crops (0 without Ref).
	SharpnessRatio float64 `json:"sharpness_ratio"`
	// GridRatio is the outputs' spectral power on the 8 px lattice over
	// the reference crops' (1: no grid).
	GridRatio float64 `json:"grid_ratio"`
	// KID and FID of the outputs' Judge features against the crops'.
	KID        float64 `json:"kid"`
	KIDStd     float64 `json:"kid_std"`
	KIDSubsets int     `json:"kid_subsets"`
	KIDSubset  int     `json:"kid_subset_size"`
	FID        float64 `json:"fid"`
	Judge      string  `json:"judge"`
	Samples    int     `json:"samples"`
	RefCrops   int     `json:"ref_crops"`
}

// ErrNotVAE is returned when sampling is asked of a run that is not a VAE.
var ErrNotVAE = errors.New("not a VAE run")

// Sample draws N latents from N(0, I) and decodes them with a VAE run, or,
// with Interpolate, decodes Steps evenly spaced points on the line between
// the posterior means of two images. The first and last of those are the
// reconstructions of the two images.
func Sample(ctx context.Context, opt SampleOptions) (*SampleResult, error) {
	log := opt.Log
	if log == nil {
		log = slog.Default()
	}
	if cfg, err := LoadConfig(opt.Run); err != nil {
		return nil, err
	} else if t, err := taskNamed(cfg.Task); err != nil {
		return nil, err
	} else if !t.samples() {
		return nil, fmt.Errorf("%s holds a %s run: %w; sampling draws from a VAE's prior (train a vae run)", opt.Run, cfg.Task, ErrNotVAE)
	}
	model, cfg, err := OpenModel(opt.Run, pretrained.Store{})
	if err != nil {
		return nil, err
	}
	defer model.Close()
	inputs := append([]string(nil), opt.Interpolate...)
	if opt.Ref != "" {
		inputs = append(inputs, opt.Ref)
		if within(opt.Out, opt.Ref) {
			return nil, fmt.Errorf("sample: the output %s lies in the reference %s: the samples would become reference images", opt.Out, opt.Ref)
		}
	}
	for _, in := range opt.Interpolate {
		if resolved(in) == resolved(opt.Out) {
			return nil, fmt.Errorf("sample: the output %s is an input", opt.Out)
		}
	}
	if !strings.EqualFold(filepath.Ext(opt.Out), ".png") {
		if err := keepInputs("sample", opt.Out, inputs); err != nil {
			return nil, err
		}
	}
	n := opt.N
	if len(opt.Interpolate) > 0 {
		n = opt.Steps
	}
	if n > maxImages {
		return nil, fmt.Errorf("at most %d images, not %d", maxImages, n)
	}
	if err := fits(fmt.Sprintf("%d images of %d px", n, cfg.Size), 3*pixels(n, cfg.Size)); err != nil {
		return nil, err
	}
	var z []float32
	if len(opt.Interpolate) > 0 {
		if len(opt.Interpolate) != 2 || opt.Steps < 2 {
			return nil, errors.New("interpolation needs two images and at least 2 steps")
		}
		if z, err = interpolate(model, cfg.Size, opt.Interpolate, opt.Steps); err != nil {
			return nil, err
		}
	} else {
		if opt.N < 1 {
			return nil, fmt.Errorf("%d samples: draw at least one", opt.N)
		}
		z = priorLatents(model, cfg.Size, n, opt.Seed)
	}
	y, err := decodeLatents(ctx, model, cfg.Size, z, n)
	if err != nil {
		return nil, err
	}
	res := &SampleResult{}
	if opt.Ref != "" {
		data, err := openData(cfg, []string{opt.Ref}, log, nil)
		if err != nil {
			return nil, fmt.Errorf("reference images: %w", err)
		}
		defer data.Close()
		res.RefCrops, res.Samples = max(n, 2), n
		ref := fixedCrops(data, res.RefCrops, 1).Data
		res.SharpnessRatio = measure.Sharpness(y, n, cfg.Size) / measure.Sharpness(ref, res.RefCrops, cfg.Size)
		// The largest ratio of the samples' power on the 8 px lattice to the
		// crops' (GridSpectrum sums over images: as many of each).
		res.GridRatio = measure.GridRatio(ref, y, n, cfg.Size, gridPeriod)
		if err := distributionDistances(res, opt, y, ref, cfg.Size); err != nil {
			return nil, err
		}
	}
	res.Written, err = writeImages(opt.Out, y, n, cfg.Size, len(opt.Interpolate) > 0)
	return res, err
}

// priorLatents draws n training-size codes from N(0, I) with a generator of
// the seed's own, so a seed always gives the same latents.
func priorLatents(model *graphs.Model, size, n int, seed uint64) []float32 {
	c, zh, zw := model.CodeShape(size, size)
	rng := rand.New(rand.NewPCG(seed, 0x5a3e))
	z := make([]float32, n*c*zh*zw)
	for i := range z {
		z[i] = float32(rng.NormFloat64())
	}
	return z
}

// interpolate encodes two images, each center-cropped to a square and
// resized to the training size, and returns steps latents evenly spaced on
// the line between their posterior means, both ends included.
func interpolate(model *graphs.Model, size int, files []string, steps int) ([]float32, error) {
	var ends [2][]float32
	for i, f := range files {
		img, err := pipeline.Decode(f, pipeline.DecodeOptions{})
		if err != nil {
			return nil, err
		}
		x, _ := square(img, size)
		if ends[i], err = model.Encode(x, 1, size, size); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
	}
	d := len(ends[0])
	z := make([]float32, steps*d)
	for k := range steps {
		t := float32(k) / float32(steps-1)
		for j := range d {
			z[k*d+j] = (1-t)*ends[0][j] + t*ends[1][j]
		}
	}
	// The ends are exactly the posterior means, free of rounding.
	copy(z, ends[0])
	copy(z[(steps-1)*d:], ends[1])
	return z, nil
}

// decodeLatents decodes n training-size codes into images.
func decodeLatents(ctx context.Context, model *graphs.Model, size int, z []float32, n int) ([]float32, error) {
	c, zh, zw := model.CodeShape(size, size)
	return inChunks(z, n, c*zh*zw, func(part []float32, k int) ([]float32, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		return model.Decode(part, k, zh, zw)
	})
}

// writeImages writes n images either as one sheet (out ends in .png: a
// near-square grid, or a single row for an interpolation) or as
// out/000.png, out/001.png, ...
func writeImages(out string, y []float32, n, size int, row bool) ([]string, error) {
	imgs := images(y, n, size)
	if strings.EqualFold(filepath.Ext(out), ".png") {
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return nil, err
		}
		cols := n
		if !row {
			cols = int(math.Ceil(math.Sqrt(float64(n))))
		}
		var rows [][]*image.NRGBA
		for i := 0; i < n; i += cols {
			rows = append(rows, imgs[i:min(i+cols, n)])
		}
		if err := imaging.Save(Mosaic(rows, 2, 2), out); err != nil {
			return nil, fmt.Errorf("write %s: %w", out, err)
		}
		return []string{out}, nil
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	var written []string
	for i, img := range imgs {
		p := filepath.Join(out, fmt.Sprintf("%03d.png", i))
		if err := imaging.Save(img, p); err != nil {
			return written, fmt.Errorf("write %s: %w", p, err)
		}
		written = append(written, p)
	}
	return written, nil
}

// distributionDistances fills in res's KID and FID of the samples y
// against the reference crops, in the judge's features.
func distributionDistances(res *SampleResult, opt SampleOptions, y, ref []float32, size int) error {
	res.Judge = opt.Judge
	if res.Judge == "" {
		res.Judge = SampleJudge
	}
	judge, err := pretrained.OpenString(res.Judge, opt.Store, 0)
	if err != nil {
		return fmt.Errorf("sample judge: %w", err)
	}
	defer judge.Close()
	rows := func(x []float32, n int) (measure.Features, error) {
		f, per, err := features(judge, x, n, size)
		if err != nil {
			return nil, err
		}
		out := make(measure.Features, n)
		for i := range out {
			out[i] = make([]float64, per)
			for j, v := range f[i*per : (i+1)*per] {
				out[i][j] = float64(v)
			}
		}
		return out, nil
	}
	fy, err := rows(y, res.Samples)
	if err != nil {
		return err
	}
	fr, err := rows(ref, res.RefCrops)
	if err != nil {
		return err
	}
	kid, err := measure.KID(fy, fr, kidSubsets, 1)
	if err != nil {
		return err
	}
	res.KID, res.KIDStd, res.KIDSubsets, res.KIDSubset = kid.KID, kid.Std, kid.Subsets, kid.SubsetSize
	res.FID, err = measure.FID(fy, fr)
	return err
}
