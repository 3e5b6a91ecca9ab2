package runner

import (
	"context"
	"encoding/json"
	"math"
	"path/filepath"
	"reflect"
	"testing"
)

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
