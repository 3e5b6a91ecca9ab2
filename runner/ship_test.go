package runner

import (
	"context"
	"math"
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
	if err := Ship(run, dir, ShipInfo{Command: "runner train ...", Data: "three photos"}, pretrained.Store{}); err != nil {
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
	if want, got := reconstructRun(t, run, data, 4), reconstructRun(t, dir, data, 4); !slices.Equal(want, got) {
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

// A new run with Init starts from that run's E and G (a shipped form or a
// checkpoint): one step at a learning rate of 1e-9 reconstructs as the
// run it came from; another size is refused.
func TestInitStartsFromARun(t *testing.T) {
	data := photos(t, 3)
	dir := t.TempDir()
	cfg := smallConfig(data)
	cfg.Steps = 4
	from := filepath.Join(dir, "from")
	mustTrain(t, cfg, TrainOptions{Out: from})
	shipped := filepath.Join(dir, "shipped")
	if err := Ship(from, shipped, ShipInfo{Command: "test", Data: "test"}, pretrained.Store{}); err != nil {
		t.Fatal(err)
	}
	want := reconstructRun(t, from, data, 2)
	for _, src := range []string{from, shipped} {
		c := seConfig(data)
		c.Steps, c.LR, c.Init = 1, 1e-9, src
		run := filepath.Join(t.TempDir(), "run")
		mustTrain(t, c, TrainOptions{Out: run})
		got := reconstructRun(t, run, data, 2)
		var worst float64
		for i := range got {
			worst = max(worst, math.Abs(float64(got[i]-want[i])))
		}
		if worst > 1e-3 {
			t.Fatalf("init from %s: reconstructions differ by %g from the run's", src, worst)
		}
	}
	other := seConfig(data)
	other.Size, other.Steps, other.Init = 64, 1, from
	if _, err := Train(context.Background(), other, TrainOptions{Out: filepath.Join(dir, "other"), Log: discardLog()}); err == nil ||
		!strings.Contains(err.Error(), "are not this run's") {
		t.Fatalf("init from a run of another size: %v", err)
	}
}

// The shipped pair loads right after a clone: their weights match their
// info.json, they trained the same steps, and they reconstruct.
func TestShippedPair(t *testing.T) {
	names := pretrained.ShippedRunNames()
	if !slices.Equal(names, []string{"autoencoder", "autoencoder-se"}) {
		t.Fatalf("shipped runs %v, want autoencoder and autoencoder-se", names)
	}
	var steps []int64
	for _, name := range names {
		run := pretrained.RunPrefix + name
		info, err := ShippedInfo(run)
		if err != nil {
			t.Fatal(err)
		}
		steps = append(steps, info.Step)
		model, cfg, err := OpenModel(run, pretrained.Store{})
		if err != nil {
			t.Fatal(err)
		}
		x := fixedCrops(mustData(t, cfg, photos(t, 2)), 2, 1)
		y, err := model.Reconstruct(x.Data, x.N, cfg.Size, cfg.Size)
		model.Close()
		if err != nil || len(y) != len(x.Data) {
			t.Fatalf("%s: %d values for %d (%v)", run, len(y), len(x.Data), err)
		}
	}
	if steps[0] != steps[1] || steps[0] < 1000 {
		t.Fatalf("the pair trained %v steps, want the same, long", steps)
	}
}

// reconstructRun is run's reconstructions of n seeded crops of data.
func reconstructRun(t *testing.T, run, data string, n int) []float32 {
	t.Helper()
	model, c, err := OpenModel(run, pretrained.Store{})
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close()
	x := fixedCrops(mustData(t, c, data), n, 7)
	y, err := model.Reconstruct(x.Data, x.N, c.Size, c.Size)
	if err != nil {
		t.Fatal(err)
	}
	return y
}
