package runner

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/deepsim/deepsim/pretrained"
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
	for _, k := range []string{"psnr", "ssim", "image_error_pct", "feature_error_pct", "feature_error_independent_pct", "sharpness_ratio", "grid_ratio"} {
		v, ok := keys[k].(float64)
		if !ok || math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
			t.Errorf("%s = %v", k, keys[k])
		}
	}
	if a.Judge != "alexnet-random:conv2" || a.Comparator != DefaultComparator {
		t.Fatalf("comparators: %s, %s", a.Comparator, a.Judge)
	}
}

// A judge that takes larger images than a run's crops (InceptionV3 needs
// 75 px, the run's crops are 64) sees them enlarged, and eval says so; a
// --judge-size below its least side is refused with the reason.
func TestEvalJudgeTakesSmallCrops(t *testing.T) {
	store := pretrained.NewStore(t.TempDir())
	if _, err := os.Stat(pretrained.NSFWJSPath()); err != nil {
		t.Fatalf("the nsfwjs tarball is missing (%v): run make deps", err)
	}
	if _, err := store.ImportTFJS(context.Background(), pretrained.NSFWJSPath(), "inception_v3", "inceptionv3", "0,1"); err != nil {
		t.Fatal(err)
	}
	data := photos(t, 3)
	cfg := smallConfig(data)
	cfg.Size, cfg.Batch, cfg.Steps = 64, 2, 1
	run := filepath.Join(t.TempDir(), "run")
	mustTrain(t, cfg, TrainOptions{Out: run})
	for _, tc := range []struct {
		judge     string
		judgeSize int
		want      int    // the side recorded, 0 for the crops' own
		err       string // "" for none
	}{
		{"inceptionv3", 0, 75, ""},
		{"inceptionv3", 96, 96, ""},
		{"inceptionv3", 32, 0, "judge_size 32"},
		{"alexnet-random:conv5", 0, 0, ""}, // takes 63 px: 64 is enough
	} {
		res, err := Evaluate(context.Background(), EvalOptions{Run: run, Data: []string{data}, N: 4, Seed: 1,
			Judge: tc.judge, JudgeSize: tc.judgeSize, Store: store, Log: discardLog()})
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "at least 75 px") {
				t.Errorf("%s at --judge-size %d: %v, want an error naming %s and 75 px", tc.judge, tc.judgeSize, err, tc.err)
			}
		case err != nil:
			t.Errorf("%s: %v", tc.judge, err)
		case res.JudgeSize != tc.want || math.IsNaN(res.PerceptualDistance) || res.PerceptualDistance <= 0:
			t.Errorf("%s: judge side %d, want %d; perceptual distance %v", tc.judge, res.JudgeSize, tc.want, res.PerceptualDistance)
		}
	}
}
