// Package runner holds the training loops, checkpoints, metrics and the
// commands that use a trained run (reconstruct).
package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/deepsim/deepsim/internal/atomicfile"
	"os"
	"path/filepath"
	"strings"

	"github.com/deepsim/deepsim/graphs"
)

// Config is every hyperparameter of a run, kept in one place. It is written
// to RUN/config.json and is all that is needed to rebuild the networks.
type Config struct {
	Task string   `json:"task"`
	Data []string `json:"data"`
	// Heldout images give the report its fixed crops and its final eval.
	Heldout []string `json:"heldout,omitempty"`

	Size int `json:"size"` // crop side in pixels
	// The code (the VAE's latent) is CodeChannels x 8 x 8 at the training
	// size: the encoder downsamples by Size/8, so larger images get larger
	// codes.
	CodeChannels int   `json:"code_channels"`
	Batch        int   `json:"batch"`
	Steps        int64 `json:"steps"`
	// Upsample is how G doubles its resolution: "resize" (nearest-neighbour
	// then a 3x3 conv) or "deconv" (the paper's transposed convolution).
	Upsample string `json:"upsample"`

	// VAE: the KL term's weight, reached linearly over the first KLWarmup
	// steps so that the posterior neither collapses onto the prior nor runs
	// off before the decoder has learnt anything. The KL is in nats per
	// image, summed over the latent.
	KLWeight float64 `json:"kl_weight,omitempty"`
	KLWarmup int64   `json:"kl_warmup,omitempty"`

	// The comparator C (a spec: NAME:LAYER, ARCH-random:LAYER or
	// FILE.pt[:SUBMODULE]); Layer applies when the spec names none.
	// ComparatorSize overrides the side C resizes its input to (0: C's own).
	Comparator     string `json:"comparator"`
	Layer          string `json:"layer,omitempty"`
	ComparatorSize int    `json:"comparator_size"`

	// Comparator task: surrogate classes, and how often to measure their
	// accuracy on held-out transformations (HeldoutPerClass per class).
	Classes         int   `json:"classes,omitempty"`
	HeldoutPerClass int   `json:"heldout_per_class,omitempty"`
	EvalEvery       int64 `json:"eval_every,omitempty"`

	// Loss weights, on mean-reduced squared errors: pixels in [-1,1] for the
	// image term, comparator features for the feature term, and the mean
	// binary cross-entropy -log D(G(x)) for the adversarial term.
	LambdaFeat float64 `json:"lambda_feat"`
	LambdaAdv  float64 `json:"lambda_adv"`
	LambdaImg  float64 `json:"lambda_img"`

	LR          float64 `json:"lr"`
	Beta1       float64 `json:"beta1"`
	Beta2       float64 `json:"beta2"`
	WeightDecay float64 `json:"weight_decay"`

	// Random crops cover between MinScale and all of an image's short side.
	MinScale float64 `json:"min_scale"`
	// Images are decoded once and kept with their short side at most this.
	MaxSide int `json:"max_side"`

	Seed            int64 `json:"seed"`
	Threads         int   `json:"threads"`
	LogEvery        int64 `json:"log_every"`
	CheckpointEvery int64 `json:"checkpoint_every"`
}

// Task names.
const (
	TaskAutoencoder = "autoencoder"
	TaskVAE         = "vae"
	TaskComparator  = "comparator"
)

// Upsampling kinds of the generator.
const (
	UpsampleResize = "resize"
	UpsampleDeconv = "deconv"
)

// DefaultComparator is the shipped Exemplar-CNN, trained by this project, at
// the layer that gave the lowest independent feature error (README).
const DefaultComparator = "exemplar:conv2"

// Defaults is the reference configuration: the paper's optimiser and the
// loss weights of a run that trained stably on these machines (PAPER.md).
func Defaults() Config {
	return Config{
		Task:            TaskAutoencoder,
		Size:            64,
		CodeChannels:    8,
		Upsample:        UpsampleDeconv,
		Batch:           16,
		Steps:           2000,
		Comparator:      DefaultComparator,
		ComparatorSize:  0,
		LambdaFeat:      1,
		LambdaAdv:       0.01,
		LambdaImg:       1,
		LR:              2e-4,
		Beta1:           0.9,
		Beta2:           0.999,
		WeightDecay:     4e-4,
		MinScale:        0.1,
		MaxSide:         512,
		Seed:            1,
		Threads:         0,
		LogEvery:        1,
		CheckpointEvery: 200,
	}
}

// DefaultsFor is Defaults adjusted for a task: the comparator task trains
// a classifier, which wants a larger batch and learning rate and no
// generator losses.
func DefaultsFor(task string) Config {
	c := Defaults()
	c.Task = task
	if task == TaskComparator {
		c.Batch, c.Steps, c.LR, c.WeightDecay = 64, 1500, 1e-3, 5e-4
		c.Classes, c.HeldoutPerClass, c.EvalEvery = 100, 4, 100
		c.Comparator = ""
		c.LambdaFeat, c.LambdaAdv, c.LambdaImg = 0, 0, 0
	}
	if task == TaskVAE {
		c.KLWeight, c.KLWarmup = DefaultKLWeight, 500
	}
	return c
}

// DefaultKLWeight weighs the KL (nats per image) against the mean-reduced
// reconstruction terms.
const DefaultKLWeight = 1e-3

// KLWeightAt is the KL weight in force at a step (counted from 1).
func (c Config) KLWeightAt(step int64) float64 {
	if c.KLWarmup <= 0 || step >= c.KLWarmup {
		return c.KLWeight
	}
	return c.KLWeight * float64(step) / float64(c.KLWarmup)
}

// ComparatorSpec is the effective comparator spec: Comparator, with Layer
// appended when the spec names no layer.
func (c Config) ComparatorSpec() string {
	if c.Layer != "" && !strings.Contains(c.Comparator, ":") {
		return c.Comparator + ":" + c.Layer
	}
	return c.Comparator
}

// Validate reports the first setting that cannot work.
func (c Config) Validate() error {
	f := c.Size / 8
	if c.Task == TaskComparator {
		switch {
		case len(c.Data) == 0:
			return errors.New("no --data folder given")
		case c.Size != 64:
			return fmt.Errorf("--size %d: the Exemplar-CNN comparator trains on 64 px patches", c.Size)
		case c.Classes < 2:
			return fmt.Errorf("--classes %d: need at least 2 surrogate classes", c.Classes)
		case c.Batch < 1 || c.Steps < 1 || c.LR <= 0:
			return errors.New("--batch, --steps and --lr must be positive")
		case c.HeldoutPerClass < 1 || c.EvalEvery < 1 || c.LogEvery < 1 || c.CheckpointEvery < 1:
			return errors.New("held-out size and intervals must be at least 1")
		}
		return nil
	}
	switch {
	case c.Task != TaskAutoencoder && c.Task != TaskVAE:
		return fmt.Errorf("task %q is not available (have: %s, %s, %s)", c.Task, TaskAutoencoder, TaskVAE, TaskComparator)
	case c.Upsample != UpsampleResize && c.Upsample != UpsampleDeconv:
		return fmt.Errorf("--upsample %q: have %s, %s", c.Upsample, UpsampleResize, UpsampleDeconv)
	case c.KLWeight < 0 || c.KLWarmup < 0:
		return errors.New("--kl-weight and --kl-warmup must not be negative")
	case c.Task != TaskVAE && c.KLWeight > 0:
		return errors.New("--kl-weight is for --task vae: an autoencoder has no KL term")
	case len(c.Data) == 0:
		return errors.New("no --data folder given")
	case c.Size < 16 || c.Size%8 != 0 || f&(f-1) != 0:
		return fmt.Errorf("--size %d: must be 8 times a power of two (16, 32, 64, 128, 256)", c.Size)
	case c.CodeChannels < 1:
		return fmt.Errorf("--latent %d: must be at least 1 channel", c.CodeChannels)
	case c.Batch < 1:
		return fmt.Errorf("--batch %d: must be at least 1", c.Batch)
	case c.Steps < 1:
		return fmt.Errorf("--steps %d: must be at least 1", c.Steps)
	case c.LambdaFeat > 0 && c.Comparator == "":
		return errors.New("the feature loss needs a --comparator")
	case c.ComparatorSize != 0 && c.ComparatorSize < 16:
		return fmt.Errorf("comparator size %d: too small", c.ComparatorSize)
	case c.LambdaFeat < 0 || c.LambdaAdv < 0 || c.LambdaImg < 0:
		return errors.New("loss weights must not be negative")
	case c.LambdaFeat == 0 && c.LambdaAdv == 0 && c.LambdaImg == 0:
		return errors.New("all loss weights are 0: nothing to train")
	case c.LR <= 0:
		return fmt.Errorf("learning rate %g: must be positive", c.LR)
	case c.MinScale <= 0 || c.MinScale > 1:
		return fmt.Errorf("min scale %g: must be in (0,1]", c.MinScale)
	case c.MaxSide < c.Size:
		return fmt.Errorf("max side %d: must be at least the crop size %d", c.MaxSide, c.Size)
	case c.LogEvery < 1 || c.CheckpointEvery < 1:
		return errors.New("log and checkpoint intervals must be at least 1")
	}
	return nil
}

// Graph is the engine's view of the configuration.
func (c Config) Graph() graphs.Config {
	task := graphs.Autoencoder
	switch c.Task {
	case TaskComparator:
		task = graphs.ComparatorTask
	case TaskVAE:
		task = graphs.VAE
	}
	up := graphs.Resize
	if c.Upsample == UpsampleDeconv {
		up = graphs.Deconv
	}
	return graphs.Config{
		Task:         task,
		Size:         c.Size,
		CodeChannels: c.CodeChannels,
		Upsample:     up,
		Classes:      c.Classes,
		LambdaFeat:   c.LambdaFeat,
		LambdaAdv:    c.LambdaAdv,
		LambdaImg:    c.LambdaImg,
		LR:           c.LR,
		Beta1:        c.Beta1,
		Beta2:        c.Beta2,
		WeightDecay:  c.WeightDecay,
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

// LoadConfig reads dir/config.json, starting from the task's defaults so
// that fields added later keep their default in older runs.
func LoadConfig(dir string) (Config, error) {
	b, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		return Config{}, fmt.Errorf("read run config: %w", err)
	}
	var head struct {
		Task string `json:"task"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return Config{}, fmt.Errorf("parse %s: %w", filepath.Join(dir, ConfigFile), err)
	}
	cfg := DefaultsFor(head.Task)
	if err := json.Unmarshal(b, &cfg); err != nil {
		return Config{}, fmt.Errorf("parse %s: %w", filepath.Join(dir, ConfigFile), err)
	}
	return cfg, nil
}

// Generative tells whether the run trains an encoder and a generator (the
// autoencoder and the VAE), rather than a comparator.
func (c Config) Generative() bool { return c.Task == TaskAutoencoder || c.Task == TaskVAE }
