package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"sync"
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
	Images          int                // images listed
	Skipped         []pipeline.Skipped // items found bad, each once
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
	data  *pipeline.Loader
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
	sum := &TrainSummary{}
	var skippedMu sync.Mutex
	data, err := openData(cfg, cfg.Data, log, func(s pipeline.Skipped) {
		skippedMu.Lock()
		defer skippedMu.Unlock()
		sum.Skipped = append(sum.Skipped, s)
	})
	if err != nil {
		return nil, err
	}
	defer data.Close()
	sum.Images = data.Source().Len()
	if err := sameInputs(opt.Group, data.Source(), nets.targetWeights); err != nil {
		return sum, err
	}
	model, err := graphs.NewModel(cfg.Engine(), nets.comp, nets.target)
	if err != nil {
		return sum, err
	}
	defer model.Close()
	step, err := out.start(ctx, model, data)
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
	tr, err := t.begin(cfg, data, opt.Group, log)
	if err != nil {
		return sum, err
	}
	r := &trainRun{cfg: cfg, opt: opt, log: log, model: model, task: tr, data: data, out: out, sum: sum}
	if err := r.loop(ctx); err != nil {
		return sum, err
	}
	logAllReduce(log, opt.Group, sum.Step-sum.StartStep)
	c := data.Counts()
	log.Info("data", "crops", c.Drawn, "bad", c.Bad, "decodes", c.Decodes, "cached_mb", c.Cached>>20)
	if err := out.save(model, sum.Step); err != nil {
		return sum, fmt.Errorf("final checkpoint: %w", err)
	}
	return sum, r.task.finish(ctx, model, out, sum)
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
			return r.stop(step, ErrInterrupted)
		}
		in, logged := r.task.input(step+1, batch)
		in.LRScale = cfg.LRScaleAt(step + 1)
		if cfg.LRDecay > 0 {
			logged = append(logged, graphs.Term{Name: "lr_scale", Value: in.LRScale})
		}
		bad := badData(r.data)
		if bad != nil && g == nil {
			return r.stop(step, bad)
		}
		in = rankRows(ctx, in, g)
		in.Stop = in.Stop || bad != nil // the group stops together
		out, err := r.model.TrainStep(in)
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
		r.out.heldout(r.model, step, last)
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
			if bad != nil {
				return r.stop(step, bad)
			}
			return r.stop(step, ErrInterrupted)
		}
		if step%cfg.CheckpointEvery == 0 && !last {
			if err := r.out.save(r.model, step); err != nil {
				return fmt.Errorf("checkpoint at step %d: %w", step, err)
			}
		}
	}
	return nil
}

// stop ends a run before its last step for reason (ErrInterrupted, or
// bad data), saving the checkpoint first.
func (r *trainRun) stop(step int64, reason error) error {
	if err := r.out.interrupted(r.model, step); err != nil {
		return err
	}
	return reason
}

// openData lists the images of specs for cfg's crops: nothing is decoded
// before a crop needs it. Each bad item is logged once, and told to
// skipped when it is not nil.
func openData(cfg Config, specs []string, log *slog.Logger, skipped func(pipeline.Skipped)) (*pipeline.Loader, error) {
	start := time.Now()
	warn := func(s pipeline.Skipped) {
		log.Warn("bad image: a substitute takes its place", "item", s.Path, "reason", s.Err.Error())
		if skipped != nil {
			skipped(s)
		}
	}
	src, err := pipeline.List(specs, func(s pipeline.Skipped) {
		log.Warn("shard read in part", "shard", s.Path, "reason", s.Err.Error())
	})
	if err != nil {
		return nil, err
	}
	log.Info("images listed", "images", src.Len(), "took", time.Since(start).Round(time.Millisecond).String())
	return pipeline.NewLoader(src, pipeline.LoaderOptions{
		Size: cfg.Size, MinScale: cfg.MinScale, MaxSide: cfg.MaxSide,
		CacheBytes: int64(cfg.CacheMB) << 20, Warn: warn,
	}), nil
}

// Bad data stops a run once more than maxBadPct of the crops drawn came
// from bad items, judged after minDrawn crops.
const (
	maxBadPct = 1
	minDrawn  = 500
)

// badData is the error that stops a run whose data is too often bad.
func badData(l *pipeline.Loader) error {
	if l == nil {
		return nil
	}
	c := l.Counts()
	if c.Drawn < minDrawn || c.Bad*100 <= c.Drawn*maxBadPct {
		return nil
	}
	return fmt.Errorf("%d of the %d images drawn so far were bad (more than %d%%): check the data (runner data check), the log names each", c.Bad, c.Drawn, maxBadPct)
}
