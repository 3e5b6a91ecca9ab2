// Package testimages makes the images that tests and benchmarks use: small
// synthetic photos with structure at several scales, and every kind of bad
// file the pipeline must survive.
package testimages

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// Photo draws a w x h image from seed: a smooth colour field, overlapping
// discs and bars with hard edges, and fine texture, so that a generator has
// both blur-friendly and detail-heavy content to learn.
func Photo(seed uint64, w, h int) *image.NRGBA {
	rng := rand.New(rand.NewPCG(seed, 7))
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	var base, grad [3]float64
	for c := range 3 {
		base[c] = 40 + 150*rng.Float64()
		grad[c] = (rng.Float64() - 0.5) * 120
	}
	type disc struct {
		x, y, r float64
		col     [3]float64
	}
	discs := make([]disc, 6+rng.IntN(6))
	for i := range discs {
		discs[i] = disc{rng.Float64() * float64(w), rng.Float64() * float64(h), (0.05 + 0.2*rng.Float64()) * float64(min(w, h)),
			[3]float64{255 * rng.Float64(), 255 * rng.Float64(), 255 * rng.Float64()}}
	}
	period := 3 + 5*rng.Float64()
	for y := range h {
		for x := range w {
			var px [3]float64
			for c := range 3 {
				px[c] = base[c] + grad[c]*(float64(x)/float64(w)-float64(y)/float64(h))
			}
			for _, d := range discs {
				if math.Hypot(float64(x)-d.x, float64(y)-d.y) < d.r {
					px = d.col
				}
			}
			tex := 18 * math.Sin(float64(x)/period) * math.Cos(float64(y)/(period*1.3))
			i := img.PixOffset(x, y)
			for c := range 3 {
				img.Pix[i+c] = clamp(px[c] + tex)
			}
			img.Pix[i+3] = 255
		}
	}
	return img
}

func clamp(v float64) uint8 {
	return uint8(math.Max(0, math.Min(255, v)))
}

// PhotoDir writes n synthetic photos of w x h into a new temporary folder
// of the test's and returns the folder.
func PhotoDir(t testing.TB, n, w, h int, seed uint64) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := WritePhotos(dir, n, w, h, seed); err != nil {
		t.Fatal(err)
	}
	return dir
}

// WritePhotos writes n synthetic photos of w x h as PNG and JPEG
// alternately, and returns their paths.
func WritePhotos(dir string, n, w, h int, seed uint64) ([]string, error) {
	var paths []string
	for i := range n {
		img := Photo(seed+uint64(i), w, h)
		var buf bytes.Buffer
		name := filepath.Join(dir, "photo"+string(rune('a'+i%26))+itoa(i))
		var err error
		if i%2 == 0 {
			name += ".png"
			err = png.Encode(&buf, img)
		} else {
			name += ".jpg"
			err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: 92})
		}
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(name, buf.Bytes(), 0o644); err != nil {
			return nil, err
		}
		paths = append(paths, name)
	}
	return paths, nil
}

func itoa(i int) string {
	return string([]byte{byte('0' + i/100%10), byte('0' + i/10%10), byte('0' + i%10)})
}

// Bad file kinds. Unusable ones must be skipped with a warning; convertible
// ones must be used.
const (
	Truncated  = "truncated.jpg"
	Empty      = "empty.png"
	NotImage   = "notes.png"
	Deep16     = "deep16.png"
	CMYK       = "cmyk.jpg"
	Alpha      = "alpha.png"
	Tiny       = "tiny.png"
	HugeHeader = "huge-header.png"
)

// Unusable are the bad files that must be skipped.
var Unusable = []string{Truncated, Empty, NotImage, HugeHeader}

// Convertible are the odd files that must be converted and used.
var Convertible = []string{Deep16, CMYK, Alpha, Tiny}

// WriteBadFiles writes one file of each kind into dir. cmykJPEG is the
// CMYK JPEG from testdata/, which Go cannot encode.
func WriteBadFiles(dir string, cmykJPEG []byte) error {
	photo := Photo(99, 96, 96)
	var jpg, small bytes.Buffer
	if err := jpeg.Encode(&jpg, photo, nil); err != nil {
		return err
	}
	if err := png.Encode(&small, Photo(98, 20, 12)); err != nil {
		return err
	}
	deep := image.NewNRGBA64(photo.Bounds())
	alpha := image.NewNRGBA(photo.Bounds())
	for y := range 96 {
		for x := range 96 {
			c := photo.NRGBAAt(x, y)
			deep.SetNRGBA64(x, y, color.NRGBA64{uint16(c.R) * 257, uint16(c.G) * 257, uint16(c.B) * 257, 0xffff})
			c.A = uint8(x * 255 / 95)
			alpha.SetNRGBA(x, y, c)
		}
	}
	var deepBuf, alphaBuf bytes.Buffer
	if err := png.Encode(&deepBuf, deep); err != nil {
		return err
	}
	if err := png.Encode(&alphaBuf, alpha); err != nil {
		return err
	}
	huge, err := HugeHeaderPNG(60000, 60000)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		Truncated:  jpg.Bytes()[:jpg.Len()/2],
		Empty:      nil,
		NotImage:   []byte("these are notes, not a picture\n"),
		Deep16:     deepBuf.Bytes(),
		CMYK:       cmykJPEG,
		Alpha:      alphaBuf.Bytes(),
		Tiny:       small.Bytes(),
		HugeHeader: huge,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// HugeHeaderPNG returns a small, well-formed PNG whose header claims w x h:
// a decompression bomb's first bytes.
func HugeHeaderPNG(w, h uint32) ([]byte, error) {
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, 1, 1))); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	// Signature (8), IHDR length (4), "IHDR" (4), width, height, ...
	binary.BigEndian.PutUint32(b[16:], w)
	binary.BigEndian.PutUint32(b[20:], h)
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	return b, nil
}
