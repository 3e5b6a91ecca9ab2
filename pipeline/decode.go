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

// MaxKeptPixels bounds an image as the pipeline keeps it, after resizing:
// 64 MB of pixels. A photo kept at a 512 px short side stays far below it;
// a 1 x 65536 image upscaled to a 32 px short side would not.
const MaxKeptPixels = 16 << 20

// ErrTooLarge is returned for images whose declared size exceeds the limit.
var ErrTooLarge = errors.New("declared image size exceeds the limit")

// DecodeOptions controls how a file becomes an 8-bit RGB image.
type DecodeOptions struct {
	// MaxPixels refuses headers that declare more pixels than this
	// (DefaultMaxPixels when 0), before any pixel memory is allocated.
	MaxPixels int
	// MaxKept refuses images that resizing would make larger than this
	// (MaxKeptPixels when 0).
	MaxKept int
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
	// A FIFO or a device would be read forever: only regular files are
	// opened.
	if st, err := os.Stat(path); err != nil {
		return nil, err
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", st.Mode().Type())
	} else if st.Size() == 0 {
		return nil, errors.New("empty file")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return decodeFrom(f, opt)
}

// decodeFrom is Decode's work on an open file.
func decodeFrom(f io.ReadSeeker, opt DecodeOptions) (*image.NRGBA, error) {
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
	// What is kept after resizing is bounded too: a 1 x 65536 image
	// upscaled to a 64 px short side would need 268 million pixels.
	maxKept := opt.MaxKept
	if maxKept <= 0 {
		maxKept = MaxKeptPixels
	}
	if w, h := targetSize(cfg.Width, cfg.Height, opt); (w != cfg.Width || h != cfg.Height) && int64(w)*int64(h) > int64(maxKept) {
		return nil, fmt.Errorf("%w: a %dx%d %s would be resized to %dx%d (limit %d pixels)", ErrTooLarge, cfg.Width, cfg.Height, format, w, h, maxKept)
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

// targetSize is the size an image of w x h is resized to: its short side
// brought into [MinSide, MaxSide].
func targetSize(w, h int, opt DecodeOptions) (int, int) {
	short := min(w, h)
	switch {
	case opt.MaxSide > 0 && short > opt.MaxSide:
		s := float64(opt.MaxSide) / float64(short)
		return max(1, int(float64(w)*s+0.5)), max(1, int(float64(h)*s+0.5))
	case opt.MinSide > 0 && short < opt.MinSide:
		s := float64(opt.MinSide) / float64(short)
		return max(opt.MinSide, int(float64(w)*s+0.5)), max(opt.MinSide, int(float64(h)*s+0.5))
	}
	return w, h
}

func normalize(img image.Image, opt DecodeOptions) *image.NRGBA {
	b := img.Bounds()
	var out *image.NRGBA
	if w, h := targetSize(b.Dx(), b.Dy(), opt); w != b.Dx() || h != b.Dy() {
		out = imaging.Resize(img, w, h, imaging.Linear)
	} else {
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
