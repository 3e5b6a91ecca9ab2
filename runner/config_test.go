package runner

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/deepsim/deepsim/pretrained"
)

// A new autoencoder or VAE run compares with the imported MobileNetV2,
// at the crop size, where the store has it, and with the shipped
// Exemplar-CNN otherwise; other tasks keep their own.
func TestPreferTrainedComparator(t *testing.T) {
	with, without := trainedJudge(t), pretrained.Store{Home: t.TempDir()}
	for _, tc := range []struct {
		name     string
		task     string
		store    pretrained.Store
		want     string
		wantSize int
	}{
		{"autoencoder with the network", TaskAutoencoder, with, TrainedComparator, 64},
		{"vae with the network", TaskVAE, with, TrainedComparator, 64},
		{"autoencoder without it", TaskAutoencoder, without, DefaultComparator, 0},
		{"inversion", TaskInversion, with, DefaultsFor(TaskInversion).Comparator, 0},
		{"comparator task", TaskComparator, with, DefaultsFor(TaskComparator).Comparator, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultsFor(tc.task)
			changed := PreferTrainedComparator(&cfg, tc.store)
			if cfg.Comparator != tc.want || cfg.ComparatorSize != tc.wantSize || changed != (tc.want == TrainedComparator) {
				t.Fatalf("comparator %q at %d (changed %v), want %q at %d", cfg.Comparator, cfg.ComparatorSize, changed, tc.want, tc.wantSize)
			}
			if !changed {
				return
			}
			c, err := pretrained.OpenString(cfg.ComparatorSpec(), tc.store, cfg.ComparatorSize)
			if err != nil {
				t.Fatalf("the chosen comparator does not open: %v", err)
			}
			c.Close()
		})
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string // "" for valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"se baseline", func(c *Config) { c.Weights.Set(TermFeat, 0); c.Weights.Set(TermAdv, 0) }, ""},
		{"the autoencoder's defaults", func(c *Config) { *c = DefaultsFor(TaskAutoencoder); c.Data = []string{"photos"} }, ""},
		{"the VAE's defaults", func(c *Config) { *c = DefaultsFor(TaskVAE); c.Data = []string{"photos"} }, ""},
		{"se baseline on the autoencoder's defaults", func(c *Config) {
			*c = DefaultsFor(TaskAutoencoder)
			c.Data = []string{"photos"}
			c.Weights.Set(TermFeat, 0)
			c.Weights.Set(TermAdv, 0)
		}, ""},
		{"no data", func(c *Config) { c.Data = nil }, "no training data"},
		{"size 48", func(c *Config) { c.Size = 48 }, "power of two"},
		{"size 8", func(c *Config) { c.Size = 8 }, "power of two"},
		{"unknown task", func(c *Config) { c.Task = "gan" }, "not available"},
		{"feature loss without comparator", func(c *Config) { c.Comparator = "" }, "needs a comparator"},
		{"comparator task at 32 px", func(c *Config) {
			c.Task, c.Classes, c.HeldoutPerClass, c.EvalEvery, c.Size = TaskComparator, 10, 1, 1, 32
		}, "64 px"},
		{"all weights zero", func(c *Config) { c.Weights = Weights{} }, "nothing to train"},
		{"negative weight", func(c *Config) { c.Weights.Set(TermAdv, -1) }, "lambda_adv -1: must be between 0 and"},
		{"overflowing weight", func(c *Config) { c.Weights.Set(TermImg, 1e39) }, "lambda_img 1e+39"},
		{"NaN weight", func(c *Config) { c.Weights.Set(TermFeat, math.NaN()) }, "lambda_feat NaN"},
		{"infinite learning rate", func(c *Config) { c.LR = math.Inf(1) }, "lr +Inf"},
		{"NaN learning rate", func(c *Config) { c.LR = math.NaN() }, "lr NaN"},
		{"zero learning rate", func(c *Config) { c.LR = 0 }, "lr 0"},
		{"zero batch", func(c *Config) { c.Batch = 0 }, "batch"},
		{"vae", func(c *Config) { c.Task, c.KLWeight, c.KLWarmup = TaskVAE, 1e-3, 500 }, ""},
		{"kl weight on an autoencoder", func(c *Config) { c.KLWeight = 1e-3 }, "vae task"},
		{"negative kl warm-up", func(c *Config) { c.Task, c.KLWarmup = TaskVAE, -1 }, "negative"},
		{"inversion without a target", func(c *Config) { c.Task = TaskInversion }, "needs a target"},
		{"inversion without a layer", func(c *Config) { c.Task, c.Target = TaskInversion, "mobilenetv2" }, "its layer"},
		{"inversion of two layers", func(c *Config) { c.Task, c.Target, c.Layer = TaskInversion, "alexnet", "conv4+conv5" }, "one layer"},
		{"inversion", func(c *Config) { c.Task, c.Target, c.Layer = TaskInversion, "alexnet", "fc6" }, ""},
		{"unknown upsampling", func(c *Config) { c.Upsample = "bilinear" }, "upsample"},
		{"nchw", func(c *Config) { c.Layout = LayoutNCHW }, ""},
		{"unknown layout", func(c *Config) { c.Layout = "nhwc" }, "layout"},
		{"zero latent", func(c *Config) { c.CodeChannels = 0 }, "code_channels"},
		{"adaptive adversarial weight", func(c *Config) { c.AdvWeight, c.DWarmup = AdvAdaptive, 300 }, ""},
		{"run from before --adv-weight", func(c *Config) { c.AdvWeight = "" }, ""},
		{"unknown adversarial weighting", func(c *Config) { c.AdvWeight = "auto" }, "adv_weight"},
		{"adaptive without an adversarial term: nothing to weigh", func(c *Config) { c.AdvWeight = AdvAdaptive; c.Weights.Set(TermAdv, 0) }, ""},
		{"adaptive against nothing", func(c *Config) {
			c.AdvWeight = AdvAdaptive
			c.Weights.Set(TermImg, 0)
			c.Weights.Set(TermFeat, 0)
		}, "image and feature terms"},
		{"negative d warm-up", func(c *Config) { c.DWarmup = -1 }, "d_warmup"},
		{"feature matching", func(c *Config) { c.Weights.Set(TermMatch, 1) }, ""},
		{"feature matching without D", func(c *Config) {
			c.Weights.Set(TermMatch, 1)
			c.Weights.Set(TermAdv, 0)
		}, "lambda_match"},
		{"D's own learning rate", func(c *Config) { c.LRD = 8e-4 }, ""},
		{"NaN D learning rate", func(c *Config) { c.LRD = math.NaN() }, "lr_d NaN"},
		{"negative D learning rate", func(c *Config) { c.LRD = -1 }, "lr_d -1"},
		{"negative weight decay", func(c *Config) { c.WeightDecay = -1e-4 }, "weight_decay -0.0001"},
		{"beta1 of 1", func(c *Config) { c.Beta1 = 1 }, "beta1 1"},
		{"moving average", func(c *Config) { c.EMA = 0.999 }, ""},
		{"ema of 1", func(c *Config) { c.EMA = 1 }, "ema 1"},
		{"NaN ema", func(c *Config) { c.EMA = math.NaN() }, "ema NaN"},
		{"ema for a comparator", func(c *Config) { c.Task, c.EMA = TaskComparator, 0.999 }, "for generators"},
		{"NaN beta2", func(c *Config) { c.Beta2 = math.NaN() }, "beta2 NaN"},
		{"learning-rate decay", func(c *Config) { c.LRDecay = c.Steps }, ""},
		{"negative learning-rate decay", func(c *Config) { c.LRDecay = -1 }, "lr_decay -1"},
		{"decay longer than the run", func(c *Config) { c.LRDecay = c.Steps + 1 }, ""},
		{"patch discriminator", func(c *Config) { c.Discriminator = DiscriminatorPatch }, ""},
		{"unknown discriminator", func(c *Config) { c.Discriminator = "pixel" }, "discriminator"},
		{"patch discriminator for an inversion", func(c *Config) {
			c.Task, c.Target, c.Layer, c.Discriminator = TaskInversion, "alexnet", "fc6", DiscriminatorPatch
		}, "discriminator patch is for"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Defaults()
			cfg.Data = []string{"photos"}
			tc.edit(&cfg)
			err := cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want mention of %q", err, tc.want)
			}
		})
	}
}

func TestKLWeightWarmsUp(t *testing.T) {
	cfg := Config{KLWeight: 0.01, KLWarmup: 100}
	tests := []struct {
		step int64
		want float64
	}{{1, 0.0001}, {50, 0.005}, {100, 0.01}, {5000, 0.01}}
	for _, tc := range tests {
		if got := cfg.KLWeightAt(tc.step); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("step %d: %v, want %v", tc.step, got, tc.want)
		}
	}
	cfg.KLWarmup = 0
	if got := cfg.KLWeightAt(1); got != 0.01 {
		t.Errorf("no warm-up: %v at step 1", got)
	}
}

func TestLearningRatesDecay(t *testing.T) {
	tests := []struct {
		decay, step int64
		want        float64
	}{
		{0, 1, 1}, {0, 10, 1},
		{4, 1, 1}, {4, 6, 1}, {4, 7, 1}, {4, 8, 0.75}, {4, 10, 0.25},
		{10, 1, 1}, {10, 10, 0.1},
		{4, 11, 0.25},                           // a resumed run that trains past --steps keeps the last rate
		{20, 1, 1}, {20, 2, 0.9}, {20, 10, 0.1}, // longer than the run: all of it
	}
	for _, tc := range tests {
		cfg := Config{Steps: 10, LRDecay: tc.decay}
		if got := cfg.LRScaleAt(tc.step); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("decay %d, step %d: %v, want %v", tc.decay, tc.step, got, tc.want)
		}
	}
}

func TestCheckResume(t *testing.T) {
	saved := Defaults()
	saved.Data = []string{"photos"}
	tests := []struct {
		name string
		edit func(*Config)
		want string // "" when the resume may go on
	}{
		{"nothing changed", func(*Config) {}, ""},
		{"more steps", func(c *Config) { c.Steps = 9000 }, ""},
		{"other threads, data, intervals", func(c *Config) {
			c.Threads, c.Data, c.Heldout, c.LogEvery, c.CheckpointEvery = 2, []string{"more"}, []string{"held"}, 10, 50
		}, ""},
		{"a loss weight", func(c *Config) { c.Weights.Set(TermAdv, 0.02) }, "lambda_adv 0.02 differs from the run's 0.01"},
		{"the latent", func(c *Config) { c.CodeChannels = 16 }, "code_channels 16"},
		{"the seed", func(c *Config) { c.Seed = 2 }, "seed 2 differs"},
		{"the layout", func(c *Config) { c.Layout = LayoutNCHW }, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			asked := saved
			tc.edit(&asked)
			err := CheckResume(saved, asked)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// A run made before a setting existed, or whose config.json leaves it out
// as empty, reads as what it trained with then, whatever today's default;
// a new run's config says its setting.
func TestConfigBeforeASetting(t *testing.T) {
	old := []byte(`{"task":"autoencoder","data":["photos"],"size":64}`)
	cases := []struct {
		name  string
		get   func(Config) any
		then  any           // what a config without the key reads as
		other func(*Config) // another value, which must round-trip
	}{
		{"layout", func(c Config) any { return c.Layout }, LayoutChannelsLast, func(c *Config) { c.Layout = LayoutNCHW }},
		{"upsample", func(c Config) any { return c.Upsample }, UpsampleDeconv, func(c *Config) { c.Upsample = UpsampleResize }},
		{"adv_weight", func(c Config) any { return c.AdvWeight }, "", func(c *Config) { c.AdvWeight = AdvAdaptive }},
		{"d_warmup", func(c Config) any { return c.DWarmup }, int64(0), func(c *Config) { c.DWarmup = 7 }},
		{"lr_decay", func(c Config) any { return c.LRDecay }, int64(0), func(c *Config) { c.LRDecay = 7 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ParseConfig(old)
			if err != nil || tc.get(cfg) != tc.then {
				t.Fatalf("a config without %s: %v, %v; want %v", tc.name, tc.get(cfg), err, tc.then)
			}
			tc.other(&cfg)
			want := tc.get(cfg)
			b, err := json.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			back, err := ParseConfig(b)
			if err != nil || tc.get(back) != want {
				t.Fatalf("round trip: %v, %v; want %v", tc.get(back), err, want)
			}
		})
	}
}

// A new autoencoder run's default decay covers a fifth of its steps,
// whatever --steps says; a decay given by its flag is kept; the other
// tasks' rates stay constant.
func TestDefaultDecayFollowsSteps(t *testing.T) {
	cases := []struct {
		task      string
		steps     int64
		given     bool
		decay     int64
		wantDecay int64
	}{
		{TaskAutoencoder, 1500, false, 0, 300},
		{TaskAutoencoder, 3000, false, 0, 600},
		{TaskVAE, 3000, false, 0, 0},
		{TaskAutoencoder, 1500, true, 7, 7},
		{TaskAutoencoder, 1500, true, 0, 0},
		{TaskInversion, 1500, false, 0, 0},
	}
	for _, tc := range cases {
		cfg := DefaultsFor(tc.task)
		cfg.Data, cfg.Steps = []string{"photos"}, tc.steps
		if tc.task == TaskInversion {
			cfg.Target, cfg.Layer = "alexnet-random", "conv2"
		}
		if tc.given {
			cfg.LRDecay = tc.decay
		}
		req := Request{Given: func(f string) bool { return tc.given && f == "lr_decay" || f == "steps" }}
		got, err := Resolve(cfg, req, pretrained.Store{}, nil, discardLog())
		if err != nil {
			t.Fatal(err)
		}
		if got.LRDecay != tc.wantDecay {
			t.Errorf("%s, %d steps, --lr-decay given %v: decay %d, want %d", tc.task, tc.steps, tc.given, got.LRDecay, tc.wantDecay)
		}
	}
}

// Every generator trains grid-free by default.
func TestDefaultUpsample(t *testing.T) {
	for _, task := range []string{TaskAutoencoder, TaskVAE, TaskInversion} {
		if got := DefaultsFor(task).Upsample; got != UpsampleResize {
			t.Errorf("%s: default --upsample %q, want %q", task, got, UpsampleResize)
		}
	}
}
