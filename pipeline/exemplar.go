package pipeline

import (
	"fmt"
	"image"
	"image/color"
	"math"
	"math/rand/v2"
	"sort"

	"github.com/disintegration/imaging"
)

// Exemplar is the data of an Exemplar-CNN: surrogate classes, each made of
// random transformations of one seed patch.
type Exemplar struct {
	images map[int]*image.NRGBA // the seeds' images, by item
	Seeds  []SeedPatch
	Size   int // side of the training patches
}

// SeedPatch is one surrogate class: a square region of an image.
type SeedPatch struct {
	Image      int     // the item
	CX, CY     float64 // centre
	Side       float64
	GradEnergy float64 // mean gradient magnitude: seeds are chosen textured
}

// How far a transformation may take a patch. The region cut around a seed
// must hold its largest scaled, shifted and rotated version.
const (
	augMinScale = 0.7
	augMaxScale = 1.4
	augShift    = 0.2  // of the seed's side
	augRotate   = 20.0 // degrees
	augReach    = augMaxScale*1.45/2 + augShift
)

// NewExemplar picks n seed patches from the loader's items, each image
// decoded whole with opt: from 3n random candidates it keeps the n with
// the most gradient energy, since flat patches make classes that no
// network can tell apart. Only the chosen seeds' images are kept. Bad
// items are skipped (and warned about once); too few good ones is an
// error.
func NewExemplar(l *Loader, n, size int, seed uint64, opt DecodeOptions) (*Exemplar, error) {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	var cands []SeedPatch
	images := map[int]*image.NRGBA{}
	bad := map[int]bool{}
	items := l.Source().Len()
	for tries := 0; len(cands) < 3*n; tries++ {
		if tries > 100*n+1000 {
			return nil, fmt.Errorf("exemplar: found %d of %d seed patches: the images are too few, too small or unreadable", len(cands), 3*n)
		}
		i := rng.IntN(items)
		if bad[i] {
			continue
		}
		img := images[i]
		if img == nil {
			var err error
			if img, err = l.Image(i, opt); err != nil {
				bad[i] = true
				if l.opt.Warn != nil {
					l.opt.Warn(Skipped{Path: l.Source().Name(i), Err: err})
				}
				continue
			}
		}
		b := img.Bounds()
		short := float64(min(b.Dx(), b.Dy()))
		maxSide := short / (2 * augReach)
		if maxSide < float64(size)/2 {
			continue
		}
		images[i] = img
		side := math.Max(float64(size)/2, maxSide*(0.3+0.7*rng.Float64()))
		m := side * augReach
		cx := m + rng.Float64()*(float64(b.Dx())-2*m)
		cy := m + rng.Float64()*(float64(b.Dy())-2*m)
		p := SeedPatch{Image: i, CX: cx + float64(b.Min.X), CY: cy + float64(b.Min.Y), Side: side}
		p.GradEnergy = gradEnergy(cut(img, p.CX, p.CY, side))
		cands = append(cands, p)
	}
	sort.SliceStable(cands, func(a, b int) bool { return cands[a].GradEnergy > cands[b].GradEnergy })
	e := &Exemplar{images: map[int]*image.NRGBA{}, Seeds: cands[:n], Size: size}
	for _, s := range e.Seeds {
		e.images[s.Image] = images[s.Image]
	}
	return e, nil
}

func cut(img *image.NRGBA, cx, cy, side float64) *image.NRGBA {
	r := image.Rect(int(cx-side/2), int(cy-side/2), int(cx+side/2+0.5), int(cy+side/2+0.5))
	return imaging.Crop(img, r.Intersect(img.Bounds()))
}

func gradEnergy(img *image.NRGBA) float64 {
	small := imaging.Resize(img, 32, 32, imaging.Box)
	var sum float64
	for y := 0; y < 31; y++ {
		for x := 0; x < 31; x++ {
			i := small.PixOffset(x, y)
			for c := 0; c < 3; c++ {
				v := float64(small.Pix[i+c])
				sum += math.Abs(v-float64(small.Pix[i+4+c])) + math.Abs(v-float64(small.Pix[i+small.Stride+c]))
			}
		}
	}
	return sum / (31 * 31 * 6)
}

// Augment draws one random transformation of seed patch c: scale,
// translation, rotation, flip and colour jitter, at Size x Size.
func (e *Exemplar) Augment(rng *rand.Rand, c int) *image.NRGBA {
	s := e.Seeds[c]
	img := e.images[s.Image]
	scale := math.Exp(math.Log(augMinScale) + rng.Float64()*math.Log(augMaxScale/augMinScale))
	side := s.Side * scale
	cx := s.CX + (2*rng.Float64()-1)*augShift*s.Side
	cy := s.CY + (2*rng.Float64()-1)*augShift*s.Side
	angle := (2*rng.Float64() - 1) * augRotate
	region := cut(img, cx, cy, side*1.45)
	region = imaging.Rotate(region, angle, color.Gray{128})
	b := region.Bounds()
	patch := imaging.CropCenter(region, min(int(side+0.5), b.Dx()), min(int(side+0.5), b.Dy()))
	patch = imaging.Resize(patch, e.Size, e.Size, imaging.Linear)
	if rng.IntN(2) == 1 {
		patch = imaging.FlipH(patch)
	}
	patch = imaging.AdjustBrightness(patch, (2*rng.Float64()-1)*20)
	patch = imaging.AdjustContrast(patch, (2*rng.Float64()-1)*30)
	return imaging.AdjustSaturation(patch, (2*rng.Float64()-1)*40)
}

// Batch is the training batch at position index: n patches of uniformly
// drawn classes.
func (e *Exemplar) Batch(seed uint64, index int64, n int) Batch {
	rng := rand.New(rand.NewPCG(seed, uint64(index)))
	return e.fill(rng, index, n, func(int) int { return rng.IntN(len(e.Seeds)) })
}

// Heldout is a fixed set of perClass fresh transformations of every class,
// drawn from a random stream that training never uses.
func (e *Exemplar) Heldout(seed uint64, perClass int) Batch {
	rng := rand.New(rand.NewPCG(seed^0x9e3779b97f4a7c15, 1<<62))
	return e.fill(rng, -1, perClass*len(e.Seeds), func(i int) int { return i % len(e.Seeds) })
}

func (e *Exemplar) fill(rng *rand.Rand, index int64, n int, class func(int) int) Batch {
	plane := 3 * e.Size * e.Size
	b := Batch{Index: index, N: n, Size: e.Size, Data: make([]float32, n*plane), Labels: make([]int64, n)}
	for i := range n {
		c := class(i)
		p := e.Augment(rng, c)
		ToCHW(p, p.Bounds(), b.Data[i*plane:(i+1)*plane])
		b.Labels[i] = int64(c)
	}
	return b
}
