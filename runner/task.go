package runner

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/pipeline"
	"github.com/deepsim/deepsim/pretrained"
)

// A task is one kind of run. Each task lives in its own file and is
// registered in tasks; Train is the loop they share. What differs by task
// is asked of it here, never by its name elsewhere. A new task is a file
// and a line in tasks, and on the engine's side a class in
// graphs/tasks.hpp.
type task interface {
	// defaults sets the task's own defaults over Defaults().
	defaults(c *Config)
	// validate checks the settings that only this task has; Config.Validate
	// checks those every task shares.
	validate(c Config) error
	// engine is the engine's task.
	engine() graphs.Task
	// generative tells whether a run maps images to images: then it has a
	// report, and reconstruct and eval work on it; and it trains as a
	// data-parallel group.
	generative() bool
	// inverts tells whether G's input is a fixed target's features of the
	// image (reconstruct then inverts), rather than the image itself.
	inverts() bool
	// samples tells whether G decodes draws from a prior (runner sample,
	// and the report's sample strip).
	samples() bool
	// comparatorSpec is the comparator of c's feature loss ("" for none).
	comparatorSpec(c Config) string
	// trainedComparator tells whether a new run compares with
	// TrainedComparator where the store holds it.
	trainedComparator() bool
	// networks opens the fixed networks the model is built with: what its
	// feature loss compares with, and an inversion's target. They are
	// opened before the images load, so that a missing one fails fast.
	networks(c Config, store pretrained.Store) (fixedNets, error)
	// target resolves the network whose features the model takes as
	// input (opened at c.TargetSide()); nil when the task has none.
	target(c Config, store pretrained.Store) (*pretrained.Network, error)
	// space is the network whose features measure a run's feature error,
	// and the side it sees images at ("" when the task has none).
	space(c Config) (spec string, side int)
	// begin starts the task's part of a run over the listed images; in a
	// group g, the rank builds only its own rows of each batch.
	begin(c Config, data *pipeline.Loader, g *graphs.Group, log *slog.Logger) (taskRun, error)
}

// A taskRun is a task's part of one training run.
type taskRun interface {
	// batch is the training batch at position i of the data stream.
	batch(i int64) pipeline.Batch
	// input is the step's input for b at step (counted from 1), and values
	// the task logs beside the step's own terms.
	input(step int64, b pipeline.Batch) (graphs.Step, []graphs.Term)
	// measure runs after each step; what it returns joins the step's
	// metrics line.
	measure(model *graphs.Model, step int64, last bool) ([]graphs.Term, error)
	// finish leaves what the task leaves behind when the run ends, in
	// out, and its figures in sum.
	finish(ctx context.Context, model *graphs.Model, out output, sum *TrainSummary) error
}

// fixedNets are the fixed networks a model is built with; either may be
// nil, and they may be one and the same. targetWeights fingerprints the
// target's weights (pretrained.Fingerprint).
type fixedNets struct {
	comp, target  *graphs.Comparator
	targetWeights string
}

// pin records the target's weights in cfg, or refuses other weights than
// those cfg records (a resumed inversion).
func (n fixedNets) pin(cfg Config) (Config, error) {
	switch {
	case n.targetWeights == "":
	case cfg.TargetWeights != "" && cfg.TargetWeights != n.targetWeights:
		return cfg, fmt.Errorf("the target %s has other weights (%s) than the run trained with (%s)",
			cfg.TargetSpec(), n.targetWeights, cfg.TargetWeights)
	default:
		cfg.TargetWeights = n.targetWeights
	}
	return cfg, nil
}

func (n fixedNets) Close() {
	for _, c := range []*graphs.Comparator{n.comp, n.target} {
		if c != nil {
			c.Close()
		}
	}
}

// Task names.
const (
	TaskAutoencoder = "autoencoder"
	TaskVAE         = "vae"
	TaskComparator  = "comparator"
	TaskInversion   = "inversion"
)

var tasks = map[string]task{
	TaskAutoencoder: deepsimTask{},
	TaskVAE:         deepsimTask{vae: true},
	TaskComparator:  comparatorTask{},
	TaskInversion:   inversionTask{},
}

// Inverts tells whether c's run reconstructs images from a fixed target's
// features (an inversion) rather than from the images themselves.
func (c Config) Inverts() bool {
	t, err := taskNamed(c.Task)
	return err == nil && t.inverts()
}

// generativeTasks names the tasks that map images to images, sorted.
func generativeTasks() []string {
	var names []string
	for n, t := range tasks {
		if t.generative() {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

func taskNamed(name string) (task, error) {
	if t, ok := tasks[name]; ok {
		return t, nil
	}
	names := make([]string, 0, len(tasks))
	for n := range tasks {
		names = append(names, n)
	}
	sort.Strings(names)
	return nil, fmt.Errorf("task %q is not available (have: %s)", name, strings.Join(names, ", "))
}

// cropBatches is the stream of random training crops that the generative
// tasks train on: batch i depends only on the seed, the sources and i. A
// rank of a group builds only its own rows.
func cropBatches(c Config, data *pipeline.Loader, g *graphs.Group) func(int64) pipeline.Batch {
	lo, hi := 0, c.Batch
	if g != nil {
		lo, hi = rows(c.Batch, g.Rank(), g.Size())
	}
	return func(i int64) pipeline.Batch {
		return data.Rows(uint64(c.Seed), i, c.Batch, lo, hi, true)
	}
}
