package graphs

import (
	"bytes"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/deepsim/deepsim/internal/hostile"
	"github.com/deepsim/deepsim/internal/torchfile"
)

func testConfig() Config {
	return Config{Task: Autoencoder, Size: 32, CodeChannels: 8,
		Weights: map[string]float64{"feat": 1, "adv": 0.01, "img": 1}, LR: 2e-4, Beta1: 0.9, Beta2: 0.999, Seed: 1}
}

// testComparator is a small random AlexNet cut at conv2, at 64 px.
func testComparator(t *testing.T) *Comparator {
	t.Helper()
	c, err := NewComparator(ComparatorSpec{Arch: "alexnet", Layer: "conv2", InputSize: 64})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func randomBatch(seed uint64, n, size int) []float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, n*3*size*size)
	for i := range x {
		x[i] = rng.Float32()*2 - 1
	}
	return x
}

// smoothBatch is n images of soft diagonal waves: easy to compress, unlike
// noise, so a few steps must reduce the pixel loss.
func smoothBatch(n, size int) []float32 {
	x := make([]float32, n*3*size*size)
	for i := range x {
		img, c, p := i/(3*size*size), i/(size*size)%3, i%(size*size)
		u, v := float64(p%size)/float64(size), float64(p/size)/float64(size)
		x[i] = float32(0.8 * math.Sin(3*u+2*v+float64(c)+float64(img)))
	}
	return x
}

func newModel(t *testing.T, cfg Config) *Model {
	t.Helper()
	var comp *Comparator
	if cfg.Weights["feat"] > 0 {
		comp = testComparator(t)
	}
	m, err := NewModel(cfg, comp, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func TestNewModelRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"size not multiple of 8", func(c *Config) { c.Size = 60 }, "power of two"},
		{"size not a power of two", func(c *Config) { c.Size = 48 }, "power of two"},
		{"unknown task", func(c *Config) { c.Task = 9 }, "unknown task"},
		{"unknown layout", func(c *Config) { c.Layout = 5 }, "unknown layout"},
		{"ema of 1", func(c *Config) { c.EMA = 1 }, "ema 1"},
		{"ema of a comparator", func(c *Config) { c.Task, c.EMA = ComparatorTask, 0.9 }, "for generators"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			tc.edit(&cfg)
			m, err := NewModel(cfg, testComparator(t), nil)
			if err == nil {
				m.Close()
				t.Fatal("NewModel succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestTrainStepLossTerms(t *testing.T) {
	tests := []struct {
		name               string
		feat, adv, img     float64
		wantFeat, wantAdv  bool
		wantImg, wantDiscr bool
	}{
		{"se baseline", 0, 0, 1, false, false, true, false},
		{"feature only", 1, 0, 0, true, false, false, false},
		{"all three", 1, 0.01, 1, true, true, true, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Weights = map[string]float64{"feat": tc.feat, "adv": tc.adv, "img": tc.img}
			m := newModel(t, cfg)
			l, err := m.TrainStep(Step{Batch: randomBatch(1, 2, 32), N: 2})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct {
				name string
				v    float64
				on   bool
			}{{"feat", l.Get("loss_feat"), tc.wantFeat}, {"adv", l.Get("loss_adv"), tc.wantAdv}, {"img", l.Get("loss_img"), tc.wantImg}, {"discr", l.Get("loss_discr"), tc.wantDiscr}} {
				if math.IsNaN(c.v) || math.IsInf(c.v, 0) {
					t.Errorf("%s = %v", c.name, c.v)
				}
				if c.on != (c.v > 0) {
					t.Errorf("%s = %v, want switched on: %v", c.name, c.v, c.on)
				}
			}
		})
	}
}

// The adaptive adversarial weight is lambda_adv times the ratio of the
// reconstruction's and the adversarial term's gradient norms at G's
// output layer: on a first step (same weights, same D) doubling the image
// term's weight doubles it, and so does doubling lambda_adv. A fixed
// weight logs none.
func TestAdaptiveAdversarialWeight(t *testing.T) {
	first := func(img, adv float64, adaptive bool) (float64, bool) {
		cfg := testConfig()
		cfg.Weights = map[string]float64{"adv": adv, "img": img}
		cfg.AdaptiveAdv = adaptive
		l, err := newModel(t, cfg).TrainStep(Step{Batch: randomBatch(1, 2, 32), N: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, term := range l.Terms {
			if term.Name == "adv_weight" {
				return term.Value, true
			}
		}
		return 0, false
	}
	base, ok := first(1, 0.5, true)
	if !ok || !(base > 0) || base >= 0.5*1e4/2 {
		t.Fatalf("adv_weight %v (logged: %v), want above 0 and below the clamp", base, ok)
	}
	for _, tc := range []struct {
		name     string
		img, adv float64
	}{{"image weight doubled", 2, 0.5}, {"lambda_adv doubled", 1, 1}} {
		if got, _ := first(tc.img, tc.adv, true); math.Abs(got-2*base) > 1e-5*base {
			t.Errorf("%s: adv_weight %v, want twice %v", tc.name, got, base)
		}
	}
	if w, ok := first(1, 0.5, false); ok {
		t.Errorf("a fixed weight logged adv_weight %v", w)
	}
}

// G's step with the adaptive weight is the step a fixed weight of the
// same value takes: two float64 models from the same seed, one adaptive
// and one fixed at the adaptive one's logged weight, reconstruct alike
// after a first step, and differently from a fixed weight half as large.
func TestAdaptiveStepIsFixedStepAtItsWeight(t *testing.T) {
	x := randomBatch(1, 2, 32)
	after := func(adaptive bool, adv float64) ([]float32, float64) {
		cfg := testConfig()
		cfg.Weights = map[string]float64{"feat": 1, "adv": adv, "img": 1}
		cfg.AdaptiveAdv = adaptive
		cfg.Precision = Float64
		m := newModel(t, cfg)
		l, err := m.TrainStep(Step{Batch: x, N: 2})
		if err != nil {
			t.Fatal(err)
		}
		y, err := m.Reconstruct(x, 2, 32, 32)
		if err != nil {
			t.Fatal(err)
		}
		return y, l.Get("adv_weight")
	}
	maxDiff := func(a, b []float32) float64 {
		d := 0.0
		for i := range a {
			d = max(d, math.Abs(float64(a[i]-b[i])))
		}
		return d
	}
	ya, w := after(true, 0.8)
	if !(w > 0) {
		t.Fatalf("adv_weight %v", w)
	}
	yf, _ := after(false, w)
	yh, _ := after(false, w/2)
	same, other := maxDiff(ya, yf), maxDiff(ya, yh)
	t.Logf("adv_weight %v: %.3g from the fixed step at it, %.3g from half", w, same, other)
	if !(other > 0) || same > 1e-3*other {
		t.Fatalf("adaptive against fixed at its weight %v: %.3g apart; against half that weight %.3g", w, same, other)
	}
}

// The patch discriminator is another network (fewer weights at any size),
// judges a map of patches, and trains.
func TestPatchDiscriminator(t *testing.T) {
	cfg := testConfig()
	cfg.Weights = map[string]float64{"adv": 0.5, "img": 1}
	whole := newModel(t, cfg).NumParams()
	cfg.PatchD = true
	m := newModel(t, cfg)
	if m.NumParams() >= whole {
		t.Fatalf("%d parameters with the patch discriminator, %d without: want fewer", m.NumParams(), whole)
	}
	for range 3 {
		l, err := m.TrainStep(Step{Batch: randomBatch(1, 2, 32), N: 2})
		if err != nil {
			t.Fatal(err)
		}
		if d := l.Get("loss_discr"); !(d > 0) || math.IsInf(d, 0) || !l.UpdatedD {
			t.Fatalf("loss_discr %v, updated D %v", d, l.UpdatedD)
		}
	}
}

// D's feature matching is logged before weighting, only where D judges;
// it changes G's step and not D's, which comes first.
func TestFeatureMatching(t *testing.T) {
	for _, patch := range []bool{false, true} {
		t.Run(fmt.Sprintf("patch %v", patch), func(t *testing.T) {
			batch := randomBatch(5, 2, 32)
			step := func(match float64, warmup bool) (StepLog, map[string][]float64) {
				cfg := testConfig()
				cfg.Weights = map[string]float64{"adv": 0.5, "img": 1, "match": match}
				cfg.PatchD = patch
				m := newModel(t, cfg)
				l, err := m.TrainStep(Step{Batch: batch, N: 2, DWarmup: warmup})
				if err != nil {
					t.Fatal(err)
				}
				return l, checkpointFloats(t, m)
			}
			none, w0 := step(0, false)
			one, w1 := step(1, false)
			three, _ := step(3, false)
			warm, _ := step(1, true)
			if got := none.Get("loss_match"); got != 0 {
				t.Errorf("weight 0: loss_match %v, want 0", got)
			}
			if got := warm.Get("loss_match"); got != 0 {
				t.Errorf("during D's warm-up: loss_match %v, want 0", got)
			}
			if got := one.Get("loss_match"); !(got > 0) || math.IsInf(got, 0) {
				t.Fatalf("weight 1: loss_match %v, want above 0", got)
			}
			if a, b := one.Get("loss_match"), three.Get("loss_match"); a != b {
				t.Errorf("loss_match %v at weight 1 and %v at 3: want the term before weighting", a, b)
			}
			var dSame, gMoved bool = true, false
			for name, w := range w1 {
				same := slices.Equal(w, w0[name])
				if strings.HasPrefix(name, "discriminator.") && !strings.HasPrefix(name, "optim") {
					dSame = dSame && same
				}
				if strings.HasPrefix(name, "generator.") && !same {
					gMoved = true
				}
			}
			if !dSame {
				t.Error("feature matching changed D's step")
			}
			if !gMoved {
				t.Error("feature matching left G's step as it was")
			}
		})
	}
}

// D's own learning rate: equal to G's it changes nothing, larger it
// changes D's second step.
func TestDLearningRate(t *testing.T) {
	second := func(lrd float64) float64 {
		cfg := testConfig()
		cfg.Weights = map[string]float64{"adv": 0.5, "img": 1}
		cfg.LRD = lrd
		m := newModel(t, cfg)
		var l StepLog
		for range 2 {
			var err error
			if l, err = m.TrainStep(Step{Batch: randomBatch(1, 2, 32), N: 2}); err != nil {
				t.Fatal(err)
			}
		}
		return l.Get("loss_discr")
	}
	base := second(0)
	if same := second(testConfig().LR); same != base {
		t.Errorf("--lr-d equal to --lr: loss_discr %v, want %v", same, base)
	}
	if faster := second(10 * testConfig().LR); faster == base {
		t.Errorf("--lr-d ten times --lr: loss_discr %v, the same as with G's rate", faster)
	}
}

// A step's LRScale scales every optimiser's rate: Adam's first update is
// lr * g/(|g|+eps), so where |g| >> eps half the scale moves each weight
// exactly half as far. G's check has no D, whose step would change G's
// gradients; D's first step judges the same output at either scale.
func TestLearningRateScale(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights map[string]float64
		prefix  []string
	}{
		{"E and G", map[string]float64{"img": 1}, []string{"encoder.", "generator."}},
		{"D", map[string]float64{"adv": 0.5, "img": 1}, []string{"discriminator."}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig()
			cfg.Weights = tc.weights
			cfg.LRD = 4 * cfg.LR
			batch := randomBatch(3, 2, 32)
			moved := func(scale float64) map[string][]float64 {
				m := newModel(t, cfg)
				before := checkpointFloats(t, m)
				if _, err := m.TrainStep(Step{Batch: batch, N: 2, LRScale: scale}); err != nil {
					t.Fatal(err)
				}
				after := checkpointFloats(t, m)
				d := map[string][]float64{}
				for name, w := range after {
					for _, p := range tc.prefix {
						if strings.HasPrefix(name, p) && strings.HasSuffix(name, "weight") {
							for i := range w {
								d[name] = append(d[name], w[i]-before[name][i])
							}
						}
					}
				}
				return d
			}
			full, half, unset := moved(1), moved(0.5), moved(0)
			if !maps.EqualFunc(full, unset, slices.Equal) {
				t.Fatal("a scale of 0 (unset) does not train as 1 does")
			}
			checked := 0
			for name, f := range full {
				for i := range f {
					if math.Abs(f[i]) < 1e-6 { // a weight with no gradient
						continue
					}
					checked++
					if r := half[name][i] / f[i]; math.Abs(r-0.5) > 1e-2 {
						t.Fatalf("%s[%d] moved %g at scale 0.5 and %g at 1: ratio %g, want 0.5", name, i, half[name][i], f[i], r)
					}
				}
			}
			if checked == 0 {
				t.Fatal("no weight moved")
			}
		})
	}
	m := newModel(t, testConfig())
	if _, err := m.TrainStep(Step{Batch: randomBatch(3, 2, 32), N: 2, LRScale: 1.5}); err == nil || !strings.Contains(err.Error(), "learning-rate scale") {
		t.Fatalf("scale 1.5: err = %v, want a refusal", err)
	}
}

// During D's warm-up D neither learns nor judges G; after it, both.
func TestDWarmup(t *testing.T) {
	cfg := testConfig()
	cfg.Weights = map[string]float64{"adv": 0.5, "img": 1}
	cfg.AdaptiveAdv = true
	m := newModel(t, cfg)
	for _, warm := range []bool{true, true, false} {
		l, err := m.TrainStep(Step{Batch: randomBatch(1, 2, 32), N: 2, DWarmup: warm})
		if err != nil {
			t.Fatal(err)
		}
		on := l.UpdatedD && l.Get("loss_discr") > 0 && l.Get("loss_adv") > 0 && l.Get("adv_weight") > 0
		off := !l.UpdatedD && l.Get("loss_discr") == 0 && l.Get("loss_adv") == 0 && l.Get("adv_weight") == 0
		if (warm && !off) || (!warm && !on) {
			t.Fatalf("warm-up %v: updated D %v, loss_discr %v, loss_adv %v, adv_weight %v", warm,
				l.UpdatedD, l.Get("loss_discr"), l.Get("loss_adv"), l.Get("adv_weight"))
		}
	}
}

func TestTrainingReducesLoss(t *testing.T) {
	cfg := testConfig()
	cfg.Weights["adv"] = 0
	cfg.LR = 1e-3
	m := newModel(t, cfg)
	x := smoothBatch(4, 32)
	first, err := m.TrainStep(Step{Batch: x, N: 4})
	if err != nil {
		t.Fatal(err)
	}
	var last StepLog
	for range 30 {
		if last, err = m.TrainStep(Step{Batch: x, N: 4}); err != nil {
			t.Fatal(err)
		}
	}
	if last.Get("loss_img") >= first.Get("loss_img")*0.7 || last.Get("loss_feat") >= first.Get("loss_feat")*0.5 {
		t.Fatalf("losses did not fall on a fixed batch: first %+v, last %+v", first, last)
	}
}

func TestTrainStepRejectsWrongBatch(t *testing.T) {
	m := newModel(t, testConfig())
	if _, err := m.TrainStep(Step{Batch: make([]float32, 10), N: 1}); err == nil {
		t.Fatal("accepted a batch of the wrong length")
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	// No adversarial term: without dropout the steps are deterministic, so
	// the optimizer state can be checked through the next step.
	cfg := testConfig()
	cfg.Weights["adv"] = 0
	m := newModel(t, cfg)
	for range 2 {
		if _, err := m.TrainStep(Step{Batch: randomBatch(3, 2, 32), N: 2}); err != nil {
			t.Fatal(err)
		}
	}
	state, err := m.Save(42)
	if err != nil {
		t.Fatal(err)
	}
	x := randomBatch(4, 1, 48)[:3*40*48]
	want, err := m.Reconstruct(x, 1, 40, 48)
	if err != nil {
		t.Fatal(err)
	}

	cfg.Seed = 7 // different initial weights, replaced by the load
	fresh := newModel(t, cfg)
	if before, _ := fresh.Reconstruct(x, 1, 40, 48); slices.Equal(before, want) {
		t.Fatal("two seeds gave the same model")
	}
	step, err := fresh.Load(state)
	if err != nil {
		t.Fatal(err)
	}
	if step != 42 {
		t.Fatalf("step = %d, want 42", step)
	}
	got, err := fresh.Reconstruct(x, 1, 40, 48)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatal("loaded model reconstructs differently")
	}
	// The Adam moments and step counts came along: one more step on the
	// same batch moves both models identically.
	batch := randomBatch(5, 2, 32)
	for _, mm := range []*Model{m, fresh} {
		if _, err := mm.TrainStep(Step{Batch: batch, N: 2}); err != nil {
			t.Fatal(err)
		}
	}
	a, _ := m.Reconstruct(x, 1, 40, 48)
	b, _ := fresh.Reconstruct(x, 1, 40, 48)
	if !slices.Equal(a, b) {
		t.Fatal("after one more step the loaded model differs: optimizer state was not restored")
	}
}

func TestLoadRejectsBadCheckpoints(t *testing.T) {
	m := newModel(t, testConfig())
	state, err := m.Save(1)
	if err != nil {
		t.Fatal(err)
	}
	other := testConfig()
	other.Size = 64
	big := newModel(t, other)
	bigState, err := big.Save(1)
	if err != nil {
		t.Fatal(err)
	}
	wide := testConfig()
	wide.CodeChannels = 16
	tests := []struct {
		name  string
		cfg   Config
		state []byte
		want  string
	}{
		{"truncated", testConfig(), state[:len(state)/2], "load model"},
		{"garbage", testConfig(), []byte("not a checkpoint at all"), "load model"},
		{"empty", testConfig(), nil, "empty checkpoint"},
		{"other architecture", testConfig(), bigState, "has shape"},
		{"other shape", wide, state, "has shape"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			target := newModel(t, tc.cfg)
			_, err := target.Load(tc.state)
			if err == nil {
				t.Fatal("Load succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestReconstructShapes(t *testing.T) {
	m := newModel(t, testConfig())
	if m.Factor() != 4 {
		t.Fatalf("Factor = %d, want 4 for 32 px crops", m.Factor())
	}
	out, err := m.Reconstruct(randomBatch(6, 2, 24)[:2*3*20*24], 2, 20, 24)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != 2*3*20*24 {
		t.Fatalf("got %d floats", len(out))
	}
	for _, v := range out {
		if v < -1 || v > 1 {
			t.Fatalf("output %v outside [-1,1]", v)
		}
	}
	if _, err := m.Reconstruct(make([]float32, 3*21*24), 1, 21, 24); err == nil || !strings.Contains(err.Error(), "multiple of 4") {
		t.Fatalf("odd height: err = %v", err)
	}
}

func TestClosedModel(t *testing.T) {
	m, err := NewModel(testConfig(), testComparator(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	m.Close()
	if _, err := m.TrainStep(Step{Batch: randomBatch(1, 1, 32), N: 1}); err == nil {
		t.Fatal("TrainStep on a closed model succeeded")
	}
}

// A step whose loss is not finite stops before it changes any weight.
func TestNonFiniteStepChangesNothing(t *testing.T) {
	cfg := testConfig()
	cfg.Weights["feat"] = 0 // the comparator would refuse the input itself
	m := newModel(t, cfg)
	x := randomBatch(1, 1, 32)[:3*24*24]
	before, _ := m.Reconstruct(x, 1, 24, 24)
	batch := randomBatch(2, 2, 32)
	batch[5] = float32(math.Inf(1))
	if _, err := m.TrainStep(Step{Batch: batch, N: 2}); err == nil || !strings.Contains(err.Error(), "diverged") {
		t.Fatalf("err = %v, want a divergence", err)
	}
	after, err := m.Reconstruct(x, 1, 24, 24)
	if err != nil || !slices.Equal(before, after) {
		t.Fatalf("the refused step changed the model (%v)", err)
	}
}

// A checkpoint whose tensor record reaches outside its storage is refused
// by the engine itself, before any copy.
func TestLoadRefusesRecordOutsideStorage(t *testing.T) {
	m := newModel(t, testConfig())
	good, err := m.Save(1)
	if err != nil {
		t.Fatal(err)
	}
	bad, err := hostile.Checkpoint(good)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newModel(t, testConfig()).Load(bad); err == nil || !strings.Contains(err.Error(), "outside its storage") {
		t.Fatalf("err = %v", err)
	}
}

// The layout changes speed, not the function: from the same seed, the same
// batches give the same losses in both, up to rounding, and a checkpoint
// of one loads into the other.
func TestLayoutsComputeTheSameSteps(t *testing.T) {
	losses := map[Layout][]float64{}
	var saved []byte
	for _, layout := range []Layout{ChannelsLast, NCHW} {
		cfg := testConfig()
		cfg.Layout = layout
		cfg.Weights["adv"] = 0 // dropout's draws are the same, but keep D out
		m := newModel(t, cfg)
		if saved != nil {
			if _, err := m.Load(saved); err != nil {
				t.Fatalf("layout %d loads layout %d's checkpoint: %v", layout, ChannelsLast, err)
			}
			m = newModel(t, cfg) // the losses below start from the seed's weights
		}
		for i := range 3 {
			l, err := m.TrainStep(Step{Batch: randomBatch(uint64(i), 4, cfg.Size), N: 4})
			if err != nil {
				t.Fatal(err)
			}
			losses[layout] = append(losses[layout], l.Get("loss_feat"), l.Get("loss_img"))
		}
		if saved == nil {
			var err error
			if saved, err = m.Save(3); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, a := range losses[ChannelsLast] {
		b := losses[NCHW][i]
		if math.Abs(a-b) > 1e-4*math.Abs(b) {
			t.Fatalf("loss %d: %.7g in channels-last, %.7g in NCHW", i, a, b)
		}
	}
}

// checkpointFloats is a model's checkpoint as its float tensors, by name.
func checkpointFloats(t *testing.T, m *Model) map[string][]float64 {
	t.Helper()
	b, err := m.Save(0)
	if err != nil {
		t.Fatal(err)
	}
	f, err := torchfile.Floats(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// The moving average follows ema = d*ema + (1-d)*w after each of G's
// steps, d = min(decay, (1+t)/(10+t)); training never sees it, checkpoints
// keep it, and reconstructions use it.
func TestMovingAverageOfWeights(t *testing.T) {
	cfg := testConfig()
	cfg.Weights["adv"] = 0 // G learns on every step
	cfg.EMA = 0.2          // the ramp's 0.1 and 0.18, then the decay
	m, twin := newModel(t, cfg), newModel(t, cfg)
	x := randomBatch(4, 1, 32)
	prev := checkpointFloats(t, m)
	n := 0
	for name := range prev {
		if strings.HasPrefix(name, "ema.") {
			n++
			if !slices.Equal(prev[name], prev[strings.TrimPrefix(name, "ema.")]) {
				t.Fatalf("%s does not start at the initial weights", name)
			}
		}
	}
	if n == 0 {
		t.Fatal("the checkpoint keeps no averaged weights")
	}
	for step := range 3 {
		batch := randomBatch(uint64(10+step), 2, 32)
		for _, mm := range []*Model{m, twin} {
			if _, err := mm.TrainStep(Step{Batch: batch, N: 2}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := m.Reconstruct(x, 1, 32, 32); err != nil { // the twin never infers
			t.Fatal(err)
		}
		d := min(cfg.EMA, float64(1+step)/float64(10+step))
		cur := checkpointFloats(t, m)
		for name, e := range cur {
			live, ok := strings.CutPrefix(name, "ema.")
			if !ok {
				continue
			}
			w, old := cur[live], prev[name]
			for i := range e {
				want := d*old[i] + (1-d)*w[i]
				if math.Abs(e[i]-want) > 1e-6*(1+math.Abs(want)) {
					t.Fatalf("step %d: %s[%d] = %g, want %g*%g + %g*%g", step, name, i, e[i], d, old[i], 1-d, w[i])
				}
			}
		}
		prev = cur
	}
	if !maps.EqualFunc(prev, checkpointFloats(t, twin), slices.Equal) {
		t.Fatal("reconstructing in between changed what training does")
	}

	state, err := m.Save(3)
	if err != nil {
		t.Fatal(err)
	}
	averaged, err := m.Reconstruct(x, 1, 32, 32)
	if err != nil {
		t.Fatal(err)
	}
	plain := cfg
	plain.EMA = 0
	for _, tc := range []struct {
		name string
		cfg  Config
		same bool
	}{
		{"without a moving average", plain, false},
		{"with one", cfg, true},
	} {
		tc.cfg.Seed = 7
		fresh := newModel(t, tc.cfg)
		if _, err := fresh.Load(state); err != nil {
			t.Fatal(err)
		}
		got, err := fresh.Reconstruct(x, 1, 32, 32)
		if err != nil {
			t.Fatal(err)
		}
		if slices.Equal(got, averaged) != tc.same {
			t.Errorf("loaded %s: reconstruction equal to the averaged one is %v, want %v", tc.name, !tc.same, tc.same)
		}
	}
}
