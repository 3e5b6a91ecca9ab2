package runner

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/deepsim/deepsim/pipeline"
	"github.com/deepsim/deepsim/pretrained"
)

// A shipped run (weights alone, the moving average folded in) reconstructs
// exactly as the run it came from, records how it was made, and refuses
// weights that are not the ones it records.
func TestShipReconstructsAsTheRun(t *testing.T) {
	data := photos(t, 3)
	cfg := smallConfig(data)
	cfg.Heldout, cfg.Steps, cfg.EvalEvery, cfg.EMA = []string{data}, 6, 3, 0.9
	run := filepath.Join(t.TempDir(), "run")
	mustTrain(t, cfg, TrainOptions{Out: run})
	dir := filepath.Join(t.TempDir(), "shipped")
	if err := Ship(run, dir, ShipInfo{Command: "runner train ...", Data: "three photos"}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{ConfigFile, WeightsFile, ShipInfoFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, CheckpointFile)); err == nil {
		t.Fatal("the shipped form holds a checkpoint")
	}
	reconstruct := func(r string) []float32 {
		t.Helper()
		model, c, err := OpenModel(r, pretrained.Store{})
		if err != nil {
			t.Fatal(err)
		}
		defer model.Close()
		x := fixedCrops(mustData(t, c, data), 4, 7)
		y, err := model.Reconstruct(x.Data, x.N, c.Size, c.Size)
		if err != nil {
			t.Fatal(err)
		}
		return y
	}
	if want, got := reconstruct(run), reconstruct(dir); !slices.Equal(want, got) {
		t.Fatal("the shipped run reconstructs otherwise than the run")
	}
	w, err := os.ReadFile(filepath.Join(dir, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if c, err := os.Stat(filepath.Join(run, CheckpointFile)); err != nil || int64(len(w)) > c.Size()/2 {
		t.Fatalf("weights of %d bytes beside a checkpoint of %v (%v): want well under half", len(w), c.Size(), err)
	}
	// Tampered weights: one byte of a tensor's data changed.
	w[len(w)-1024] ^= 1
	os.WriteFile(filepath.Join(dir, WeightsFile), w, 0o644)
	if _, _, err := OpenModel(dir, pretrained.Store{}); err == nil || !strings.Contains(err.Error(), "sha256") {
		t.Fatalf("tampered weights: %v, want a sha256 mismatch", err)
	}
}

func TestShippedRunNames(t *testing.T) {
	if _, _, err := OpenModel(pretrained.RunPrefix+"nothing", pretrained.Store{}); err == nil || !strings.Contains(err.Error(), "no such shipped run") {
		t.Fatalf("an unknown shipped run: %v", err)
	}
}

// mustData lists the images of dir for cfg's crops.
func mustData(t *testing.T, cfg Config, dir string) *pipeline.Loader {
	t.Helper()
	l, err := openData(cfg, []string{dir}, discardLog(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}
