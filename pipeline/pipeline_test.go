package pipeline

import (
	"bytes"
	"errors"
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
