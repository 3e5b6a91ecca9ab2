package runner

import (
	"context"
	"encoding/json"
	"math"
	"path/filepath"
	"reflect"
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
		if l.LossClass <= 0 || l.TrainAcc < 0 {
			t.Fatalf("metrics line %+v", l)
		}
		if l.HeldoutAcc != nil {
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
	e, err := pretrained.Store{Home: t.TempDir()}.Import(filepath.Join(run, ComparatorFile), "mine", "")
	if err != nil || e.Arch != "exemplar" {
		t.Fatalf("import: %+v, %v", e, err)
	}
}

func TestEvaluateIsRepeatableAndFinite(t *testing.T) {
	data := photos(t, 3)
	cfg := smallConfig(data)
	cfg.Steps = 3
	run := filepath.Join(t.TempDir(), "run")
	mustTrain(t, cfg, TrainOptions{Out: run})
	opt := EvalOptions{Run: run, Data: []string{data}, N: 8, Seed: 3, Judge: "alexnet-random:conv2", Log: discardLog()}
	a, err := Evaluate(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Evaluate(context.Background(), opt)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("two evaluations differ:\n%+v\n%+v", a, b)
	}
	raw, _ := json.Marshal(a)
	var keys map[string]any
	json.Unmarshal(raw, &keys)
	for _, k := range []string{"psnr", "ssim", "image_error_pct", "feature_error_pct", "feature_error_independent_pct", "sharpness_ratio"} {
		v, ok := keys[k].(float64)
		if !ok || math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
			t.Errorf("%s = %v", k, keys[k])
		}
	}
	if a.Judge != "alexnet-random:conv2" || a.Comparator != DefaultComparator {
		t.Fatalf("comparators: %s, %s", a.Comparator, a.Judge)
	}
}

func TestImageMeasures(t *testing.T) {
	const size = 32
	x := make([]float32, 3*size*size)
	for i := range x {
		x[i] = float32(math.Sin(float64(i) * 0.37))
	}
	flat := make([]float32, len(x))
	if s := ssim(x, x, size); math.Abs(s-1) > 1e-9 {
		t.Fatalf("ssim of an image with itself = %v", s)
	}
	if s := ssim(x, flat, size); s > 0.5 {
		t.Fatalf("ssim against a flat image = %v", s)
	}
	if g := meanGradient(flat, 1, size); g != 0 {
		t.Fatalf("gradient of a flat image = %v", g)
	}
	if g := meanGradient(x, 1, size); g <= 0 {
		t.Fatalf("gradient of a textured image = %v", g)
	}
	p := derangement(10, 1)
	for i, j := range p {
		if i == j {
			t.Fatalf("derangement pairs %d with itself", i)
		}
	}
}
