package pipeline

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/deepsim/deepsim/internal/testimages"
)

func writeBad(t *testing.T, dir string) {
	t.Helper()
	cmyk, err := os.ReadFile("../testdata/cmyk.jpg")
	if err != nil {
		t.Fatal(err)
	}
	if err := testimages.WriteBadFiles(dir, cmyk); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeBadFiles(t *testing.T) {
	dir := t.TempDir()
	writeBad(t, dir)
	opt := DecodeOptions{MinSide: 64, MaxSide: 256}
	tests := []struct {
		name    string
		wantErr bool
		tooBig  bool
	}{
		{testimages.Truncated, true, false},
		{testimages.Empty, true, false},
		{testimages.NotImage, true, false},
		{testimages.HugeHeader, true, true},
		{testimages.Deep16, false, false},
		{testimages.CMYK, false, false},
		{testimages.Alpha, false, false},
		{testimages.Tiny, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			img, err := Decode(filepath.Join(dir, tc.name), opt)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("decoded %v, want an error", img.Bounds())
				}
				if tc.tooBig != errors.Is(err, ErrTooLarge) {
					t.Fatalf("err = %v, ErrTooLarge = %v", err, tc.tooBig)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			b := img.Bounds()
			if min(b.Dx(), b.Dy()) < opt.MinSide {
				t.Fatalf("short side %d < %d", min(b.Dx(), b.Dy()), opt.MinSide)
			}
			for i := 3; i < len(img.Pix); i += 4 {
				if img.Pix[i] != 255 {
					t.Fatal("decoded image is not opaque")
				}
			}
		})
	}
}

func TestDecodeConversions(t *testing.T) {
	dir := t.TempDir()
	writeBad(t, dir)
	ref := testimages.Photo(99, 96, 96)
	// The 16-bit PNG holds the same pixels as ref: conversion must keep them.
	deep, err := Decode(filepath.Join(dir, testimages.Deep16), DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(deep.Pix, ref.Pix) {
		t.Fatal("16-bit PNG did not convert to the same 8-bit pixels")
	}
	// Alpha 0 at x=0 flattens onto white.
	a, err := Decode(filepath.Join(dir, testimages.Alpha), DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := a.NRGBAAt(0, 10); c.R != 255 || c.G != 255 || c.B != 255 {
		t.Fatalf("transparent pixel became %v, want white", c)
	}
	// The CMYK gradient runs orange to navy: not grey, and it varies.
	c, err := Decode(filepath.Join(dir, testimages.CMYK), DecodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	top, bottom := c.NRGBAAt(48, 2), c.NRGBAAt(48, 93)
	if top == bottom {
		t.Fatalf("CMYK image decoded flat: %v", top)
	}
}

func TestLoadSkipsEachBadFileOnce(t *testing.T) {
	dir := t.TempDir()
	writeBad(t, dir)
	if _, err := testimages.WritePhotos(dir, 3, 128, 96, 1); err != nil {
		t.Fatal(err)
	}
	paths, err := Find(dir)
	if err != nil {
		t.Fatal(err)
	}
	warned := map[string]int{}
	set, err := Load(context.Background(), paths, LoadOptions{
		Decode: DecodeOptions{MinSide: 64},
		Warn:   func(s Skipped) { warned[filepath.Base(s.Path)]++ },
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range testimages.Unusable {
		if warned[name] != 1 {
			t.Errorf("%s warned %d times, want 1", name, warned[name])
		}
	}
	if len(warned) != len(testimages.Unusable) {
		t.Errorf("warnings for %v, want only the unusable files", warned)
	}
	used := map[string]bool{}
	for _, p := range set.Paths {
		used[filepath.Base(p)] = true
	}
	for _, name := range testimages.Convertible {
		if !used[name] {
			t.Errorf("convertible file %s was not used", name)
		}
	}
	if got, want := len(set.Images), 3+len(testimages.Convertible); got != want {
		t.Errorf("%d images used, want %d", got, want)
	}
}

func TestFind(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "a", "b")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"x.JPG", "a/y.png", "a/b/z.jpeg", "a/readme.txt", "a/b/w.gif"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(dir, "x.JPG"), filepath.Join(sub, "link.jpg")); err != nil {
		t.Fatal(err)
	}
	got, err := Find(dir)
	if err != nil {
		t.Fatal(err)
	}
	var rel []string
	for _, p := range got {
		r, _ := filepath.Rel(dir, p)
		rel = append(rel, r)
	}
	want := []string{"a/b/link.jpg", "a/b/z.jpeg", "a/y.png", "x.JPG"}
	if !slices.Equal(rel, want) {
		t.Fatalf("Find = %v, want %v", rel, want)
	}
	if _, err := Find(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("Find on a missing folder succeeded")
	}
}

func testSet(t testing.TB) *Set {
	set := &Set{}
	for i := range 4 {
		set.Images = append(set.Images, testimages.Photo(uint64(i), 160, 120))
		set.Paths = append(set.Paths, "p")
	}
	return set
}

func TestStreamDeterministicAndResumable(t *testing.T) {
	set := testSet(t)
	opt := StreamOptions{Crop: CropOptions{Size: 32, MinScale: 0.2, Flip: true}, Batch: 3, Seed: 5}
	build := func(i int64) Batch { return MakeBatch(set, opt, i) }
	collect := func(start int64, n int) []Batch {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var out []Batch
		for b := range Stream(ctx, build, start, 3, 2) {
			out = append(out, b)
			if len(out) == n {
				break
			}
		}
		return out
	}
	full := collect(0, 8)
	again := collect(0, 8)
	resumed := collect(5, 3)
	for i, b := range full {
		if b.Index != int64(i) {
			t.Fatalf("batch %d has index %d", i, b.Index)
		}
		if !slices.Equal(b.Data, again[i].Data) {
			t.Fatalf("batch %d differs between two runs with one seed", i)
		}
		for _, v := range b.Data {
			if v < -1 || v > 1 {
				t.Fatalf("value %v outside [-1,1]", v)
			}
		}
	}
	for i, b := range resumed {
		if !slices.Equal(b.Data, full[5+i].Data) {
			t.Fatalf("resumed batch %d differs from the original", 5+i)
		}
	}
	if slices.Equal(full[0].Data, full[1].Data) {
		t.Fatal("consecutive batches are identical")
	}
	other := opt
	other.Seed = 6
	if slices.Equal(MakeBatch(set, other, 0).Data, full[0].Data) {
		t.Fatal("a different seed gave the same batch")
	}
}

func TestCHWRoundTrip(t *testing.T) {
	img := testimages.Photo(3, 17, 9)
	buf := make([]float32, 3*17*9)
	ToCHW(img, img.Bounds(), buf)
	back := FromCHW(buf, 17, 9)
	if !slices.Equal(back.Pix, img.Pix) {
		t.Fatal("CHW round trip changed pixels")
	}
	if got := FromCHW([]float32{-3, 2, 0}, 1, 1).NRGBAAt(0, 0); got.R != 0 || got.G != 255 || got.B != 128 {
		t.Fatalf("clamping gave %v", got)
	}
}

func TestExemplarClasses(t *testing.T) {
	set := &Set{}
	for i := range 3 {
		set.Images = append(set.Images, testimages.Photo(uint64(i), 400, 300))
		set.Paths = append(set.Paths, "p")
	}
	ex := NewExemplar(set, 6, 64, 1)
	if len(ex.Seeds) != 6 {
		t.Fatalf("%d seeds", len(ex.Seeds))
	}
	for i := 1; i < len(ex.Seeds); i++ {
		if ex.Seeds[i].GradEnergy > ex.Seeds[i-1].GradEnergy {
			t.Fatal("seeds are not ordered by texture")
		}
	}
	a, b := ex.Batch(2, 7, 5), ex.Batch(2, 7, 5)
	if !slices.Equal(a.Data, b.Data) || !slices.Equal(a.Labels, b.Labels) {
		t.Fatal("the same batch index gave different batches")
	}
	if a.N != 5 || len(a.Labels) != 5 || len(a.Data) != 5*3*64*64 {
		t.Fatalf("batch of %d with %d labels and %d values", a.N, len(a.Labels), len(a.Data))
	}
	for _, l := range a.Labels {
		if l < 0 || l >= 6 {
			t.Fatalf("label %d", l)
		}
	}
	h := ex.Heldout(2, 3)
	if h.N != 18 || h.Labels[0] != 0 || h.Labels[7] != 1 {
		t.Fatalf("held-out set: %d samples, labels %v", h.N, h.Labels[:8])
	}
	if slices.Equal(h.Data[:3*64*64], ex.Batch(2, 0, 1).Data) {
		t.Fatal("held-out sample equals a training sample")
	}
	// Two transformations of one class differ: augmentation is random.
	rng := rand.New(rand.NewPCG(1, 2))
	if slices.Equal(ex.Augment(rng, 0).Pix, ex.Augment(rng, 0).Pix) {
		t.Fatal("two augmentations are identical")
	}
}

// FuzzDecode feeds the image decoder anything (what Decode reads from a
// regular file): it returns an opaque image within its limits or an
// error, never panics.
func FuzzDecode(f *testing.F) {
	dir := f.TempDir()
	cmyk, _ := os.ReadFile("../testdata/cmyk.jpg")
	if err := testimages.WriteBadFiles(dir, cmyk); err != nil {
		f.Fatal(err)
	}
	testimages.WritePhotos(dir, 2, 24, 16, 1)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// Small limits (the same checks as the defaults'): a fuzzed header
		// may declare up to them, and decoding allocates that first.
		const limit = 1 << 16
		img, err := decodeFrom(bytes.NewReader(b), DecodeOptions{MinSide: 16, MaxSide: 64, MaxPixels: limit, MaxKept: limit})
		if err != nil {
			return
		}
		if b := img.Bounds(); b.Dx()*b.Dy() > limit || min(b.Dx(), b.Dy()) < 16 {
			t.Fatalf("decoded %v", b)
		}
	})
}
