package runner

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/disintegration/imaging"
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
		return nil, fmt.Errorf("crops: need n >= 1 and size >= 1")
	}
	if opt.N > maxImages {
		return nil, fmt.Errorf("crops: n %d: at most %d", opt.N, maxImages)
	}
	// Each source image is kept with its short side up to 4 x --size, and
	// each crop is made at --size: refuse sizes no memory holds.
	if err := fits(fmt.Sprintf("crops of %d px", opt.Size), 16*pixels(1, 4*opt.Size)); err != nil {
		return nil, err
	}
	for _, d := range opt.Data {
		if within(opt.Out, d) || within(d, opt.Out) {
			return nil, fmt.Errorf("crops: the output %s and the data %s overlap: the crops would become input images", opt.Out, d)
		}
	}
	// The largest crop covers up to 4 x --size of an image's short side.
	cfg := Config{Size: opt.Size, MinScale: opt.MinScale, MaxSide: 4 * opt.Size, CacheMB: DefaultCacheMB}
	data, err := openData(cfg, opt.Data, log, nil)
	if err != nil {
		return nil, err
	}
	defer data.Close()
	if err := os.MkdirAll(opt.Out, 0o755); err != nil {
		return nil, err
	}
	var out []string
	for i := range opt.N {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		// Every image before any repeats.
		c := data.Crop(i%data.Source().Len(), opt.Seed, int64(i), false)
		p := filepath.Join(opt.Out, fmt.Sprintf("crop-%03d.png", i))
		if err := imaging.Save(c, p); err != nil {
			return out, err
		}
		out = append(out, p)
	}
	return out, nil
}
