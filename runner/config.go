// Package runner holds the training loop and the tasks it runs, run folders
// (configuration, checkpoints, metrics, reports) and the commands that use
// a trained run: reconstruct, sample, eval, similarity and ablate.
package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"sort"
	"strings"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/internal/atomicfile"
	"github.com/deepsim/deepsim/pretrained"
)

// Config is every hyperparameter of a run, kept in one place. It is written
// to RUN/config.json and is all that is needed to rebuild the networks.
type Config struct {
	Task string   `json:"task"`
	Data []string `json:"data"`
	// Heldout images give the report its fixed crops and its final eval.
	Heldout []string `json:"heldout,omitempty"`
	// Init is a run, or a shipped run (pretrained:NAME), whose E's and G's
	// weights a new run starts from; D and the optimisers start afresh.
	// Its networks must be this run's: task, size, code and upsampling.
	Init string `json:"init,omitempty"`

	Size int `json:"size"` // crop side in pixels
	// The code (the VAE's latent) is CodeChannels x 8 x 8 at the training
	// size: the encoder downsamples by Size/8, so larger images get larger
	// codes.
	CodeChannels int   `json:"code_channels"`
	Batch        int   `json:"batch"`
	Steps        int64 `json:"steps"`
	// Upsample is how G doubles its resolution: "resize" (nearest-neighbour
	// then a 3x3 conv, the default: it cannot make a checkerboard) or
	// "deconv" (the paper's transposed convolution, whose overlapping
	// strides put one over every reconstruction; README, the sweep).
	Upsample string `json:"upsample"`
	// Precision of the training step: "float32"; "bf16" autocast for the
	// forward passes (float32 weights and optimizer state); or "float64"
	// throughout, for checking runs step by step (PrecisionFloat64).
	Precision string `json:"precision"`
	// Layout is the memory layout of the trained networks: "channels-last"
	// or "nchw". It changes speed, not the function: which is faster
	// depends on the machine (make bench-peer), so a run may resume in the
	// other.
	Layout string `json:"layout"`

	// VAE: the KL term's weight, reached linearly over the first KLWarmup
	// steps so that the posterior neither collapses onto the prior nor runs
	// off before the decoder has learnt anything. The KL is in nats per
	// image, summed over the latent.
	KLWeight float64 `json:"kl_weight,omitempty"`
	KLWarmup int64   `json:"kl_warmup,omitempty"`

	// The comparator C (a spec: NAME:LAYER, ARCH-random:LAYER or
	// FILE.pt[:SUBMODULE]); Layer applies when the spec names none.
	// ComparatorSize overrides the side C resizes its input to (0: C's own;
	// CropSide: the crops', which a new run records as their size).
	Comparator     string `json:"comparator"`
	Layer          string `json:"layer,omitempty"`
	ComparatorSize int    `json:"comparator_size"`

	// Inversion: the network whose features G inverts (a comparator spec),
	// at Layer; the side it sees images at (0: Size); and a fingerprint of
	// its weights, so that a run is never continued or used with others.
	Target        string `json:"target,omitempty"`
	TargetSize    int    `json:"target_size,omitempty"`
	TargetWeights string `json:"target_weights,omitempty"`

	// Comparator task: surrogate classes, measured on HeldoutPerClass
	// held-out transformations per class.
	Classes         int `json:"classes,omitempty"`
	HeldoutPerClass int `json:"heldout_per_class,omitempty"`
	// EvalEvery is the interval between held-out evaluations: the
	// comparator's accuracy; a generator's held-back curve, where it has
	// Heldout images (0: none).
	EvalEvery int64 `json:"eval_every,omitempty"`

	// Loss weights (see LossTerms), on mean-reduced squared errors: pixels
	// in [-1,1] for the image term, comparator features for the feature
	// term; the mean binary cross-entropy -log D(G(x)) for the adversarial
	// term (on draws from the prior for prior_adv); the mean L1 distance of
	// D's activations for match. In config.json they are lambda_NAME keys.
	Weights Weights `json:"-"`
	// AdvWeight is how the adversarial term is weighed: AdvFixed, by its
	// lambda; or AdvAdaptive, VQGAN's rule: its lambda times the ratio of
	// the reconstruction's (image, feature and match terms) and the adversarial
	// term's gradient norms at G's output layer, logged as adv_weight.
	// Runs made before the setting have "", which is fixed.
	AdvWeight string `json:"adv_weight,omitempty"`
	// DWarmup: for the first DWarmup steps D neither learns nor judges G,
	// which learns from the reconstruction alone (VQGAN's disc_start).
	DWarmup int64 `json:"d_warmup,omitempty"`
	// Discriminator is D's kind for the autoencoder and the VAE:
	// DiscriminatorImage, the paper's (one judgement per crop), or
	// DiscriminatorPatch (PatchGAN: one per 26 px patch). Runs made before
	// the setting have "", which is the paper's.
	Discriminator string `json:"discriminator,omitempty"`

	LR float64 `json:"lr"`
	// LRD is D's learning rate (0: LR); runs made before it have none.
	LRD         float64 `json:"lr_d,omitempty"`
	Beta1       float64 `json:"beta1"`
	Beta2       float64 `json:"beta2"`
	WeightDecay float64 `json:"weight_decay"`
	// LRDecay: over the run's last LRDecay steps every learning rate falls
	// linearly towards 0 (pix2pix's schedule), so that the last weights
	// settle; 0: constant rates, as in runs made before the setting.
	LRDecay int64 `json:"lr_decay,omitempty"`
	// EMA is the decay of a moving average of E's and G's weights, which
	// reconstructions, codes and samples use (0: none, the live weights);
	// runs made before the setting have none.
	EMA float64 `json:"ema,omitempty"`

	// Random crops cover between MinScale and all of an image's short side.
	MinScale float64 `json:"min_scale"`
	// Crops are drawn as if each image's short side were at most this: the
	// largest crop covers MaxSide/short of a larger image's short side.
	MaxSide int `json:"max_side"`
	// DataStream is the version of the data stream the run's batches
	// follow (DataStreamVersion); runs made before streaming have 1.
	DataStream int `json:"data_stream"`
	// CacheMB bounds the decoded images kept in memory, in MiB.
	CacheMB int `json:"cache_mb"`

	Seed            int64 `json:"seed"`
	Threads         int   `json:"threads"`
	LogEvery        int64 `json:"log_every"`
	CheckpointEvery int64 `json:"checkpoint_every"`
}

// Precisions of a training step.
const (
	PrecisionFloat32 = "float32"
	PrecisionBF16    = "bf16"
	// PrecisionFloat64 trains in double precision: slow, but rounding is
	// then too small for training's chaos to grow it into a visible
	// difference within many steps, so runs that differ only in how
	// sums are split (threads, processes) can be checked step by step.
	PrecisionFloat64 = "float64"
)

// How the adversarial term is weighed.
const (
	AdvFixed    = "fixed"
	AdvAdaptive = "adaptive"
)

// Kinds of discriminator.
const (
	DiscriminatorImage = "image"
	DiscriminatorPatch = "patch"
)

// Memory layouts of the trained networks.
const (
	LayoutChannelsLast = "channels-last"
	LayoutNCHW         = "nchw"
)

// Upsampling kinds of the generator.
const (
	UpsampleResize = "resize"
	UpsampleDeconv = "deconv"
)

// DataStreamVersion is the data stream new runs follow: 2 is seeded
// epochs without replacement over listed sources, decoded on demand.
const DataStreamVersion = 2

// DefaultCacheMB bounds the decoded images a run keeps: the default photos
// fit whole at the default crop size.
const DefaultCacheMB = 1024

// DefaultLayout is the layout new runs train in (Config.Layout): the faster
// on the machine this project measured (README, Performance).
const DefaultLayout = LayoutChannelsLast

// DefaultComparator is the shipped Exemplar-CNN, trained by this project, at
// the layer that gave the lowest independent feature error (README).
const DefaultComparator = "exemplar:conv2"

// CropSide, as ComparatorSize, has the comparator see the crops at their
// own size (--comparator-size -1).
const CropSide = -1

// TrainedComparator is the autoencoder's and the VAE's comparator where the
// store holds the MobileNetV2 that make models imports: under a judge that
// neither used (the InceptionV3) it gave a lower perceptual distance than
// DefaultComparator at equal steps (README, "SE against DeePSiM under a
// trained judge"). It sees the crops at their own size.
const TrainedComparator = "mobilenetv2:block_3_expand_relu"

// PreferTrainedComparator makes a new autoencoder or VAE configuration
// compare with TrainedComparator when store holds its network, and says
// whether it did.
func PreferTrainedComparator(c *Config, store pretrained.Store) bool {
	if t, err := taskNamed(c.Task); err != nil || !t.trainedComparator() {
		return false
	}
	s, err := pretrained.Parse(TrainedComparator)
	if err != nil {
		return false
	}
	if _, err := store.Lookup(s.Name); err != nil {
		return false
	}
	c.Comparator, c.ComparatorSize = TrainedComparator, c.Size
	return true
}

// Defaults is the reference configuration: the paper's optimiser and the
// loss weights of a reference run that trained stably at 64 px (README,
// "The model and the loss").
func Defaults() Config {
	return Config{
		Task:            TaskAutoencoder,
		Size:            64,
		CodeChannels:    8,
		Upsample:        UpsampleResize,
		Precision:       PrecisionFloat32,
		Layout:          DefaultLayout,
		Batch:           16,
		Steps:           2000,
		Comparator:      DefaultComparator,
		ComparatorSize:  0,
		Weights:         defaultWeights(),
		AdvWeight:       AdvFixed,
		Discriminator:   DiscriminatorImage,
		LR:              2e-4,
		Beta1:           0.9,
		Beta2:           0.999,
		WeightDecay:     4e-4,
		MinScale:        0.1,
		MaxSide:         512,
		DataStream:      DataStreamVersion,
		CacheMB:         DefaultCacheMB,
		Seed:            1,
		Threads:         0,
		LogEvery:        1,
		EvalEvery:       DefaultEvalEvery,
		CheckpointEvery: 200,
	}
}

// DefaultsFor is Defaults adjusted for a task (an unknown task keeps
// Defaults, and Validate names it).
func DefaultsFor(name string) Config {
	c := Defaults()
	c.Task = name
	if t, err := taskNamed(name); err == nil {
		t.defaults(&c)
	}
	return c
}

// KLWeightAt is the KL weight in force at a step (counted from 1).
func (c Config) KLWeightAt(step int64) float64 {
	if c.KLWarmup <= 0 || step >= c.KLWarmup {
		return c.KLWeight
	}
	return c.KLWeight * float64(step) / float64(c.KLWarmup)
}

// LRScaleAt is the factor on the learning rates at a step (counted from
// 1): 1 until the decay, then (Steps-step+1)/LRDecay, so the last step
// still learns a little and no step learns nothing. A decay longer than
// the run covers all of it.
func (c Config) LRScaleAt(step int64) float64 {
	decay := min(c.LRDecay, c.Steps)
	left := c.Steps - step + 1
	if decay <= 0 || left > decay {
		return 1
	}
	return float64(max(left, 1)) / float64(decay)
}

// TargetSpec is an inversion's target tapped at its inverted layer: Target,
// with Layer appended when the spec names none.
func (c Config) TargetSpec() string {
	if c.Layer != "" && !strings.Contains(c.Target, ":") {
		return c.Target + ":" + c.Layer
	}
	return c.Target
}

// TargetSide is the side an inversion's target sees images at.
func (c Config) TargetSide() int {
	if c.TargetSize > 0 {
		return c.TargetSize
	}
	return c.Size
}

// ComparatorSpec is the effective comparator spec, as the task reads it:
// Comparator, with Layer appended when the spec names no layer.
func (c Config) ComparatorSpec() string {
	t, err := taskNamed(c.Task)
	if err != nil {
		return c.Comparator
	}
	return t.comparatorSpec(c)
}

// maxWeight bounds a loss weight: far above any that trains (the paper's
// rescaled weights are in the hundreds), far below overflowing float32.
const maxWeight = 1e6

// Validate reports the first setting that cannot work: first those every
// task shares, then the task's own.
func (c Config) Validate() error {
	t, err := taskNamed(c.Task)
	if err != nil {
		return err
	}
	for i, t := range LossTerms {
		if err := checkWeight(t.Key(), c.Weights[i]); err != nil {
			return err
		}
	}
	if err := checkWeight("kl_weight", c.KLWeight); err != nil {
		return err
	}
	switch {
	case len(c.Data) == 0:
		return errors.New("no training data given")
	case math.IsNaN(c.LR) || c.LR <= 0 || c.LR > 1:
		return fmt.Errorf("lr %g: must be above 0 and at most 1", c.LR)
	case math.IsNaN(c.LRD) || c.LRD < 0 || c.LRD > 1:
		return fmt.Errorf("lr_d %g: must be between 0 (lr) and 1", c.LRD)
	case math.IsNaN(c.WeightDecay) || c.WeightDecay < 0 || c.WeightDecay > 1:
		return fmt.Errorf("weight_decay %g: must be between 0 and 1", c.WeightDecay)
	case math.IsNaN(c.EMA) || c.EMA < 0 || c.EMA >= 1:
		return fmt.Errorf("ema %g: must be at least 0 (none) and below 1", c.EMA)
	case c.EMA > 0 && !c.Generative():
		return fmt.Errorf("ema: a moving average of weights is for generators, not the %s task", c.Task)
	case math.IsNaN(c.Beta1) || c.Beta1 < 0 || c.Beta1 >= 1:
		return fmt.Errorf("beta1 %g: must be at least 0 and below 1", c.Beta1)
	case math.IsNaN(c.Beta2) || c.Beta2 < 0 || c.Beta2 >= 1:
		return fmt.Errorf("beta2 %g: must be at least 0 and below 1", c.Beta2)
	case c.Batch < 1:
		return fmt.Errorf("batch %d: must be at least 1", c.Batch)
	case c.Steps < 1:
		return fmt.Errorf("steps %d: must be at least 1", c.Steps)
	case c.LogEvery < 1 || c.CheckpointEvery < 1:
		return errors.New("log and checkpoint intervals must be at least 1")
	case c.Precision != PrecisionFloat32 && c.Precision != PrecisionBF16 && c.Precision != PrecisionFloat64:
		return fmt.Errorf("precision %q: have %s, %s, %s", c.Precision, PrecisionFloat32, PrecisionBF16, PrecisionFloat64)
	case c.Layout != LayoutChannelsLast && c.Layout != LayoutNCHW:
		return fmt.Errorf("layout %q: have %s, %s", c.Layout, LayoutChannelsLast, LayoutNCHW)
	case c.CacheMB < 0:
		return fmt.Errorf("cache_mb %d: must be at least 0", c.CacheMB)
	case c.AdvWeight != "" && c.AdvWeight != AdvFixed && c.AdvWeight != AdvAdaptive:
		return fmt.Errorf("adv_weight %q: have %s, %s", c.AdvWeight, AdvFixed, AdvAdaptive)
	case c.AdvWeight == AdvAdaptive && c.Weights.Of(TermAdv) > 0 && c.Weights.Of(TermImg) <= 0 && c.Weights.Of(TermFeat) <= 0:
		return errors.New("adv_weight adaptive weighs the adversarial term against the image and feature terms, which are 0")
	case c.DWarmup < 0:
		return fmt.Errorf("d_warmup %d: must not be negative", c.DWarmup)
	case c.Weights.Of(TermMatch) > 0 && c.Weights.Of(TermAdv) <= 0:
		return errors.New("lambda_match compares D's activations: it needs lambda_adv above 0, which trains D")
	case c.EvalEvery < 0:
		return fmt.Errorf("eval_every %d: must not be negative", c.EvalEvery)
	case c.LRDecay < 0:
		return fmt.Errorf("lr_decay %d: must not be negative", c.LRDecay)
	case c.Discriminator != "" && c.Discriminator != DiscriminatorImage && c.Discriminator != DiscriminatorPatch:
		return fmt.Errorf("discriminator %q: have %s, %s", c.Discriminator, DiscriminatorImage, DiscriminatorPatch)
	case c.Precision == PrecisionBF16 && !hasBF16(cpuFlags()):
		return errors.New("precision bf16: this CPU has no bfloat16 instructions (avx512_bf16 or amx_bf16); train in float32")
	}
	return t.validate(c)
}

func checkWeight(key string, v float64) error {
	if math.IsNaN(v) || v < 0 || v > maxWeight {
		return fmt.Errorf("%s %g: must be between 0 and %g", key, v, float64(maxWeight))
	}
	return nil
}

// Engine is the engine's view of the configuration.
func (c Config) Engine() graphs.Config {
	task := graphs.Task(-1) // an unknown task, which the engine refuses
	if t, err := taskNamed(c.Task); err == nil {
		task = t.engine()
	}
	up := graphs.Resize
	if c.Upsample == UpsampleDeconv {
		up = graphs.Deconv
	}
	precision := graphs.Float32
	switch c.Precision {
	case PrecisionBF16:
		precision = graphs.BF16
	case PrecisionFloat64:
		precision = graphs.Float64
	}
	layout := graphs.ChannelsLast
	if c.Layout == LayoutNCHW {
		layout = graphs.NCHW
	}
	return graphs.Config{
		Task:         task,
		Layout:       layout,
		Size:         c.Size,
		CodeChannels: c.CodeChannels,
		Upsample:     up,
		Classes:      c.Classes,
		Precision:    precision,
		Weights:      c.Weights.byName(),
		AdaptiveAdv:  c.AdvWeight == AdvAdaptive,
		PatchD:       c.Discriminator == DiscriminatorPatch,
		LR:           c.LR,
		LRD:          c.LRD,
		Beta1:        c.Beta1,
		Beta2:        c.Beta2,
		WeightDecay:  c.WeightDecay,
		EMA:          c.EMA,
		Seed:         c.Seed,
	}
}

// Run folder file names.
const (
	ConfigFile     = "config.json"
	MetricsFile    = "metrics.jsonl"
	CheckpointFile = "checkpoint.pt"
	// ComparatorFile holds a comparator run's feature layers, the state
	// dict that "runner comparator import --arch exemplar" takes.
	ComparatorFile = "comparator.pt"
)

// SaveConfig writes cfg to dir/config.json atomically.
func SaveConfig(dir string, cfg Config) error {
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, ConfigFile), append(b, '\n'))
}

// LoadConfig reads dir/config.json (see ParseConfig); dir is a run folder
// or a shipped run, pretrained:NAME.
func LoadConfig(dir string) (Config, error) {
	path := filepath.Join(dir, ConfigFile)
	files, err := runFiles(dir)
	if err != nil {
		return Config{}, err
	}
	f, err := files.Open(ConfigFile)
	if err != nil {
		return Config{}, fmt.Errorf("read run config: %w", err)
	}
	defer f.Close()
	// A config is a few hundred bytes; a huge file is not one.
	b, err := io.ReadAll(io.LimitReader(f, maxConfig+1))
	if err != nil {
		return Config{}, fmt.Errorf("read run config: %w", err)
	}
	cfg, err := ParseConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

const maxConfig = 1 << 20

// ParseConfig reads a config.json, starting from its task's defaults so
// that fields added later keep their default in older runs.
func ParseConfig(b []byte) (Config, error) {
	if len(b) > maxConfig {
		return Config{}, fmt.Errorf("%d bytes: not a run config", len(b))
	}
	var head struct {
		Task string `json:"task"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return Config{}, err
	}
	if _, err := taskNamed(head.Task); err != nil {
		return Config{}, err
	}
	cfg := DefaultsFor(head.Task)
	cfg.Layout, cfg.DataStream, cfg.Upsample = "", 0, ""
	// Omitted when empty: a run without them had none, whatever today's
	// default ("" is the fixed weight).
	cfg.AdvWeight, cfg.DWarmup, cfg.LRDecay = "", 0, 0
	if err := json.Unmarshal(b, &cfg); err != nil {
		return Config{}, err
	}
	if cfg.DataStream == 0 {
		cfg.DataStream = 1 // decoded in memory, drawn with replacement
	}
	if cfg.Layout == "" {
		cfg.Layout = LayoutChannelsLast // what runs before the choice used
	}
	if cfg.Upsample == "" {
		cfg.Upsample = UpsampleDeconv // the only generator before the choice
	}
	return cfg, nil
}

// Generative tells whether the run trains a generator of images (the
// autoencoder, the VAE and inversion), rather than a comparator.
func (c Config) Generative() bool {
	t, err := taskNamed(c.Task)
	return err == nil && t.generative()
}

// resumable are the settings a resumed run may change, by config.json key.
// (An inversion's target_weights is checked against the weights themselves.)
var resumable = map[string]bool{"steps": true, "threads": true, "layout": true, "data": true, "heldout": true, "eval_every": true, "init": true,
	"log_every": true, "checkpoint_every": true, "target_weights": true,
	"data_stream": true, "cache_mb": true}

// CheckResume says whether a resumed run may go on with asked, its saved
// configuration with the flags given for the resume applied: only the
// resumable settings may differ. The error names the first that does.
func CheckResume(saved, asked Config) error {
	a, err := fields(saved)
	if err != nil {
		return err
	}
	b, err := fields(asked)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(b))
	for k := range b {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if resumable[k] || string(a[k]) == string(b[k]) {
			continue
		}
		return fmt.Errorf("%s %s differs from the run's %s: a resumed run keeps its configuration", k, b[k], a[k])
	}
	return nil
}

// fields is a config's settings by config.json key, as JSON.
func fields(c Config) (map[string]json.RawMessage, error) {
	raw, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	return m, json.Unmarshal(raw, &m)
}
