package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"time"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/launch"
	"github.com/deepsim/deepsim/pipeline"
)

// Data-parallel training: every process of a group builds the same global
// batch from the same seed and step, and trains on its own contiguous rows
// of it; the engine all-reduces the gradients and logged terms each step.
// Rank 0 owns the run folder: config, metrics, checkpoints and report.

// DefaultGroupTimeout bounds the rendezvous and every collective when no
// --dist-timeout is given: a rank that died or hangs stops the others
// within it.
const DefaultGroupTimeout = 3 * time.Minute

// JoinGroup joins the group that env describes.
func JoinGroup(env launch.Env, timeout time.Duration) (*graphs.Group, error) {
	return graphs.NewGroup(graphs.GroupSpec{
		Rank: env.Rank, WorldSize: env.WorldSize,
		MasterAddr: env.MasterAddr, MasterPort: env.MasterPort,
		ServeStore: !env.AgentStore, StorePrefix: env.StorePrefix(),
		StoreFile: env.StoreFile, Interface: env.Interface,
		Timeout: timeout,
	})
}

// start is what rank 0 tells the others before a run: its configuration,
// or why it could not start one.
type start struct {
	Config *Config `json:"config,omitempty"`
	Error  string  `json:"error,omitempty"`
}

// shareConfig gives every rank rank 0's configuration, which rank 0 gets
// from resolve; the others keep their own thread count. When resolve
// fails on rank 0, every rank fails with its error.
func shareConfig(g *graphs.Group, threads int, resolve func() (Config, error)) (Config, error) {
	var b []byte
	var cfg Config
	var failed error
	if g.Rank() == 0 {
		cfg, failed = resolve()
		s := start{Config: &cfg}
		if failed != nil {
			s = start{Error: failed.Error()}
		}
		var err error
		if b, err = json.Marshal(s); err != nil {
			return cfg, err
		}
	}
	b, err := g.Broadcast(b)
	if err != nil {
		return cfg, fmt.Errorf("configuration from rank 0: %w", err)
	}
	if g.Rank() == 0 {
		return cfg, failed
	}
	var s start
	if err := json.Unmarshal(b, &s); err != nil {
		return cfg, fmt.Errorf("configuration from rank 0: %w", err)
	}
	if s.Error != "" {
		return cfg, fmt.Errorf("rank 0 could not start the run: %s", s.Error)
	}
	if s.Config == nil {
		return cfg, fmt.Errorf("configuration from rank 0: none sent")
	}
	cfg = *s.Config
	cfg.Threads = threads
	return cfg, nil
}

// checkGroup refuses what a group cannot train.
func checkGroup(cfg Config, t task, g *graphs.Group) error {
	switch {
	case g == nil:
		return nil
	case !t.generative():
		return fmt.Errorf("the %s task trains in one process; data-parallel training is for %s",
			cfg.Task, strings.Join(generativeTasks(), ", "))
	case cfg.Batch < g.Size():
		return fmt.Errorf("batch %d is less than the %d processes: each needs at least one crop of every batch", cfg.Batch, g.Size())
	}
	return nil
}

// sameInputs checks that every rank listed the same images (by the
// index's fingerprint: names and sizes) and the same target weights:
// otherwise their rows would not be one batch's.
func sameInputs(g *graphs.Group, src pipeline.Source, targetWeights string) error {
	if g == nil {
		return nil
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%x %s", src.Fingerprint(), targetWeights)
	same, err := g.Same(int64(h.Sum64() >> 1))
	if err != nil {
		return err
	}
	if !same {
		return fmt.Errorf("the ranks loaded different training images or target weights: every rank needs the same data files (%d here) and networks", src.Len())
	}
	return nil
}

// rows are the rows [lo, hi) of a global batch of n that rank r of w
// trains on: contiguous, and as even as n allows.
func rows(n, r, w int) (lo, hi int) { return r * n / w, (r + 1) * n / w }

// rankRows is this rank's part of a step's input: a batch built whole is cut
// to the rank's rows; one built as the rank's rows alone (Global set) is
// kept. It asks the group to stop after the step when ctx is cancelled.
func rankRows(ctx context.Context, s graphs.Step, g *graphs.Group) graphs.Step {
	if g == nil {
		return s
	}
	s.Stop = ctx.Err() != nil
	if s.Global > 0 {
		return s
	}
	lo, hi := rows(s.N, g.Rank(), g.Size())
	plane := len(s.Batch) / s.N
	s.Batch = s.Batch[lo*plane : hi*plane]
	if s.Labels != nil {
		s.Labels = s.Labels[lo:hi]
	}
	s.Offset, s.Global, s.N = lo, s.N, hi-lo
	return s
}

// nextBatch waits for the next batch. A process alone stops before its
// next step once ctx is cancelled. In a group every rank must take the
// same steps: the request to stop goes with the next step (rankRows) and the
// group stops after it, together.
func nextBatch(ctx context.Context, batches <-chan pipeline.Batch, g *graphs.Group) (pipeline.Batch, bool) {
	if g != nil {
		return <-batches, false
	}
	select {
	case <-ctx.Done():
		return pipeline.Batch{}, true
	case b := <-batches:
		return b, false
	}
}

// logAllReduce logs the time the group's all-reduces took per step.
func logAllReduce(log *slog.Logger, g *graphs.Group, steps int64) {
	if g == nil || steps <= 0 {
		return
	}
	d, n := g.AllReduced()
	log.Info("all-reduce", "per_step", (d / time.Duration(steps)).Round(time.Microsecond).String(), "calls", n, "steps", steps)
}
