package runner

import (
	"context"
	"fmt"
	"image"
	"image/color"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"sort"

	"github.com/disintegration/imaging"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/pipeline"
	"github.com/deepsim/deepsim/pretrained"
)

// SimilarityOptions controls Similarity.
type SimilarityOptions struct {
	A, B       string // two images, or two folders paired by file name
	Comparator string
	// Judge, when set, replaces the feature distance under Comparator with
	// the LPIPS-style perceptual distance under Judge.
	Judge string
	Store pretrained.Store
	// Map, for two images, is where to write the spatial distance map.
	Map string
	Log *slog.Logger
}

// Pair is the distance of one pair of images; Error is set instead, and
// Distance is nil, for a file that has no partner or cannot be read.
type Pair struct {
	Name     string   `json:"name"`
	Distance *float64 `json:"distance,omitempty"`
	Error    string   `json:"error,omitempty"`
}

// SimilarityMaxSide bounds the longer side at which images are compared;
// larger pairs are scaled down, both by the same factor.
const SimilarityMaxSide = 1024

// Similarity returns the DeePSiM feature distance (the mean squared
// difference of the comparator's features) between two images or between
// the files of two folders with the same relative path. Images are compared
// at their own resolution; when the sizes of a pair differ, B is resized to
// A's size and a warning names the pair.
func Similarity(ctx context.Context, opt SimilarityOptions) ([]Pair, error) {
	log := opt.Log
	if log == nil {
		log = slog.Default()
	}
	sa, errA := os.Stat(opt.A)
	sb, errB := os.Stat(opt.B)
	if errA != nil || errB != nil {
		return nil, fmt.Errorf("similarity: %w", firstErr(errA, errB))
	}
	if sa.IsDir() != sb.IsDir() {
		return nil, fmt.Errorf("similarity: give two images or two folders, not one of each")
	}
	if opt.Map != "" && sa.IsDir() {
		return nil, fmt.Errorf("similarity: a distance map is for two images")
	}
	if opt.Map != "" && opt.Judge != "" {
		return nil, fmt.Errorf("similarity: a distance map maps the feature distance, not the judge's")
	}
	spec := opt.Comparator
	if opt.Judge != "" {
		spec = opt.Judge
	}
	comp, err := pretrained.OpenString(spec, opt.Store, pretrained.NativeSize)
	if err != nil {
		return nil, err
	}
	defer comp.Close()
	least, err := comp.MinSide()
	if err != nil {
		least = 0 // it computes nothing at any side: the pair's own call says why
	}
	c := comparer{comp: comp, spec: spec, least: least, perceptual: opt.Judge != "", log: log}
	if !sa.IsDir() {
		p, dmap, err := c.pair(filepath.Base(opt.A), opt.A, opt.B)
		if err != nil {
			return nil, err
		}
		if opt.Map != "" {
			if err := imaging.Save(dmap, opt.Map); err != nil {
				return nil, fmt.Errorf("write map: %w", err)
			}
		}
		return []Pair{p}, nil
	}
	names, err := pairNames(opt.A, opt.B)
	if err != nil {
		return nil, err
	}
	var out []Pair
	for _, n := range names {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		if n.only != "" {
			log.Warn("unmatched file", "name", n.name, "only_in", n.only)
			out = append(out, Pair{Name: n.name, Error: "only in " + n.only})
			continue
		}
		p, _, err := c.pair(n.name, filepath.Join(opt.A, n.name), filepath.Join(opt.B, n.name))
		if err != nil {
			log.Warn("skipping pair", "name", n.name, "reason", err.Error())
			out = append(out, Pair{Name: n.name, Error: err.Error()})
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

type pairName struct{ name, only string }

// pairNames matches the images of two folders by relative path.
func pairNames(a, b string) ([]pairName, error) {
	rel := func(root string) (map[string]bool, error) {
		files, err := pipeline.Find(root)
		if err != nil {
			return nil, err
		}
		m := map[string]bool{}
		for _, f := range files {
			r, err := filepath.Rel(root, f)
			if err != nil {
				return nil, err
			}
			m[r] = true
		}
		return m, nil
	}
	ma, err := rel(a)
	if err != nil {
		return nil, err
	}
	mb, err := rel(b)
	if err != nil {
		return nil, err
	}
	var out []pairName
	for n := range ma {
		if mb[n] {
			out = append(out, pairName{name: n})
		} else {
			out = append(out, pairName{name: n, only: a})
		}
	}
	for n := range mb {
		if !ma[n] {
			out = append(out, pairName{name: n, only: b})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out, nil
}

// comparer compares pairs of images with a comparator that sees them at
// their own size, down to the least side it takes.
type comparer struct {
	comp       *graphs.Comparator
	spec       string
	least      int  // comp.MinSide
	perceptual bool // the LPIPS-style distance rather than the feature distance
	log        *slog.Logger
}

// pair returns the distance of two image files and its spatial map: the
// comparator's feature distance, or with perceptual its LPIPS-style
// distance (and no map).
func (c comparer) pair(name, pa, pb string) (Pair, *image.NRGBA, error) {
	comp, perceptual, log := c.comp, c.perceptual, c.log
	a, err := pipeline.Decode(pa, pipeline.DecodeOptions{})
	if err != nil {
		return Pair{}, nil, fmt.Errorf("%s: %w", pa, err)
	}
	b, err := pipeline.Decode(pb, pipeline.DecodeOptions{})
	if err != nil {
		return Pair{}, nil, fmt.Errorf("%s: %w", pb, err)
	}
	if a.Bounds().Size() != b.Bounds().Size() {
		log.Warn("sizes differ: resizing B to A's size", "name", name,
			"a", a.Bounds().Size().String(), "b", b.Bounds().Size().String())
		b = imaging.Resize(b, a.Bounds().Dx(), a.Bounds().Dy(), imaging.Lanczos)
	}
	// Larger images are compared at most at SimilarityMaxSide, smaller
	// ones at least at the least side the comparator takes.
	var nw, nh int
	switch w, h := a.Bounds().Dx(), a.Bounds().Dy(); {
	case max(w, h) > SimilarityMaxSide:
		s := float64(SimilarityMaxSide) / float64(max(w, h))
		nw, nh = max(1, int(float64(w)*s)), max(1, int(float64(h)*s))
	case min(w, h) < c.least:
		s := float64(c.least) / float64(min(w, h))
		nw, nh = int(math.Ceil(float64(w)*s)), int(math.Ceil(float64(h)*s))
		if max(nw, nh) > SimilarityMaxSide {
			return Pair{}, nil, fmt.Errorf("%s: %dx%d is too narrow for %s, which takes images of at least %d px", name, w, h, c.spec, c.least)
		}
		log.Info("enlarging the pair to the least side the comparator takes", "name", name, "comparator", c.spec,
			"from", a.Bounds().Size().String(), "to", fmt.Sprintf("%dx%d", nw, nh))
	}
	if nw > 0 {
		a = imaging.Resize(a, nw, nh, imaging.Lanczos)
		b = imaging.Resize(b, nw, nh, imaging.Lanczos)
	}
	w, h := a.Bounds().Dx(), a.Bounds().Dy()
	x := make([]float32, 2*3*w*h)
	pipeline.ToCHW(a, a.Bounds(), x[:3*w*h])
	pipeline.ToCHW(b, b.Bounds(), x[3*w*h:])
	if perceptual {
		d, err := comp.Distance(x[:3*w*h], x[3*w*h:], 1, h, w)
		if err != nil {
			return Pair{}, nil, fmt.Errorf("%s: %w", name, err)
		}
		return Pair{Name: name, Distance: &d[0]}, nil, nil
	}
	f, shape, err := comp.Features(x, 2, h, w)
	if err != nil {
		return Pair{}, nil, fmt.Errorf("%s: %w", name, err)
	}
	ch, fh, fw := shape[1], shape[2], shape[3]
	per := ch * fh * fw
	dmap := make([]float64, fh*fw)
	var sum float64
	for i := range per {
		d := float64(f[i]) - float64(f[per+i])
		sum += d * d
		dmap[i%(fh*fw)] += d * d / float64(ch)
	}
	dist := sum / float64(per)
	return Pair{Name: name, Distance: &dist}, heatMap(dmap, fw, fh, w, h), nil
}

// heatMap colours a distance map (black, red, yellow, white as it grows,
// scaled to its maximum) and scales it to w x h.
func heatMap(d []float64, fw, fh, w, h int) *image.NRGBA {
	peak := 0.0
	for _, v := range d {
		peak = math.Max(peak, v)
	}
	img := image.NewNRGBA(image.Rect(0, 0, fw, fh))
	for i, v := range d {
		t := 0.0
		if peak > 0 {
			t = v / peak
		}
		ch := func(lo float64) uint8 { return uint8(255 * math.Min(1, math.Max(0, 3*(t-lo)))) }
		img.SetNRGBA(i%fw, i/fw, color.NRGBA{ch(0), ch(1.0 / 3), ch(2.0 / 3), 255})
	}
	return imaging.Resize(img, w, h, imaging.NearestNeighbor)
}
