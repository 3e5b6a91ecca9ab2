package pipeline

import (
	"image"
	"math"
	"math/rand/v2"
)

// CropOptions controls how training crops are cut.
type CropOptions struct {
	Size int // output side in pixels
	// MinScale is the smallest region side, as a fraction of the image's
	// short side, that a crop may cover; the largest is the whole short
	// side. Scales are drawn log-uniformly in between, so fine and coarse
	// detail are equally likely.
	MinScale float64
}

// DrawCrop draws the square region of a crop of a w x h image: its side
// log-uniform between max(opt.Size, opt.MinScale * the short side) and the
// short side, so fine and coarse detail are equally likely, and its
// position uniform.
func DrawCrop(rng *rand.Rand, w, h int, opt CropOptions) image.Rectangle {
	short := min(w, h)
	lo := max(float64(opt.Size), opt.MinScale*float64(short))
	lo = min(lo, float64(short))
	side := int(math.Round(lo * math.Pow(float64(short)/lo, rng.Float64())))
	side = max(1, min(side, short))
	x := rng.IntN(w - side + 1)
	y := rng.IntN(h - side + 1)
	return image.Rect(x, y, x+side, y+side)
}

// ToCHW writes the region r of img as float32 CHW in [-1,1] into dst,
// which must hold 3*r.Dx()*r.Dy() values. Parts of r outside the image
// repeat its edge pixels.
func ToCHW(img *image.NRGBA, r image.Rectangle, dst []float32) {
	b := img.Bounds()
	w, h := r.Dx(), r.Dy()
	plane := w * h
	for y := range h {
		sy := min(max(r.Min.Y+y, b.Min.Y), b.Max.Y-1)
		for x := range w {
			sx := min(max(r.Min.X+x, b.Min.X), b.Max.X-1)
			p := img.Pix[img.PixOffset(sx, sy):]
			i := y*w + x
			dst[i] = float32(p[0])/127.5 - 1
			dst[plane+i] = float32(p[1])/127.5 - 1
			dst[2*plane+i] = float32(p[2])/127.5 - 1
		}
	}
}

// FromCHW turns float32 CHW values in [-1,1] back into an 8-bit image,
// clamping values outside the range.
func FromCHW(src []float32, w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	plane := w * h
	for y := range h {
		row := img.Pix[y*img.Stride:]
		for x := range w {
			i := y*w + x
			p := row[4*x:]
			p[0] = toByte(src[i])
			p[1] = toByte(src[plane+i])
			p[2] = toByte(src[2*plane+i])
			p[3] = 0xff
		}
	}
	return img
}

func toByte(v float32) uint8 {
	f := (float64(v) + 1) * 127.5
	switch {
	case f <= 0 || math.IsNaN(f):
		return 0
	case f >= 255:
		return 255
	}
	return uint8(f + 0.5)
}
