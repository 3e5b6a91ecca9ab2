package runner

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"

	"github.com/disintegration/imaging"

	"github.com/deepsim/deepsim/pipeline"
)

// CropsOptions controls WriteCrops.
type CropsOptions struct {
	Data     []string
	Out      string
	N        int
	Size     int
	MinScale float64
	Seed     uint64
	Log      *slog.Logger
}

// WriteCrops cuts N seeded random crops from the images under Data and
// writes them as OUT/crop-000.png, ...: a fixed held-out set that every run
// can be shown or measured on.
func WriteCrops(ctx context.Context, opt CropsOptions) ([]string, error) {
	log := opt.Log
	if log == nil {
		log = slog.Default()
	}
	if opt.N < 1 || opt.Size < 1 {
		return nil, fmt.Errorf("crops: need --n >= 1 and --size >= 1")
	}
	if opt.N > maxImages {
		return nil, fmt.Errorf("crops: --n %d: at most %d", opt.N, maxImages)
	}
	// Each source image is kept with its short side up to 4 x --size, and
	// each crop is made at --size: refuse sizes no memory holds.
	if err := fits(fmt.Sprintf("crops of %d px", opt.Size), 16*pixels(1, 4*opt.Size)); err != nil {
		return nil, err
	}
	for _, d := range opt.Data {
		if within(opt.Out, d) || within(d, opt.Out) {
			return nil, fmt.Errorf("crops: --out %s and --data %s overlap: the crops would become input images", opt.Out, d)
		}
	}
	paths, err := pipeline.Find(opt.Data...)
	if err != nil {
		return nil, err
	}
	set, err := pipeline.Load(ctx, paths, pipeline.LoadOptions{
		Decode: pipeline.DecodeOptions{MinSide: opt.Size, MaxSide: 4 * opt.Size},
		Warn: func(s pipeline.Skipped) {
			log.Warn("skipping image", "file", s.Path, "reason", s.Err.Error())
		},
	})
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(opt.Out, 0o755); err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(opt.Seed, 0))
	var out []string
	for i := range opt.N {
		img := set.Images[i%len(set.Images)] // every image before any repeats
		c := pipeline.RandomCrop(rng, img, pipeline.CropOptions{Size: opt.Size, MinScale: opt.MinScale})
		p := filepath.Join(opt.Out, fmt.Sprintf("crop-%03d.png", i))
		if err := imaging.Save(c, p); err != nil {
			return out, err
		}
		out = append(out, p)
	}
	return out, nil
}
