package turbojpeg

import (
	"bytes"
	"fmt"
	"image"
	"math/rand/v2"
	"testing"

	"github.com/deepsim/deepsim/internal/testimages"
)

// The region decode must give Decode's pixels exactly, for every chroma
// subsampling, baseline and progressive, at every scale: crops are the same
// whether they come from a cached whole image or from a region.
func TestDecodeRegionMatchesDecode(t *testing.T) {
	// Odd sizes, so that partial iMCUs sit on the right and bottom edges.
	src := testimages.Photo(3, 301, 217)
	d := newDecoder(t)
	samps := []struct {
		name string
		samp int
	}{{"444", 0}, {"422", 1}, {"420", 2}, {"gray", 3}, {"440", 4}, {"411", 5}}
	for _, s := range samps {
		for _, progressive := range []bool{false, true} {
			flags := 0
			if progressive {
				flags = flagProgressive
			}
			b, err := encode(src, 90, s.samp, flags)
			if err != nil {
				t.Fatal(err)
			}
			for _, scale := range Scales {
				name := fmt.Sprintf("%s progressive=%v 1/%d", s.name, progressive, scale)
				whole, err := d.Decode(b, scale)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				W, H := whole.Bounds().Dx(), whole.Bounds().Dy()
				rng := rand.New(rand.NewPCG(uint64(scale), uint64(s.samp)))
				rects := []image.Rectangle{whole.Bounds(), image.Rect(W-1, H-1, W, H), image.Rect(0, 0, 1, 1)}
				for range 40 {
					x0, y0 := rng.IntN(W), rng.IntN(H)
					rects = append(rects, image.Rect(x0, y0, x0+1+rng.IntN(W-x0), y0+1+rng.IntN(H-y0)))
				}
				for _, r := range rects {
					got, err := DecodeRegion(b, scale, r)
					if err != nil {
						t.Fatalf("%s %v: %v", name, r, err)
					}
					for y := r.Min.Y; y < r.Max.Y; y++ {
						want := whole.Pix[whole.PixOffset(r.Min.X, y):whole.PixOffset(r.Max.X, y)]
						row := got.Pix[got.PixOffset(0, y-r.Min.Y):got.PixOffset(r.Dx(), y-r.Min.Y)]
						if !bytes.Equal(row, want) {
							t.Fatalf("%s %v: row %d differs from the whole decode", name, r, y)
						}
					}
				}
			}
		}
	}
}

// Damage anywhere in the file fails the region decode exactly when it
// fails the whole decode, wherever the region is: so whether an item is
// bad never depends on which path decoded it.
func TestDecodeRegionFailsWhereDecodeFails(t *testing.T) {
	b, err := Encode(testimages.Photo(4, 200, 150), 90)
	if err != nil {
		t.Fatal(err)
	}
	d := newDecoder(t)
	rng := rand.New(rand.NewPCG(1, 2))
	var failed int
	for k := range 300 {
		bad := bytes.Clone(b)
		switch k % 3 {
		case 0: // flipped bits in the data
			for range 1 + rng.IntN(3) {
				bad[len(bad)/3+rng.IntN(len(bad)*2/3-2)] ^= byte(1 << rng.IntN(8))
			}
		case 1: // truncated
			bad = bad[:len(bad)/4+rng.IntN(len(bad)*3/4)]
		case 2: // bytes overwritten near the end
			i := len(bad) - 2 - rng.IntN(len(bad)/4)
			bad[i] = byte(rng.IntN(256))
		}
		scale := Scales[rng.IntN(len(Scales))]
		whole, werr := d.Decode(bad, scale)
		r := image.Rect(0, 0, 8, 8) // the top-left corner: the damage is below it
		got, rerr := DecodeRegion(bad, scale, r)
		if (werr == nil) != (rerr == nil) {
			t.Fatalf("case %d: whole decode error %v, region decode error %v", k, werr, rerr)
		}
		if werr != nil {
			failed++
			continue
		}
		for y := range 8 {
			if !bytes.Equal(got.Pix[got.PixOffset(0, y):got.PixOffset(8, y)], whole.Pix[whole.PixOffset(0, y):whole.PixOffset(8, y)]) {
				t.Fatalf("case %d: pixels differ", k)
			}
		}
	}
	if failed < 100 {
		t.Fatalf("only %d of 300 damaged files failed: the test damages too little", failed)
	}
	for _, r := range []image.Rectangle{image.Rect(0, 0, 0, 0), image.Rect(190, 0, 210, 10), image.Rect(-1, 0, 5, 5)} {
		if _, err := DecodeRegion(b, 1, r); err == nil {
			t.Errorf("region %v of a 200x150 image: no error", r)
		}
	}
	if _, err := DecodeRegion([]byte("no jpeg at all"), 1, image.Rect(0, 0, 1, 1)); err == nil {
		t.Error("not a JPEG: no error")
	}
}
