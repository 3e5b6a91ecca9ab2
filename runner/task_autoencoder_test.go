package runner

import (
	"math"
	"testing"
)

func TestVAELogsKLEveryStep(t *testing.T) {
	run, _ := trainVAE(t)
	cfg, err := LoadConfig(run)
	if err != nil {
		t.Fatal(err)
	}
	ms := readMetrics(t, run)
	if len(ms) != int(cfg.Steps) {
		t.Fatalf("%d metrics lines, want %d", len(ms), cfg.Steps)
	}
	for _, m := range ms {
		if kl, ok := m.Lookup("kl"); !ok || !(kl > 0) || math.IsInf(kl, 0) {
			t.Fatalf("step %d: kl %v (logged: %v), want finite and positive", m.Step, kl, ok)
		}
		if w, ok := m.Lookup("kl_weight"); !ok || w != cfg.KLWeightAt(m.Step) {
			t.Fatalf("step %d: kl_weight %v (logged: %v), want %v", m.Step, w, ok, cfg.KLWeightAt(m.Step))
		}
	}
	first, last := ms[0].Get("kl_weight"), ms[len(ms)-1].Get("kl_weight")
	if !(first > 0 && first < cfg.KLWeight) || last != cfg.KLWeight {
		t.Fatalf("kl weight %v at step 1 and %v at the end: no warm-up to %v", first, last, cfg.KLWeight)
	}
}
