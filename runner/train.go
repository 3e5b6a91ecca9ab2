package runner

import (
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

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/pipeline"
)

// ErrInterrupted is returned when a run stops because its context was
// cancelled (SIGINT or SIGTERM); its checkpoint has been saved.
var ErrInterrupted = errors.New("training interrupted")

// TrainOptions are the settings of one invocation that are not part of the
// run's configuration.
type TrainOptions struct {
	Out    string // the run folder
	Resume bool   // continue from Out's checkpoint
	Log    *slog.Logger
	// Progress receives the progress bar when it is a terminal; otherwise a
	// progress line is logged now and then. Nil means os.Stderr.
	Progress io.Writer
}

// TrainSummary says what a run did.
type TrainSummary struct {
	StartStep, Step int64
	Images          int                // images used
	Skipped         []pipeline.Skipped // files that could not be used
}

// Train runs cfg to cfg.Steps in the run folder, writing config.json,
// metrics.jsonl and checkpoints. With opt.Resume it continues from the
// folder's checkpoint. When ctx is cancelled it saves a checkpoint and
// returns ErrInterrupted.
func Train(ctx context.Context, cfg Config, opt TrainOptions) (*TrainSummary, error) {
	log := opt.Log
	if log == nil {
		log = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir := opt.Out
	ckpt := filepath.Join(dir, CheckpointFile)
	_, statErr := os.Stat(ckpt)
	switch {
	case opt.Resume && statErr != nil:
		return nil, fmt.Errorf("resume %s: no checkpoint to resume from: %w", dir, statErr)
	case !opt.Resume && statErr == nil:
		return nil, fmt.Errorf("%s already holds a run: pass --resume to continue it, or choose another --out", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create run folder: %w", err)
	}
	removeStaleTemps(dir)
	if err := SaveConfig(dir, cfg); err != nil {
		return nil, err
	}
	graphs.SetThreads(cfg.Threads)

	set, err := loadTrainingSet(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	sum := &TrainSummary{Images: len(set.Images), Skipped: set.Skipped}

	model, err := graphs.NewModel(cfg.Graph())
	if err != nil {
		return sum, err
	}
	defer model.Close()
	var step int64
	if opt.Resume {
		if step, err = loadCheckpoint(model, ckpt); err != nil {
			return sum, err
		}
		if err := truncateMetrics(dir, step); err != nil {
			return sum, fmt.Errorf("resume metrics: %w", err)
		}
		log.Info("resuming", "run", dir, "step", step)
	} else if err := os.Remove(filepath.Join(dir, MetricsFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return sum, err
	}
	sum.StartStep, sum.Step = step, step

	save := func() error {
		b, err := model.Save(step)
		if err != nil {
			return err
		}
		return WriteFileAtomic(ckpt, b)
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

	streamCtx, stopStream := context.WithCancel(context.Background())
	defer stopStream()
	batches := pipeline.Stream(streamCtx, set, pipeline.StreamOptions{
		Crop:    pipeline.CropOptions{Size: cfg.Size, MinScale: cfg.MinScale, Flip: true},
		Batch:   cfg.Batch,
		Seed:    uint64(cfg.Seed),
		Workers: 2,
		Depth:   2,
	}, step)

	prog := newProgress(opt.Progress, log, step, cfg.Steps)
	lastLog, lastLogStep := time.Now(), step
	for step < cfg.Steps {
		var batch pipeline.Batch
		select {
		case <-ctx.Done():
			prog.finish()
			if err := save(); err != nil {
				return sum, fmt.Errorf("save checkpoint after interrupt: %w", err)
			}
			log.Info("interrupted: checkpoint saved", "step", step, "resume", "--resume")
			return sum, ErrInterrupted
		case batch = <-batches:
		}
		losses, err := model.TrainStep(batch.Data, batch.N)
		if err != nil {
			return sum, fmt.Errorf("step %d: %w", step+1, err)
		}
		step++
		sum.Step = step
		for name, v := range map[string]float64{"loss_feat": losses.Feat, "loss_adv": losses.Adv, "loss_img": losses.Img, "loss_discr": losses.Discr} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return sum, fmt.Errorf("training diverged at step %d (%s = %v); the checkpoint on disk is the last good state", step, name, v)
			}
		}
		m := Metrics{Step: step, LossFeat: losses.Feat, LossAdv: losses.Adv, LossImg: losses.Img, LossDiscr: losses.Discr,
			UpdatedG: losses.UpdatedG, UpdatedD: losses.UpdatedD}
		if step%cfg.LogEvery == 0 || step == cfg.Steps {
			now := time.Now()
			m.ImagesPerSec = float64((step-lastLogStep)*int64(cfg.Batch)) / now.Sub(lastLog).Seconds()
			lastLog, lastLogStep = now, step
			if err := metrics.Append(m); err != nil {
				return sum, err
			}
			prog.update(m)
		}
		if step%cfg.CheckpointEvery == 0 && step < cfg.Steps {
			if err := save(); err != nil {
				return sum, fmt.Errorf("checkpoint at step %d: %w", step, err)
			}
		}
	}
	prog.finish()
	if err := save(); err != nil {
		return sum, fmt.Errorf("final checkpoint: %w", err)
	}
	return sum, nil
}

func loadTrainingSet(ctx context.Context, cfg Config, log *slog.Logger) (*pipeline.Set, error) {
	paths, err := pipeline.Find(cfg.Data...)
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("no JPEG or PNG images under %v", cfg.Data)
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

func loadCheckpoint(model *graphs.Model, path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read checkpoint: %w", err)
	}
	step, err := model.Load(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return step, nil
}

// progress shows a bar on a terminal and logs a line every 5% otherwise.
type progress struct {
	bar        *progressbar.ProgressBar
	w          io.Writer
	log        *slog.Logger
	every      int64
	start, end int64
}

func newProgress(w io.Writer, log *slog.Logger, start, end int64) *progress {
	if w == nil {
		w = os.Stderr
	}
	p := &progress{w: w, log: log, start: start, end: end, every: max(1, (end-start)/20)}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions64(end,
			progressbar.OptionSetWriter(w),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionSetWidth(20),
		)
		p.bar.Set64(start)
	}
	return p
}

func (p *progress) update(m Metrics) {
	desc := fmt.Sprintf("feat %.4g adv %.4g img %.4g discr %.4g  %.1f img/s", m.LossFeat, m.LossAdv, m.LossImg, m.LossDiscr, m.ImagesPerSec)
	if p.bar != nil {
		p.bar.Describe(desc)
		p.bar.Set64(m.Step)
		return
	}
	if (m.Step-p.start)%p.every == 0 || m.Step == p.end {
		p.log.Info("train", "step", m.Step, "of", p.end, "loss_feat", m.LossFeat, "loss_adv", m.LossAdv,
			"loss_img", m.LossImg, "loss_discr", m.LossDiscr, "images_per_sec", math.Round(m.ImagesPerSec*10)/10)
	}
}

func (p *progress) finish() {
	if p.bar != nil {
		p.bar.Exit()
		fmt.Fprintln(p.w)
	}
}
