package runner

import (
	"bytes"
	"context"
	"errors"
	"image"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/disintegration/imaging"

	"github.com/deepsim/deepsim/pipeline"
	"github.com/deepsim/deepsim/pretrained"
)

// The same seed gives the same samples and the same measures against the
// reference crops; another seed, other samples and other measures.
func TestSampleIsRepeatable(t *testing.T) {
	run, data := trainVAE(t)
	store := trainedJudge(t)
	dir := t.TempDir()
	sample := func(name string, seed uint64) ([]byte, *SampleResult) {
		t.Helper()
		out := filepath.Join(dir, name)
		res, err := Sample(context.Background(), SampleOptions{Run: run, Out: out, N: 9, Seed: seed, Ref: data,
			Judge: "mobilenetv2", Store: store, Log: discardLog()})
		if err != nil {
			t.Fatal(err)
		}
		if !(res.SharpnessRatio > 0) || res.RefCrops != 9 || res.Samples != 9 {
			t.Fatalf("sharpness ratio %v, %d samples over %d crops", res.SharpnessRatio, res.Samples, res.RefCrops)
		}
		if !(res.FID > 0) || math.IsNaN(res.KID) || !(res.KIDStd > 0) || !(res.GridRatio > 0) || res.KIDSubset != 4 {
			t.Fatalf("measures against the crops: %+v", res)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		return b, res
	}
	a, ra := sample("a.png", 3)
	b, rb := sample("b.png", 3)
	c, rc := sample("c.png", 4)
	ra.Written, rb.Written = nil, nil
	if !bytes.Equal(a, b) || !reflect.DeepEqual(ra, rb) {
		t.Fatalf("the same seed gave different samples or measures: %+v, %+v", ra, rb)
	}
	if bytes.Equal(a, c) || ra.FID == rc.FID {
		t.Fatal("different seeds gave the same PNG or the same FID")
	}
	sheet, err := imaging.Decode(bytes.NewReader(a))
	if err != nil {
		t.Fatal(err)
	}
	if got := sheet.Bounds().Size(); got != image.Pt(3*34+2, 3*34+2) {
		t.Fatalf("sheet of 9 32-px samples is %v, want a 3x3 grid", got)
	}

	folder := filepath.Join(dir, "each")
	res, err := Sample(context.Background(), SampleOptions{Run: run, Out: folder, N: 3, Seed: 3, Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"000.png", "001.png", "002.png"} {
		if res.Written[i] != filepath.Join(folder, name) {
			t.Fatalf("written %v", res.Written)
		}
		img, err := imaging.Open(res.Written[i])
		if err != nil || img.Bounds().Dx() != 32 || img.Bounds().Dy() != 32 {
			t.Fatalf("%s: %v %v", name, img.Bounds(), err)
		}
	}
}

func TestSampleRefusesAutoencoder(t *testing.T) {
	cfg := smallConfig(photos(t, 4))
	cfg.Steps = 2
	run := filepath.Join(t.TempDir(), "ae")
	mustTrain(t, cfg, TrainOptions{Out: run})
	_, err := Sample(context.Background(), SampleOptions{Run: run, Out: filepath.Join(t.TempDir(), "s.png"), N: 4})
	if !errors.Is(err, ErrNotVAE) || !strings.Contains(err.Error(), "vae run") {
		t.Fatalf("err = %v, want ErrNotVAE naming a vae run", err)
	}
}

// The row has K images: the ends are the reconstructions of A and B (the
// decoded posterior means), and the middle is neither.
func TestInterpolationRow(t *testing.T) {
	run, data := trainVAE(t)
	files, err := pipeline.Find(data)
	if err != nil {
		t.Fatal(err)
	}
	a, b := files[0], files[1]
	out := filepath.Join(t.TempDir(), "row")
	res, err := Sample(context.Background(), SampleOptions{Run: run, Out: out, Interpolate: []string{a, b}, Steps: 5, Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Written) != 5 {
		t.Fatalf("%d images, want 5", len(res.Written))
	}
	model, cfg, err := OpenModel(run, pretrained.Store{})
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close()
	recon := func(f string) *image.NRGBA {
		img, err := pipeline.Decode(f, pipeline.DecodeOptions{})
		if err != nil {
			t.Fatal(err)
		}
		sq := imaging.Fill(img, cfg.Size, cfg.Size, imaging.Center, imaging.Lanczos)
		x := make([]float32, 3*cfg.Size*cfg.Size)
		pipeline.ToCHW(sq, sq.Bounds(), x)
		y, err := model.Reconstruct(x, 1, cfg.Size, cfg.Size)
		if err != nil {
			t.Fatal(err)
		}
		return pipeline.FromCHW(y, cfg.Size, cfg.Size)
	}
	row := make([]*image.NRGBA, 5)
	for i, f := range res.Written {
		img, err := imaging.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		row[i] = imaging.Clone(img)
	}
	ra, rb := recon(a), recon(b)
	// The row decodes its five codes as one batch, the reconstructions one
	// at a time: the engine's kernels may round differently by batch, so a
	// pixel may land one level off.
	if da, db := maxDiff(row[0].Pix, ra.Pix), maxDiff(row[4].Pix, rb.Pix); da > 1 || db > 1 {
		t.Fatalf("the row's ends are not the reconstructions of A and B: %d and %d levels off", da, db)
	}
	if bytes.Equal(row[2].Pix, ra.Pix) || bytes.Equal(row[2].Pix, rb.Pix) {
		t.Fatal("the middle of the row is one of the ends")
	}
	sheet := filepath.Join(t.TempDir(), "row.png")
	if _, err := Sample(context.Background(), SampleOptions{Run: run, Out: sheet, Interpolate: []string{a, b}, Steps: 5}); err != nil {
		t.Fatal(err)
	}
	img, err := imaging.Open(sheet)
	if err != nil || img.Bounds().Dx() != 5*34+2 || img.Bounds().Dy() != 34+2 {
		t.Fatalf("row sheet %v (%v), want one row of 5", img.Bounds(), err)
	}
}

// maxDiff is the largest difference between two pixel buffers, in levels.
func maxDiff(a, b []uint8) int {
	if len(a) != len(b) {
		return 256
	}
	d := 0
	for i := range a {
		d = max(d, abs(int(a[i])-int(b[i])))
	}
	return d
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
