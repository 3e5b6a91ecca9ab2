package turbojpeg

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"math"
	"testing"

	"github.com/deepsim/deepsim/internal/testimages"
)

// newDecoder is a decoder closed when the test ends.
func newDecoder(t testing.TB) *Decoder {
	d, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// gradient is a smooth test picture: DCT scaling keeps it nearly exact.
func gradient(w, h int) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.SetNRGBA(x, y, color.NRGBA{uint8(x * 255 / w), uint8(y * 255 / h), 128, 255})
		}
	}
	return img
}

func TestDecodeMatchesGoDecoder(t *testing.T) {
	src := gradient(123, 77)
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, src, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	ref, err := jpeg.Decode(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	d := newDecoder(t)
	w, h, err := d.Header(buf.Bytes())
	if err != nil || w != 123 || h != 77 {
		t.Fatalf("Header = %d, %d, %v; want 123, 77", w, h, err)
	}
	for _, scale := range Scales {
		img, err := d.Decode(buf.Bytes(), scale)
		if err != nil {
			t.Fatalf("1/%d: %v", scale, err)
		}
		sw, sh := ScaledSize(123, 77, scale)
		if got := img.Bounds().Size(); got != image.Pt(sw, sh) {
			t.Fatalf("1/%d: size %v, want %dx%d", scale, got, sw, sh)
		}
		// Each decoded pixel against the mean of the block of Go's
		// full-size decode it stands for.
		var sum float64
		for y := range sh {
			for x := range sw {
				r, _, _, _ := ref.At(min(x*scale+scale/2, 122), min(y*scale+scale/2, 76)).RGBA()
				sum += math.Abs(float64(img.Pix[img.PixOffset(x, y)]) - float64(r>>8))
			}
		}
		if mean := sum / float64(sw*sh); mean > 4 {
			t.Errorf("1/%d: mean red error %.2f against Go's decode", scale, mean)
		}
		if img.Pix[3] != 255 {
			t.Errorf("1/%d: alpha %d, want opaque", scale, img.Pix[3])
		}
	}
}

func TestBadData(t *testing.T) {
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, gradient(64, 64), nil); err != nil {
		t.Fatal(err)
	}
	d := newDecoder(t)
	for name, b := range map[string][]byte{
		"empty":     nil,
		"not jpeg":  []byte("hello, world: this is no JPEG"),
		"truncated": buf.Bytes()[:buf.Len()/2],
	} {
		if _, err := d.Decode(b, 1); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	if _, err := d.Decode(buf.Bytes(), 3); err == nil {
		t.Error("scale 1/3: decoded without error")
	}
	// A header that fails deep in its parsing (a dimension over
	// libjpeg's limit) leaves the decoder usable.
	huge := bytes.Clone(buf.Bytes())
	i := bytes.Index(huge, []byte{0xff, 0xc0}) // SOF0: length, precision, height, width
	copy(huge[i+5:], []byte{0xff, 0xf0, 0xff, 0xf0})
	if _, _, err := d.Header(huge); err == nil {
		t.Fatal("a 65520x65520 header was read")
	}
	if _, err := d.Decode(buf.Bytes(), 1); err != nil {
		t.Fatalf("after a failed header, a good image fails: %v", err)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	src := gradient(100, 60)
	b, err := Encode(src, 90)
	if err != nil {
		t.Fatal(err)
	}
	img, err := jpeg.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("Go cannot read the encoded file: %v", err)
	}
	if img.Bounds().Size() != image.Pt(100, 60) {
		t.Fatalf("size %v", img.Bounds().Size())
	}
	r, g, _, _ := img.At(90, 50).RGBA()
	if d := math.Abs(float64(r>>8) - 229); d > 6 {
		t.Errorf("red at (90,50) = %d, want about 229", r>>8)
	}
	if d := math.Abs(float64(g>>8) - 212); d > 6 {
		t.Errorf("green at (90,50) = %d, want about 212", g>>8)
	}
}

// BenchmarkDecode decodes a 500x375 quality-90 synthetic photo (the
// ImageNet average size) at each scale, and with Go's decoder for comparison.
func BenchmarkDecode(b *testing.B) {
	data, err := Encode(testimages.Photo(1, 500, 375), 90)
	if err != nil {
		b.Fatal(err)
	}
	d := newDecoder(b)
	for _, scale := range Scales {
		b.Run("1/"+string(rune('0'+scale)), func(b *testing.B) {
			for range b.N {
				if _, err := d.Decode(data, scale); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	// A 100 px crop of the middle, the size of a 64 px crop's at full scale.
	b.Run("region-1/1", func(b *testing.B) {
		for range b.N {
			if _, err := DecodeRegion(data, 1, image.Rect(200, 140, 300, 240)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("go", func(b *testing.B) {
		for range b.N {
			if _, err := jpeg.Decode(bytes.NewReader(data)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
