package runner

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/deepsim/deepsim/internal/atomicfile"
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
}

// TrainSummary says what a run did.
type TrainSummary struct {
	StartStep, Step int64
	Images          int                // images used
	Skipped         []pipeline.Skipped // files that could not be used
	// Comparator task: held-out surrogate-class accuracy at the last step.
	HeldoutAcc float64
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
	atomicfile.RemoveStale(dir)
	if err := SaveConfig(dir, cfg); err != nil {
		return nil, err
	}
	graphs.SetThreads(cfg.Threads)

	// The comparator first: a missing one should fail before minutes of
	// image decoding.
	var comp *graphs.Comparator
	if cfg.Generative() && cfg.LambdaFeat > 0 {
		var err error
		if comp, err = pretrained.OpenString(cfg.ComparatorSpec(), opt.Store, cfg.ComparatorSize); err != nil {
			return nil, err
		}
		defer comp.Close()
	}
	set, err := loadImages(ctx, cfg, cfg.Data, log)
	if err != nil {
		return nil, err
	}
	sum := &TrainSummary{Images: len(set.Images), Skipped: set.Skipped}
	var rep *reporter
	if cfg.Generative() {
		var held *pipeline.Set
		if len(cfg.Heldout) > 0 {
			if held, err = loadImages(ctx, cfg, cfg.Heldout, log); err != nil {
				return sum, fmt.Errorf("held-out images: %w", err)
			}
		}
		rep = newReporter(dir, cfg, set, held)
	}

	model, err := graphs.NewModel(cfg.Graph(), comp)
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
		if err := atomicfile.WriteFile(ckpt, b); err != nil {
			return err
		}
		if rep != nil {
			// The report is for people: a failure to write it is logged, and
			// training goes on.
			if err := rep.snapshot(model, step); err != nil {
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

	streamCtx, stopStream := context.WithCancel(context.Background())
	defer stopStream()
	seed := uint64(cfg.Seed)
	build := func(i int64) pipeline.Batch {
		return pipeline.MakeBatch(set, pipeline.StreamOptions{
			Crop:  pipeline.CropOptions{Size: cfg.Size, MinScale: cfg.MinScale, Flip: true},
			Batch: cfg.Batch, Seed: seed,
		}, i)
	}
	var heldout pipeline.Batch
	if cfg.Task == TaskComparator {
		ex := pipeline.NewExemplar(set, cfg.Classes, cfg.Size, seed)
		heldout = ex.Heldout(seed, cfg.HeldoutPerClass)
		build = func(i int64) pipeline.Batch { return ex.Batch(seed, i, cfg.Batch) }
		log.Info("surrogate classes", "classes", cfg.Classes, "heldout_samples", heldout.N)
	}
	batches := pipeline.Stream(streamCtx, build, step, 2, 2)

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
		klWeight := cfg.KLWeightAt(step + 1)
		losses, err := model.TrainStep(graphs.Step{Batch: batch.Data, N: batch.N, Labels: batch.Labels, KLWeight: klWeight})
		if err != nil {
			return sum, fmt.Errorf("step %d: %w", step+1, err)
		}
		step++
		sum.Step = step
		for name, v := range map[string]float64{"loss_feat": losses.Feat, "loss_adv": losses.Adv, "loss_img": losses.Img, "loss_discr": losses.Discr, "kl": losses.KL} {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return sum, fmt.Errorf("training diverged at step %d (%s = %v); the checkpoint on disk is the last good state", step, name, v)
			}
		}
		m := Metrics{Step: step, LossFeat: losses.Feat, LossAdv: losses.Adv, LossImg: losses.Img, LossDiscr: losses.Discr,
			UpdatedG: losses.UpdatedG, UpdatedD: losses.UpdatedD}
		if cfg.Task == TaskVAE {
			m.KL, m.KLWeight = &losses.KL, &klWeight
		}
		if cfg.Task == TaskComparator {
			m.LossImg, m.LossClass, m.TrainAcc = 0, losses.Img, losses.Accuracy
		}
		last := step == cfg.Steps
		if cfg.Task == TaskComparator && (step%cfg.EvalEvery == 0 || last) {
			acc, err := heldoutAccuracy(model, heldout)
			if err != nil {
				return sum, err
			}
			m.HeldoutAcc, sum.HeldoutAcc = &acc, acc
		}
		if step%cfg.LogEvery == 0 || last || m.HeldoutAcc != nil {
			now := time.Now()
			m.ImagesPerSec = float64((step-lastLogStep)*int64(cfg.Batch)) / now.Sub(lastLog).Seconds()
			lastLog, lastLogStep = now, step
			if err := metrics.Append(m); err != nil {
				return sum, err
			}
			prog.update(m)
		}
		if step%cfg.CheckpointEvery == 0 && !last {
			if err := save(); err != nil {
				return sum, fmt.Errorf("checkpoint at step %d: %w", step, err)
			}
		}
	}
	prog.finish()
	if err := save(); err != nil {
		return sum, fmt.Errorf("final checkpoint: %w", err)
	}
	if rep != nil && len(cfg.Heldout) > 0 {
		if err := finalEval(ctx, cfg, opt, rep); err != nil {
			log.Warn("final evaluation failed", "reason", err.Error())
		}
	}
	if cfg.Task == TaskComparator {
		b, err := model.ExportComparator()
		if err != nil {
			return sum, err
		}
		if err := atomicfile.WriteFile(filepath.Join(dir, ComparatorFile), b); err != nil {
			return sum, err
		}
		log.Info("comparator written", "file", filepath.Join(dir, ComparatorFile), "classes", cfg.Classes,
			"heldout_surrogate_accuracy", sum.HeldoutAcc, "heldout_samples", heldout.N)
	}
	return sum, nil
}

// finalEval measures the finished run on its held-out images into
// RUN/eval.json, which the report shows.
func finalEval(ctx context.Context, cfg Config, opt TrainOptions, rep *reporter) error {
	res, err := Evaluate(ctx, EvalOptions{Run: opt.Out, Data: cfg.Heldout, N: 64, Seed: 1, Store: opt.Store, Log: opt.Log})
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(opt.Out, EvalFile), append(b, '\n')); err != nil {
		return err
	}
	return rep.write()
}

// heldoutAccuracy classifies the held-out transformations in chunks.
func heldoutAccuracy(model *graphs.Model, b pipeline.Batch) (float64, error) {
	const chunk = 64
	plane := 3 * b.Size * b.Size
	var right float64
	for i := 0; i < b.N; i += chunk {
		n := min(chunk, b.N-i)
		l, err := model.Evaluate(b.Data[i*plane:(i+n)*plane], b.Labels[i:i+n], n)
		if err != nil {
			return 0, err
		}
		right += l.Accuracy * float64(n)
	}
	return right / float64(b.N), nil
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
	if m.LossClass > 0 {
		desc = fmt.Sprintf("loss %.4g acc %.3f  %.1f img/s", m.LossClass, m.TrainAcc, m.ImagesPerSec)
	}
	if p.bar != nil {
		p.bar.Describe(desc)
		p.bar.Set64(m.Step)
		return
	}
	if m.HeldoutAcc != nil {
		p.log.Info("held-out surrogate accuracy", "step", m.Step, "accuracy", *m.HeldoutAcc)
	}
	if m.LossClass > 0 && ((m.Step-p.start)%p.every == 0 || m.Step == p.end) {
		p.log.Info("train", "step", m.Step, "of", p.end, "loss_class", m.LossClass, "train_acc", m.TrainAcc,
			"images_per_sec", math.Round(m.ImagesPerSec*10)/10)
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
