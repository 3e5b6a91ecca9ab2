package graphs

import (
	"math"
	"slices"
	"testing"
)

func vaeConfig() Config {
	cfg := testConfig()
	cfg.Task, cfg.CodeChannels, cfg.Upsample = VAE, 4, Resize
	cfg.Weights["adv"] = 0 // no dropout: steps are deterministic given the noise
	return cfg
}

func TestVAEStepLogsPositiveKL(t *testing.T) {
	m := newModel(t, vaeConfig())
	for _, w := range []float64{0, 1e-3} {
		l, err := m.TrainStep(Step{Batch: randomBatch(1, 2, 32), N: 2, KLWeight: w})
		if err != nil {
			t.Fatal(err)
		}
		if !(l.Get("kl") > 0) || math.IsInf(l.Get("kl"), 0) {
			t.Fatalf("kl weight %g: KL = %v, want finite and positive", w, l.Get("kl"))
		}
	}
	ae := newModel(t, testConfig())
	l, err := ae.TrainStep(Step{Batch: randomBatch(1, 2, 32), N: 2, KLWeight: 1})
	if err != nil {
		t.Fatal(err)
	}
	if l.Get("kl") != 0 {
		t.Fatalf("autoencoder KL = %v, want 0", l.Get("kl"))
	}
}

// The KL weight must act: a heavy weight pulls the posterior towards N(0, I)
// much faster than none.
func TestKLWeightShrinksKL(t *testing.T) {
	last := map[float64]float64{}
	for _, w := range []float64{0, 0.05} {
		m := newModel(t, vaeConfig())
		for range 30 {
			l, err := m.TrainStep(Step{Batch: smoothBatch(4, 32), N: 4, KLWeight: w})
			if err != nil {
				t.Fatal(err)
			}
			last[w] = l.Get("kl")
		}
	}
	if !(last[0.05] < 0.5*last[0]) {
		t.Fatalf("KL after 30 steps: %v with weight 0.05, %v with weight 0: the weight has no effect", last[0.05], last[0])
	}
}

// Reconstruct decodes the posterior mean: it equals Decode(Encode(x)) and
// is the same on every call, with no sampling noise.
func TestVAEReconstructUsesPosteriorMean(t *testing.T) {
	m := newModel(t, vaeConfig())
	if _, err := m.TrainStep(Step{Batch: randomBatch(1, 2, 32), N: 2, KLWeight: 1e-3}); err != nil {
		t.Fatal(err)
	}
	x := randomBatch(2, 2, 32)
	mu, err := m.Encode(x, 2, 32, 32)
	if err != nil {
		t.Fatal(err)
	}
	c, zh, zw := m.CodeShape(32, 32)
	if len(mu) != 2*c*zh*zw || c != 4 || zh != 8 || zw != 8 {
		t.Fatalf("code: %d floats, shape %dx%dx%d", len(mu), c, zh, zw)
	}
	dec, err := m.Decode(mu, 2, zh, zw)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		rec, err := m.Reconstruct(x, 2, 32, 32)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(rec, dec) {
			t.Fatal("Reconstruct differs from Decode(Encode(x)): it is not the posterior mean")
		}
	}
	if _, err := m.Decode(mu[:10], 2, zh, zw); err == nil {
		t.Fatal("Decode accepted a short code")
	}
}

// The reparameterisation noise is part of the checkpoint: a loaded model
// takes the same next step as the one that saved it.
func TestVAEResumeDrawsSameNoise(t *testing.T) {
	cfg := vaeConfig()
	m := newModel(t, cfg)
	for range 2 {
		if _, err := m.TrainStep(Step{Batch: randomBatch(3, 2, 32), N: 2, KLWeight: 1e-3}); err != nil {
			t.Fatal(err)
		}
	}
	state, err := m.Save(2)
	if err != nil {
		t.Fatal(err)
	}
	fresh := newModel(t, cfg)
	if _, err := fresh.Load(state); err != nil {
		t.Fatal(err)
	}
	var kl [2]float64
	for i, mm := range []*Model{m, fresh} {
		l, err := mm.TrainStep(Step{Batch: randomBatch(5, 2, 32), N: 2, KLWeight: 1e-3})
		if err != nil {
			t.Fatal(err)
		}
		kl[i] = l.Get("loss_feat") + l.Get("loss_img") + l.Get("kl")
	}
	if kl[0] != kl[1] {
		t.Fatalf("next step after load: losses %v vs %v", kl[1], kl[0])
	}
}

func TestUpsampleKinds(t *testing.T) {
	counts := map[Upsample]int64{}
	for _, up := range []Upsample{Deconv, Resize} {
		cfg := testConfig()
		cfg.Upsample, cfg.Weights["adv"] = up, 0
		m := newModel(t, cfg)
		first, err := m.TrainStep(Step{Batch: smoothBatch(4, 32), N: 4})
		if err != nil {
			t.Fatal(err)
		}
		var last StepLog
		for range 15 {
			if last, err = m.TrainStep(Step{Batch: smoothBatch(4, 32), N: 4}); err != nil {
				t.Fatal(err)
			}
		}
		if !(last.Get("loss_img") < first.Get("loss_img")) {
			t.Errorf("upsample %d: pixel loss %v -> %v, not learning", up, first.Get("loss_img"), last.Get("loss_img"))
		}
		counts[up] = m.NumParams()
	}
	// 4x4 transposed kernels against 3x3 convolutions: different networks.
	if counts[Deconv] == counts[Resize] {
		t.Fatalf("both kinds have %d parameters: the option changes nothing", counts[Deconv])
	}
	cfg := testConfig()
	cfg.Upsample = 7
	if m, err := NewModel(cfg, nil, nil); err == nil {
		m.Close()
		t.Fatal("unknown upsampling accepted")
	}
}

// With a prior-adversarial weight D also sees decoded draws from the prior
// as fakes: on the first step, where D's view of the batch is the same
// either way, its loss is the same plus a positive term, and the term G
// pays on them is logged. Without the weight nothing is drawn or logged.
func TestPriorDrawsAreJudged(t *testing.T) {
	step := func(prior float64) StepLog {
		cfg := vaeConfig()
		cfg.Weights["adv"], cfg.Weights["prior_adv"] = 0.1, prior
		l, err := newModel(t, cfg).TrainStep(Step{Batch: randomBatch(1, 4, 32), N: 4, KLWeight: 1e-3})
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	with, without := step(0.5), step(0)
	if !(with.Get("loss_prior_adv") > 0) {
		t.Fatalf("loss_prior_adv = %v, want positive", with.Get("loss_prior_adv"))
	}
	if slices.ContainsFunc(without.Terms, func(t Term) bool { return t.Name == "loss_prior_adv" }) {
		t.Fatal("a run without the weight logs loss_prior_adv")
	}
	if d, d0 := with.Get("loss_discr"), without.Get("loss_discr"); !(d > d0+0.1) {
		t.Fatalf("D's loss %v with prior draws, %v without: want the draws' term added", d, d0)
	}
	// G's adversarial term differs: D stepped on its new loss first.
	if with.Get("loss_feat") != without.Get("loss_feat") || with.Get("kl") != without.Get("kl") {
		t.Fatalf("the reconstructions' terms differ: %+v, %+v", with.Terms, without.Terms)
	}
}
