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
	"github.com/deepsim/deepsim/pipeline"
	"github.com/deepsim/deepsim/pretrained"
)

// GridFile is the side-by-side sheet (input | reconstruction) that
// reconstruct writes beside the per-image outputs.
const GridFile = "grid.png"

// ReconstructOptions controls Reconstruct.
type ReconstructOptions struct {
	Run    string   // run folder
	Out    string   // output folder
	Inputs []string // image files or folders
	// Features, for an inversion run, is a .npy file of target features to
	// invert instead of images: float32, (N, C, H, W) or (C, H, W).
	Features string
	Store    pretrained.Store
	Log      *slog.Logger
}

// ReconstructSummary lists what was written.
type ReconstructSummary struct {
	Written []string
	Skipped []pipeline.Skipped
	Grid    string
}

// Reconstruct encodes and decodes every input image with a trained run and
// writes OUT/<base name>.png at the input's own width and height, plus
// OUT/grid.png. Images of any size are covered by overlapping tiles at
// native resolution (the networks are fully convolutional); nothing is
// resized. An inversion run instead regenerates each image, centre-cropped
// to a square at the training size, from its target's features, or with
// Features inverts stored features into OUT/000.png, 001.png, ... An input
// that cannot be read is skipped with a warning.
func Reconstruct(ctx context.Context, opt ReconstructOptions) (*ReconstructSummary, error) {
	log := opt.Log
	if log == nil {
		log = slog.Default()
	}
	var files []string
	if opt.Features == "" || len(opt.Inputs) > 0 {
		var err error
		if files, err = expandInputs(opt.Inputs); err != nil {
			return nil, err
		}
	}
	inputs := append(append([]string(nil), files...), opt.Inputs...)
	if opt.Features != "" {
		inputs = append(inputs, opt.Features)
	}
	if err := keepInputs("reconstruct", opt.Out, inputs); err != nil {
		return nil, err
	}
	model, cfg, err := OpenModel(opt.Run, opt.Store)
	if err != nil {
		return nil, err
	}
	defer model.Close()
	t, err := taskNamed(cfg.Task)
	if err != nil {
		return nil, err
	}
	inversion := t.inverts()
	if !inversion && opt.Features != "" {
		return nil, fmt.Errorf("%s is a %s run: only an inversion run inverts features", opt.Run, cfg.Task)
	}
	if err := os.MkdirAll(opt.Out, 0o755); err != nil {
		return nil, err
	}
	if opt.Features != "" {
		return invertFile(model, cfg, opt)
	}
	sum := &ReconstructSummary{}
	var pairs [][2]*image.NRGBA
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return sum, err
		}
		in, err := pipeline.Decode(f, pipeline.DecodeOptions{})
		if err != nil {
			log.Warn("skipping image", "file", f, "reason", err.Error())
			sum.Skipped = append(sum.Skipped, pipeline.Skipped{Path: f, Err: err})
			continue
		}
		var out *image.NRGBA
		if inversion {
			in, out, err = invertImage(model, in, cfg.Size)
		} else {
			out, err = ReconstructImage(model, in, cfg.Size)
		}
		if err != nil {
			return sum, fmt.Errorf("%s: %w", f, err)
		}
		dst := filepath.Join(opt.Out, outputName(f))
		if err := imaging.Save(out, dst); err != nil {
			return sum, fmt.Errorf("write %s: %w", dst, err)
		}
		sum.Written = append(sum.Written, dst)
		pairs = append(pairs, [2]*image.NRGBA{in, out})
	}
	if len(pairs) == 0 {
		return sum, fmt.Errorf("none of %d inputs could be read", len(files))
	}
	sum.Grid = filepath.Join(opt.Out, GridFile)
	if err := imaging.Save(Grid(pairs, 160), sum.Grid); err != nil {
		return sum, fmt.Errorf("write grid: %w", err)
	}
	return sum, nil
}

func outputName(path string) string {
	base := filepath.Base(path)
	return strings.TrimSuffix(base, filepath.Ext(base)) + ".png"
}

// expandInputs lists the image files named by args (files, or folders
// searched recursively) and refuses two inputs that would write the same
// output file.
func expandInputs(args []string) ([]string, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("no input images given")
	}
	files, err := pipeline.Find(args...)
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no JPEG or PNG images in %v", args)
	}
	seen := map[string]string{}
	for _, f := range files {
		name := outputName(f)
		if prev, ok := seen[name]; ok {
			return nil, fmt.Errorf("%s and %s would both be written as %s: rename one", prev, f, name)
		}
		seen[name] = f
	}
	return files, nil
}

// ReconstructImage runs an image of any size through the autoencoder. It
// covers the image with tiles of up to 4x the training crop, each with a
// margin of half a crop on every side that is computed and thrown away, so
// that tile seams see the same context as tile centres. Pixels beyond the
// image's edge repeat the edge.
func ReconstructImage(model *graphs.Model, img *image.NRGBA, crop int) (*image.NRGBA, error) {
	f := model.Factor()
	roundUp := func(v int) int { return (v + f - 1) / f * f }
	b := img.Bounds()
	W, H := b.Dx(), b.Dy()
	tw, th := min(roundUp(4*crop), roundUp(W)), min(roundUp(4*crop), roundUp(H))
	margin := roundUp(crop / 2)
	pw, ph := tw+2*margin, th+2*margin
	out := image.NewNRGBA(image.Rect(0, 0, W, H))

	type tile struct{ x, y int }
	var tiles []tile
	for y := 0; y < H; y += th {
		for x := 0; x < W; x += tw {
			tiles = append(tiles, tile{x, y})
		}
	}
	const perCall = 8
	plane := 3 * pw * ph
	for start := 0; start < len(tiles); start += perCall {
		batch := tiles[start:min(start+perCall, len(tiles))]
		x := make([]float32, len(batch)*plane)
		for i, t := range batch {
			r := image.Rect(t.x-margin, t.y-margin, t.x+tw+margin, t.y+th+margin).Add(b.Min)
			pipeline.ToCHW(img, r, x[i*plane:(i+1)*plane])
		}
		y, err := model.Reconstruct(x, len(batch), ph, pw)
		if err != nil {
			return nil, err
		}
		for i, t := range batch {
			rec := pipeline.FromCHW(y[i*plane:(i+1)*plane], pw, ph)
			core := image.Rect(margin, margin, margin+min(tw, W-t.x), margin+min(th, H-t.y))
			dst := image.Rect(t.x, t.y, t.x+core.Dx(), t.y+core.Dy())
			copyRect(out, dst, rec, core.Min)
		}
	}
	return out, nil
}

func copyRect(dst *image.NRGBA, r image.Rectangle, src *image.NRGBA, sp image.Point) {
	for y := 0; y < r.Dy(); y++ {
		d := dst.PixOffset(r.Min.X, r.Min.Y+y)
		s := src.PixOffset(sp.X, sp.Y+y)
		copy(dst.Pix[d:d+4*r.Dx()], src.Pix[s:s+4*r.Dx()])
	}
}

// Grid lays out pairs as rows of (input | reconstruction), each scaled to
// the given height.
func Grid(pairs [][2]*image.NRGBA, height int) *image.NRGBA {
	rows := make([][]*image.NRGBA, len(pairs))
	for i, p := range pairs {
		rows[i] = []*image.NRGBA{
			imaging.Resize(p[0], 0, height, imaging.Lanczos),
			imaging.Resize(p[1], 0, height, imaging.Lanczos),
		}
	}
	return Mosaic(rows, 4, 4)
}
