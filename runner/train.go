package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/internal/atomicfile"
	"github.com/deepsim/deepsim/internal/torchfile"
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

// trainRun is one run in progress: what a task's finish may need.
type trainRun struct {
	cfg   Config
	opt   TrainOptions
	log   *slog.Logger
	model *graphs.Model
	rep   *reporter // nil for runs without a report
	sum   *TrainSummary
}

// Train runs cfg to cfg.Steps in the run folder, writing config.json,
// metrics.jsonl and checkpoints. With opt.Resume it continues from the
// folder's checkpoint. When ctx is cancelled it saves a checkpoint and
// returns ErrInterrupted. The task (see task.go) supplies the data and
// everything else that is not the loop.
func Train(ctx context.Context, cfg Config, opt TrainOptions) (*TrainSummary, error) {
	log := opt.Log
	if log == nil {
		log = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := fits(fmt.Sprintf("a batch of %d crops of %d px", cfg.Batch, cfg.Size), activationFactor*pixels(cfg.Batch, cfg.Size)); err != nil {
		return nil, err
	}
	t, _ := taskNamed(cfg.Task)
	if err := checkGroup(cfg, t, opt.Group); err != nil {
		return nil, err
	}
	if opt.Group != nil && opt.Group.Rank() > 0 {
		return trainFollower(ctx, cfg, t, opt, log)
	}
	dir := opt.Out
	ckpt := filepath.Join(dir, CheckpointFile)

	// The fixed networks first: a missing one fails before anything is
	// written or minutes of images are decoded.
	graphs.SetThreads(cfg.Threads)
	core, _ := graphs.BLAS()
	log.Info("engine", "threads", graphs.Threads(), "blas_kernel", core)
	if advice := blasAdvice(core, cpuFlags()); advice != "" {
		log.Warn(advice)
	}
	nets, err := t.networks(cfg, opt.Store)
	if err != nil {
		return nil, err
	}
	defer nets.Close()
	if nets.targetWeights != "" {
		if cfg.TargetWeights != "" && cfg.TargetWeights != nets.targetWeights {
			return nil, fmt.Errorf("the target %s has other weights (%s) than the run trained with (%s)",
				cfg.TargetSpec(), nets.targetWeights, cfg.TargetWeights)
		}
		cfg.TargetWeights = nets.targetWeights
	}

	// One writer per run folder; a start that fails leaves no run behind.
	_, dirErr := os.Stat(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create run folder: %w", err)
	}
	unlock, err := lockRun(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	_, cfgErr := os.Stat(filepath.Join(dir, ConfigFile))
	_, ckptErr := os.Stat(ckpt)
	switch {
	case opt.Resume && ckptErr != nil:
		return nil, fmt.Errorf("resume %s: no checkpoint to resume from: %w", dir, ckptErr)
	case !opt.Resume && cfgErr == nil && ckptErr != nil:
		return nil, fmt.Errorf("%s holds a run that saved no checkpoint: remove the folder, or choose another --out", dir)
	case !opt.Resume && cfgErr == nil:
		return nil, fmt.Errorf("%s already holds a run: pass --resume to continue it, or choose another --out", dir)
	}
	started := false   // a checkpoint was written: the run exists
	saved := int64(-1) // the step of the checkpoint on disk, -1 for none
	if !opt.Resume {
		defer func() {
			if !started {
				removeRun(dir, errors.Is(dirErr, fs.ErrNotExist))
			}
		}()
	}
	atomicfile.RemoveStale(dir)
	if err := SaveConfig(dir, cfg); err != nil {
		return nil, err
	}
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
	r := &trainRun{cfg: cfg, opt: opt, log: log, model: model, sum: sum}
	if t.generative() {
		var held *pipeline.Set
		if len(cfg.Heldout) > 0 {
			if held, err = loadImages(ctx, cfg, cfg.Heldout, log); err != nil {
				return sum, fmt.Errorf("held-out images: %w", err)
			}
		}
		r.rep = newReporter(dir, cfg, model.Terms(), set, held)
	}

	var step int64
	if opt.Resume {
		if step, err = loadCheckpoint(model, ckpt); err != nil {
			return sum, err
		}
		if err := truncateMetrics(dir, step); err != nil {
			return sum, fmt.Errorf("resume metrics: %w", err)
		}
		log.Info("resuming", "run", dir, "step", step)
		saved = step
	} else if err := os.Remove(filepath.Join(dir, MetricsFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return sum, err
	}
	if opt.Group != nil {
		if _, err := model.Join(opt.Group, step); err != nil {
			return sum, err
		}
	}
	sum.StartStep, sum.Step = step, step

	save := func() error {
		b, err := model.Save(step)
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(ckpt, b); err != nil {
			return err
		}
		started, saved = true, step
		if r.rep != nil {
			// The report is for people: a failure to write it is logged, and
			// training goes on.
			if err := r.rep.snapshot(model, step); err != nil {
				log.Warn("report not updated", "reason", err.Error())
			}
		}
		return nil
	}
	if step >= cfg.Steps {
		log.Info("run already at its last step", "step", step, "steps", cfg.Steps)
		return sum, nil
	}

	metrics, err := openMetrics(dir)
	if err != nil {
		return sum, err
	}
	defer metrics.Close()

	run := t.begin(cfg, set, log)
	streamCtx, stopStream := context.WithCancel(context.Background())
	defer stopStream()
	batches := pipeline.Stream(streamCtx, run.batch, step, 2, 2)

	prog := newProgress(opt.Progress, log, step, cfg.Steps)
	interrupted := func() error {
		prog.finish()
		if err := save(); err != nil {
			return fmt.Errorf("save checkpoint after interrupt: %w", err)
		}
		log.Info("interrupted: checkpoint saved", "step", step, "resume", "--resume")
		return ErrInterrupted
	}
	lastLog, lastLogStep := time.Now(), step
	for step < cfg.Steps {
		batch, stop := nextBatch(ctx, batches, opt.Group)
		if stop {
			return sum, interrupted()
		}
		in, logged := run.input(step+1, batch)
		out, err := model.TrainStep(shard(ctx, in, opt.Group))
		if err != nil {
			return sum, fmt.Errorf("step %d: %w; %s", step+1, err, lastGood(ckpt, saved))
		}
		step++
		sum.Step = step
		for _, term := range out.Terms {
			if math.IsNaN(term.Value) || math.IsInf(term.Value, 0) {
				return sum, fmt.Errorf("training diverged at step %d (%s = %v); %s", step, term.Name, term.Value, lastGood(ckpt, saved))
			}
		}
		last := step == cfg.Steps
		measured, err := run.measure(model, step, last)
		if err != nil {
			return sum, err
		}
		m := Metrics{Step: step, Terms: append(append(out.Terms, logged...), measured...),
			UpdatedG: out.UpdatedG, UpdatedD: out.UpdatedD}
		if step%cfg.LogEvery == 0 || last || len(measured) > 0 {
			now := time.Now()
			m.ImagesPerSec = float64((step-lastLogStep)*int64(cfg.Batch)) / now.Sub(lastLog).Seconds()
			lastLog, lastLogStep = now, step
			if err := metrics.Append(m); err != nil {
				return sum, err
			}
			prog.update(m, measured)
		}
		if out.Stop && !last {
			return sum, interrupted()
		}
		if step%cfg.CheckpointEvery == 0 && !last {
			if err := save(); err != nil {
				return sum, fmt.Errorf("checkpoint at step %d: %w", step, err)
			}
		}
	}
	prog.finish()
	logAllReduce(log, opt.Group, step-sum.StartStep)
	if err := save(); err != nil {
		return sum, fmt.Errorf("final checkpoint: %w", err)
	}
	return sum, run.finish(ctx, r)
}

// lastGood says which checkpoint a failed run leaves: the step of the one
// on disk, or that there is none.
func lastGood(ckpt string, step int64) string {
	if step < 0 {
		return "no checkpoint was saved"
	}
	return fmt.Sprintf("the last good checkpoint, %s, is from step %d", ckpt, step)
}

// removeRun removes what a start that failed wrote into dir, and dir itself
// when the start created it, so that no half-made run stays behind.
func removeRun(dir string, created bool) {
	for _, f := range []string{ConfigFile, MetricsFile, ReportFile, EvalFile, LockFile} {
		os.Remove(filepath.Join(dir, f))
	}
	os.RemoveAll(filepath.Join(dir, reportDir))
	if created {
		os.Remove(dir) // only when empty
	}
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

// loadCheckpoint reads a checkpoint into model. Checkpoints are shared
// between people: the file is checked before libtorch sees it (no larger
// than this model's weights and Adam state can be, every tensor within
// its storage, the pickle within bounds).
func loadCheckpoint(model *graphs.Model, path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("read checkpoint: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("read checkpoint: %w", err)
	}
	// Weights and two Adam moments, in float64 at most, and room for the
	// rest.
	limit := 4*8*model.NumParams() + 64<<20
	if !st.Mode().IsRegular() || st.Size() > limit {
		return 0, fmt.Errorf("%s: %d bytes, more than a checkpoint of this model can hold (%d)", path, st.Size(), limit)
	}
	b, err := io.ReadAll(io.LimitReader(f, limit))
	if err != nil {
		return 0, fmt.Errorf("read checkpoint: %w", err)
	}
	if _, err := torchfile.Check(bytes.NewReader(b), int64(len(b))); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	step, err := model.Load(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return step, nil
}
