package runner

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/internal/testimages"
	"github.com/deepsim/deepsim/pretrained"
)

func TestComparatorTaskExportsLoadableComparator(t *testing.T) {
	data := t.TempDir()
	if _, err := testimages.WritePhotos(data, 3, 320, 256, 4); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultsFor(TaskComparator)
	cfg.Data = []string{data}
	cfg.Classes, cfg.Batch, cfg.Steps, cfg.EvalEvery, cfg.HeldoutPerClass, cfg.MaxSide = 4, 8, 4, 2, 2, 256
	run := filepath.Join(t.TempDir(), "run")
	sum := mustTrain(t, cfg, TrainOptions{Out: run})
	if sum.HeldoutAcc < 0 || sum.HeldoutAcc > 1 {
		t.Fatalf("held-out accuracy %v", sum.HeldoutAcc)
	}
	m := readMetrics(t, run)
	evals := 0
	for _, l := range m {
		acc, hasAcc := l.Lookup("train_acc")
		if l.Get("loss_class") <= 0 || !hasAcc || acc < 0 || acc > 1 {
			t.Fatalf("metrics line %+v", l)
		}
		if _, ok := l.Lookup("surrogate_acc"); ok {
			evals++
		}
	}
	if evals != 2 {
		t.Fatalf("%d held-out evaluations, want 2 (steps 2 and 4)", evals)
	}
	c, err := graphs.NewComparator(graphs.ComparatorSpec{Arch: "exemplar", Layer: "conv3", Weights: filepath.Join(run, ComparatorFile), InputSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, shape, err := c.Features(make([]float32, 3*64*64), 1, 64, 64); err != nil || shape != [4]int{1, 128, 8, 8} {
		t.Fatalf("exported comparator: shape %v, err %v", shape, err)
	}
	// It imports into the store like any state dict, its architecture detected.
	e, err := pretrained.Store{Home: t.TempDir()}.Import(context.Background(), filepath.Join(run, ComparatorFile), "mine", "")
	if err != nil || e.Arch != "exemplar" {
		t.Fatalf("import: %+v, %v", e, err)
	}
}
