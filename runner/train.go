package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime/debug"
	"time"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/pipeline"
	"github.com/deepsim/deepsim/pretrained"
)

// ErrInterrupted is returned when a run stops because its context was
// cancelled (SIGINT or SIGTERM); its checkpoint has been saved.
var ErrInterrupted = errors.New("training interrupted")

// TrainOptions are the settings of one invocation that are not part of the
// run's configuration.
type TrainOptions struct {
	Out    string // the run folder
	Resume bool   // continue from Out's checkpoint
	Store  pretrained.Store
	Log    *slog.Logger
	// Progress receives the progress bar when it is a terminal; otherwise a
	// progress line is logged now and then. Nil means os.Stderr.
	Progress io.Writer
	// Group, when set, is the data-parallel group this process trains in
	// (see distributed.go). Rank 0 owns the run folder; the others train
	// and write nothing.
	Group *graphs.Group
}

// TrainSummary says what a run did.
type TrainSummary struct {
	StartStep, Step int64
	Images          int                // images used
	Skipped         []pipeline.Skipped // files that could not be used
	// Comparator task: held-out surrogate-class accuracy at the last step.
	HeldoutAcc float64
}

// trainRun is one run in progress.
type trainRun struct {
	cfg   Config
	opt   TrainOptions
	log   *slog.Logger
	model *graphs.Model
	task  taskRun
	out   output
	sum   *TrainSummary
}

// Train runs cfg to cfg.Steps in the run folder, writing config.json,
// metrics.jsonl and checkpoints. With opt.Resume it continues from the
// folder's checkpoint. When ctx is cancelled it saves a checkpoint and
// returns ErrInterrupted. The task (see task.go) supplies the data and
// everything else that is not the loop. Every rank of a group runs it;
// only rank 0 writes the run folder (openOutput).
func Train(ctx context.Context, cfg Config, opt TrainOptions) (*TrainSummary, error) {
	log := opt.Log
	if log == nil {
		log = slog.Default()
	}
	t, err := checkRun(cfg, opt.Group)
	if err != nil {
		return nil, err
	}
	startEngine(cfg.Threads, log)
	// The fixed networks first: a missing one fails before anything is
	// written or minutes of images are decoded.
	nets, err := t.networks(cfg, opt.Store)
	if err != nil {
		return nil, err
	}
	defer nets.Close()
	if cfg, err = nets.pin(cfg); err != nil {
		return nil, err
	}
	out, err := openOutput(cfg, opt, log)
	if err != nil {
		return nil, err
	}
	defer out.close()
	set, err := loadImages(ctx, cfg, cfg.Data, log)
	if err != nil {
		return nil, err
	}
	sum := &TrainSummary{Images: len(set.Images), Skipped: set.Skipped}
	if err := sameInputs(opt.Group, set, nets.targetWeights); err != nil {
		return sum, err
	}
	model, err := graphs.NewModel(cfg.Graph(), nets.comp, nets.target)
	if err != nil {
		return sum, err
	}
	defer model.Close()
	step, err := out.start(ctx, model, set)
	if err == nil && opt.Group != nil {
		step, err = model.Join(opt.Group, step)
	}
	if err != nil {
		return sum, err
	}
	sum.StartStep, sum.Step = step, step
	if step >= cfg.Steps {
		log.Info("run already at its last step", "step", step, "steps", cfg.Steps)
		return sum, nil
	}
	r := &trainRun{cfg: cfg, opt: opt, log: log, model: model, task: t.begin(cfg, set, log), out: out, sum: sum}
	if err := r.loop(ctx); err != nil {
		return sum, err
	}
	logAllReduce(log, opt.Group, sum.Step-sum.StartStep)
	if err := out.save(model, sum.Step); err != nil {
		return sum, fmt.Errorf("final checkpoint: %w", err)
	}
	return sum, r.task.finish(ctx, r)
}

// checkRun refuses a configuration that cannot train, before anything
// is opened.
func checkRun(cfg Config, g *graphs.Group) (task, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := fits(fmt.Sprintf("a batch of %d crops of %d px", cfg.Batch, cfg.Size), activationFactor*pixels(cfg.Batch, cfg.Size)); err != nil {
		return nil, err
	}
	t, _ := taskNamed(cfg.Task)
	return t, checkGroup(cfg, t, g)
}

// startEngine sets the engine's threads and logs what it runs on.
func startEngine(threads int, log *slog.Logger) {
	graphs.SetThreads(threads)
	core, _ := graphs.BLAS()
	log.Info("engine", "threads", graphs.Threads(), "blas_kernel", core)
}

// loop trains from r.sum.Step to the last step. Every rank takes the same
// steps and makes the same collective calls in the same order.
func (r *trainRun) loop(ctx context.Context) error {
	cfg, g, step := r.cfg, r.opt.Group, r.sum.Step
	streamCtx, stopStream := context.WithCancel(context.Background())
	defer stopStream()
	batches := pipeline.Stream(streamCtx, r.task.batch, step, 2, 2)
	lastLog, lastLogStep := time.Now(), step
	for step < cfg.Steps {
		batch, stop := nextBatch(ctx, batches, g)
		if stop {
			return r.interrupted(step)
		}
		in, logged := r.task.input(step+1, batch)
		out, err := r.model.TrainStep(shard(ctx, in, g))
		if err != nil {
			return fmt.Errorf("step %d: %w; %s", step+1, err, r.out.lastGood())
		}
		step++
		r.sum.Step = step
		for _, term := range out.Terms {
			if math.IsNaN(term.Value) || math.IsInf(term.Value, 0) {
				return fmt.Errorf("training diverged at step %d (%s = %v); %s", step, term.Name, term.Value, r.out.lastGood())
			}
		}
		last := step == cfg.Steps
		measured, err := r.task.measure(r.model, step, last)
		if err != nil {
			return err
		}
		if step%cfg.LogEvery == 0 || last || len(measured) > 0 {
			now := time.Now()
			m := Metrics{Step: step, Terms: append(append(out.Terms, logged...), measured...),
				UpdatedG: out.UpdatedG, UpdatedD: out.UpdatedD,
				ImagesPerSec: float64((step-lastLogStep)*int64(cfg.Batch)) / now.Sub(lastLog).Seconds()}
			lastLog, lastLogStep = now, step
			if err := r.out.append(m, out.Terms, measured); err != nil {
				return err
			}
		}
		if out.Stop && !last {
			return r.interrupted(step)
		}
		if step%cfg.CheckpointEvery == 0 && !last {
			if err := r.out.save(r.model, step); err != nil {
				return fmt.Errorf("checkpoint at step %d: %w", step, err)
			}
		}
	}
	return nil
}

func (r *trainRun) interrupted(step int64) error {
	if err := r.out.interrupted(r.model, step); err != nil {
		return err
	}
	return ErrInterrupted
}

// loadImages decodes the images under dirs for cfg's crop size.
func loadImages(ctx context.Context, cfg Config, dirs []string, log *slog.Logger) (*pipeline.Set, error) {
	paths, err := pipeline.Find(dirs...)
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no JPEG or PNG images under %v", dirs)
	}
	log.Info("loading images", "files", len(paths))
	set, err := pipeline.Load(ctx, paths, pipeline.LoadOptions{
		Decode: pipeline.DecodeOptions{MinSide: cfg.Size, MaxSide: cfg.MaxSide},
		Warn: func(s pipeline.Skipped) {
			log.Warn("skipping image", "file", s.Path, "reason", s.Err.Error())
		},
	})
	if err != nil {
		return nil, err
	}
	log.Info("images loaded", "used", len(set.Images), "skipped", len(set.Skipped))
	// Decoding full-size photos left large garbage behind: hand it back to
	// the OS now rather than carry it for the whole run.
	debug.FreeOSMemory()
	return set, nil
}
