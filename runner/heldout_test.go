package runner

import (
	"path/filepath"
	"slices"
	"testing"
)

// A run with held-back images evaluates them every EvalEvery steps and at
// its end; a run stopped and resumed writes the points a straight run
// writes, each measure equal, and its minutes go on from where it stopped.
func TestHeldoutCurveSurvivesResume(t *testing.T) {
	data := photos(t, 4)
	cfg := smallConfig(data)
	cfg.Heldout = []string{data}
	cfg.Steps, cfg.EvalEvery, cfg.CheckpointEvery = 12, 5, 5
	dir := t.TempDir()
	straight, resumed := filepath.Join(dir, "straight"), filepath.Join(dir, "resumed")
	mustTrain(t, cfg, TrainOptions{Out: straight})
	half := cfg
	half.Steps = 7
	mustTrain(t, half, TrainOptions{Out: resumed})
	mustTrain(t, cfg, TrainOptions{Out: resumed, Resume: true})

	want, err := ReadHeldout(straight)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadHeldout(resumed)
	if err != nil {
		t.Fatal(err)
	}
	steps := func(ps []HeldoutPoint) (s []int64) {
		for _, p := range ps {
			s = append(s, p.Step)
		}
		return s
	}
	if !slices.Equal(steps(want), []int64{5, 10, 12}) {
		t.Fatalf("straight run evaluated at %v, want 5, 10 and 12", steps(want))
	}
	// The first part evaluated at 5 and at its last step, 7, where it
	// saved its checkpoint; the resumed run keeps both and goes on.
	if !slices.Equal(steps(got), []int64{5, 7, 10, 12}) {
		t.Fatalf("resumed run's points at %v, want 5, 7 (the first part's end), 10 and 12", steps(got))
	}
	got = slices.Delete(got, 1, 2)
	for i := range want {
		w, g := want[i], got[i]
		if w.PSNR != g.PSNR || w.SSIM != g.SSIM || w.SharpnessRatio != g.SharpnessRatio ||
			w.GridRatio != g.GridRatio || w.PerceptualDistance != g.PerceptualDistance || w.Judge != g.Judge {
			t.Errorf("step %d: resumed %+v, straight %+v", w.Step, g, w)
		}
		if !(g.PSNR > 0) || !(g.PerceptualDistance > 0) {
			t.Errorf("step %d: measures %+v", g.Step, g)
		}
		if i > 0 && !(g.Minutes > got[i-1].Minutes) {
			t.Errorf("minutes go back at step %d: %v after %v", g.Step, g.Minutes, got[i-1].Minutes)
		}
	}
}

// No held-back images or an interval of 0: no curve.
func TestNoHeldoutCurve(t *testing.T) {
	data := photos(t, 4)
	for _, c := range []struct {
		name    string
		heldout []string
		every   int64
	}{{"no held-back images", nil, 5}, {"interval 0", []string{data}, 0}} {
		t.Run(c.name, func(t *testing.T) {
			cfg := smallConfig(data)
			cfg.Heldout, cfg.EvalEvery, cfg.Steps = c.heldout, c.every, 5
			run := filepath.Join(t.TempDir(), "run")
			mustTrain(t, cfg, TrainOptions{Out: run})
			if _, err := ReadHeldout(run); err == nil {
				t.Fatal("a curve was written")
			}
		})
	}
}
