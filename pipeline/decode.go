package pipeline

import (
	"bufio"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	_ "image/jpeg" // registers the JPEG decoder
	_ "image/png"  // registers the PNG decoder
	"io"
	"os"

	"github.com/disintegration/imaging"
)

// DefaultMaxPixels bounds the size an image header may declare: decoding
// allocates width*height*4 bytes or more before the first pixel is read.
const DefaultMaxPixels = 64 << 20

// ErrTooLarge is returned for images whose declared size exceeds the limit.
var ErrTooLarge = errors.New("declared image size exceeds the limit")

// DecodeOptions controls how a file becomes an 8-bit RGB image.
type DecodeOptions struct {
	// MaxPixels refuses headers that declare more pixels than this
	// (DefaultMaxPixels when 0), before any pixel memory is allocated.
	MaxPixels int
	// MinSide upscales images whose short side is smaller, so that every
	// image can give a crop. 0 keeps them as they are.
	MinSide int
	// MaxSide downscales images whose short side is larger. Crops are cut at
	// random scales, so this only bounds memory. 0 keeps them as they are.
	MaxSide int
}

// Decode reads one image file and returns it as opaque 8-bit RGB in an
// NRGBA buffer. 16-bit, grayscale, paletted and CMYK images are converted;
// alpha is flattened onto white.
func Decode(path string, opt DecodeOptions) (*image.NRGBA, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() == 0 {
		return nil, errors.New("empty file")
	}
	r := bufio.NewReader(f)
	cfg, format, err := image.DecodeConfig(r)
	if err != nil {
		return nil, fmt.Errorf("not a readable JPEG or PNG: %w", err)
	}
	maxPx := opt.MaxPixels
	if maxPx <= 0 {
		maxPx = DefaultMaxPixels
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > int64(maxPx) {
		return nil, fmt.Errorf("%w: %s header declares %dx%d (limit %d pixels)", ErrTooLarge, format, cfg.Width, cfg.Height, maxPx)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	r.Reset(f)
	img, _, err := image.Decode(r)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", format, err)
	}
	return normalize(img, opt), nil
}

func normalize(img image.Image, opt DecodeOptions) *image.NRGBA {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	short := min(w, h)
	var out *image.NRGBA
	switch {
	case opt.MaxSide > 0 && short > opt.MaxSide:
		s := float64(opt.MaxSide) / float64(short)
		out = imaging.Resize(img, max(1, int(float64(w)*s+0.5)), max(1, int(float64(h)*s+0.5)), imaging.Linear)
	case opt.MinSide > 0 && short < opt.MinSide:
		s := float64(opt.MinSide) / float64(short)
		out = imaging.Resize(img, max(opt.MinSide, int(float64(w)*s+0.5)), max(opt.MinSide, int(float64(h)*s+0.5)), imaging.Linear)
	default:
		out = imaging.Clone(img)
	}
	if !opaque(out) {
		flat := image.NewNRGBA(out.Bounds())
		draw.Draw(flat, flat.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
		draw.Draw(flat, flat.Bounds(), out, out.Bounds().Min, draw.Over)
		out = flat
	}
	return out
}

func opaque(img *image.NRGBA) bool {
	for i := 3; i < len(img.Pix); i += 4 {
		if img.Pix[i] != 0xff {
			return false
		}
	}
	return true
}
