package runner

import (
	"context"
	"image"
	"path/filepath"
	"testing"

	"github.com/disintegration/imaging"

	"github.com/deepsim/deepsim/pretrained"
)

// Runs trained by earlier forms of the up-convolution, E and G alone
// (testdata/oldruns: ConvTranspose2d itself, at 21478e9; a 3x3
// convolution and a pixel shuffle, at 062064e), still reconstruct what
// their own commit's runner reconstructed, to a level of 8-bit rounding,
// and a new run starts from them and trains.
func TestOldRunsReconstructUnchanged(t *testing.T) {
	crops := filepath.Join("..", "testdata", "oldruns", "crops")
	for _, era := range []string{"convtranspose", "3x3"} {
		t.Run(era, func(t *testing.T) {
			run := filepath.Join("..", "testdata", "oldruns", era)
			out := t.TempDir()
			if _, err := Reconstruct(context.Background(), ReconstructOptions{Run: run, Out: out, Inputs: []string{crops},
				Store: pretrained.Store{Home: t.TempDir()}, Log: discardLog()}); err != nil {
				t.Fatal(err)
			}
			names, _ := filepath.Glob(filepath.Join(run, "expected", "crop-*.png"))
			if len(names) != 2 {
				t.Fatalf("%d expected reconstructions", len(names))
			}
			for _, want := range names {
				got := filepath.Join(out, filepath.Base(want))
				if d := maxLevelDiff(t, want, got); d > 1 {
					t.Errorf("%s differs from %s's reconstruction by %d levels", got, era, d)
				}
			}
			cfg := seConfig(photos(t, 3))
			cfg.Size, cfg.Upsample, cfg.Steps, cfg.Init = 16, UpsampleDeconv, 2, run
			mustTrain(t, cfg, TrainOptions{Out: filepath.Join(t.TempDir(), "run")})
		})
	}
}

// maxLevelDiff is the largest difference of two images' 8-bit channels.
func maxLevelDiff(t *testing.T, a, b string) int {
	t.Helper()
	open := func(p string) *image.NRGBA {
		img, err := imaging.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		return imaging.Clone(img)
	}
	x, y := open(a), open(b)
	if x.Bounds() != y.Bounds() {
		t.Fatalf("%s is %v, %s %v", a, x.Bounds(), b, y.Bounds())
	}
	worst := 0
	for i := range x.Pix {
		worst = max(worst, abs(int(x.Pix[i])-int(y.Pix[i])))
	}
	return worst
}
