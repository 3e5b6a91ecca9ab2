package runner

import (
	"context"
	"fmt"
	"image"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/disintegration/imaging"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/internal/atomicfile"
	"github.com/deepsim/deepsim/internal/npy"
	"github.com/deepsim/deepsim/pipeline"
	"github.com/deepsim/deepsim/pretrained"
)

// square is an image as an inversion sees it: centre-cropped to a square
// and resized to size, in [-1,1] CHW.
func square(img *image.NRGBA, size int) ([]float32, *image.NRGBA) {
	sq := imaging.Fill(img, size, size, imaging.Center, imaging.Lanczos)
	x := make([]float32, 3*size*size)
	pipeline.ToCHW(sq, sq.Bounds(), x)
	return x, sq
}

// invertImage regenerates an image from its target features with an
// inversion run: it returns the image as the run saw it and the result.
func invertImage(model *graphs.Model, img *image.NRGBA, size int) (in, out *image.NRGBA, err error) {
	x, in := square(img, size)
	y, err := model.Reconstruct(x, 1, size, size)
	if err != nil {
		return nil, nil, err
	}
	return in, pipeline.FromCHW(y, size, size), nil
}

// maxFeatureValues bounds a features file: a million images' worth of
// AlexNet's conv5 is far beyond any use, and far below exhausting memory.
const maxFeatureValues = 1 << 28

// invertFile inverts the features stored in opt.Features.
func invertFile(model *graphs.Model, cfg Config, opt ReconstructOptions) (*ReconstructSummary, error) {
	want, err := model.FeatureShape()
	if err != nil {
		return nil, err
	}
	f, err := os.Open(opt.Features)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	shape, data, err := npy.Read(f, maxFeatureValues)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", opt.Features, err)
	}
	n := 0
	switch {
	case len(shape) == 4 && [3]int(shape[1:]) == want && shape[0] > 0:
		n = shape[0]
	case len(shape) == 3 && [3]int(shape) == want:
		n = 1
	default:
		return nil, fmt.Errorf("%s has shape %v, but %s inverts %s, whose features have shape (N, %d, %d, %d)",
			opt.Features, shape, opt.Run, cfg.TargetSpec(), want[0], want[1], want[2])
	}
	per := want[0] * want[1] * want[2]
	sum := &ReconstructSummary{}
	var outs []*image.NRGBA
	for i := range n {
		y, err := model.Invert(data[i*per:(i+1)*per], 1)
		if err != nil {
			return sum, err
		}
		img := pipeline.FromCHW(y, cfg.Size, cfg.Size)
		dst := filepath.Join(opt.Out, fmt.Sprintf("%03d.png", i))
		if err := imaging.Save(img, dst); err != nil {
			return sum, fmt.Errorf("write %s: %w", dst, err)
		}
		sum.Written = append(sum.Written, dst)
		outs = append(outs, img)
	}
	sum.Grid = filepath.Join(opt.Out, GridFile)
	if err := imaging.Save(Mosaic([][]*image.NRGBA{outs}, 4, 4), sum.Grid); err != nil {
		return sum, fmt.Errorf("write grid: %w", err)
	}
	return sum, nil
}

// FeaturesOptions controls Features.
type FeaturesOptions struct {
	// Target is the network and its one layer (a comparator spec).
	Target string
	// Size is the side images are centre-cropped and resized to; the
	// target sees them at TargetSize (0: Size). An inversion run's features
	// come out of the same preparation with its --size and --target-size.
	Size, TargetSize int
	Inputs           []string
	Out              string // a .npy file
	Store            pretrained.Store
	Log              *slog.Logger
}

// Features writes the target's features of the input images to a .npy
// file, float32 (N, C, H, W) in input order (fully connected layers give
// (N, D, 1, 1)), and returns the images in that order. An input that
// cannot be read is skipped with a warning.
func Features(ctx context.Context, opt FeaturesOptions) ([]string, error) {
	log := opt.Log
	if log == nil {
		log = slog.Default()
	}
	if !strings.HasSuffix(opt.Out, ".npy") {
		return nil, fmt.Errorf("%s: features are written as .npy", opt.Out)
	}
	if opt.Size < pretrained.MinInputSize {
		return nil, fmt.Errorf("size %d: images are prepared at least at %d px", opt.Size, pretrained.MinInputSize)
	}
	files, err := expandInputs(opt.Inputs)
	if err != nil {
		return nil, err
	}
	net, err := pretrained.Resolve(opt.Target, opt.Store)
	if err != nil {
		return nil, err
	}
	side, err := fitSide(net, opt.Size, opt.TargetSize, "target_size", log)
	if err != nil {
		return nil, err
	}
	target, err := net.Open(side)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	var all []float32
	var shape [4]int
	var used []string
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		img, err := pipeline.Decode(f, pipeline.DecodeOptions{})
		if err != nil {
			log.Warn("skipping image", "file", f, "reason", err.Error())
			continue
		}
		x, _ := square(img, opt.Size)
		feat, s, err := target.Features(x, 1, opt.Size, opt.Size)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		all, shape, used = append(all, feat...), s, append(used, f)
	}
	if len(used) == 0 {
		return nil, fmt.Errorf("none of %d inputs could be read", len(files))
	}
	var b strings.Builder
	if err := npy.Write(&b, []int{len(used), shape[1], shape[2], shape[3]}, all); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(opt.Out), 0o755); err != nil {
		return nil, err
	}
	return used, atomicfile.WriteFile(opt.Out, []byte(b.String()))
}
