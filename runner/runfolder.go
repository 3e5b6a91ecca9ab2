package runner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/internal/atomicfile"
	"github.com/deepsim/deepsim/internal/torchfile"
	"github.com/deepsim/deepsim/pipeline"
	"github.com/deepsim/deepsim/pretrained"
)

// output is where a run's results go. A process alone, or rank 0 of a
// group, writes the run folder (runFolder); the other ranks of a group
// write nothing (discard), so that every rank runs the same loop.
type output interface {
	// start readies model (from the checkpoint, on resume) and returns the
	// step it is at; train and held are the run's images.
	start(ctx context.Context, model *graphs.Model, train *pipeline.Loader) (int64, error)
	// append logs a metrics line: what the step measured (step), what
	// the task logged and measured beside it, all in m.
	append(m Metrics, step, measured []graphs.Term) error
	// save writes a checkpoint of model at step.
	save(model *graphs.Model, step int64) error
	// interrupted ends a run that was asked to stop.
	interrupted(model *graphs.Model, step int64) error
	// lastGood says which checkpoint a failed run leaves.
	lastGood() string
	// report is the run's report, nil when it has none.
	report() *reporter
	// write writes a file of the run's, by name, atomically.
	write(name string, b []byte) error
	// evaluate measures the saved run on its held-out images into
	// eval.json, which the report shows.
	evaluate(ctx context.Context) error
	// heldout adds the point of step to the held-back curve, where the
	// run has one and step is on its interval (or last).
	heldout(model *graphs.Model, step int64, last bool)
	// close ends the output; a start that saved nothing is undone.
	close()
}

// openOutput is rank 0's run folder, or nothing for the other ranks.
func openOutput(cfg Config, opt TrainOptions, log *slog.Logger) (output, error) {
	if opt.Group != nil && opt.Group.Rank() > 0 {
		return discard{}, nil
	}
	return createRunFolder(cfg, opt, log)
}

// discard is the output of ranks other than 0.
type discard struct{}

func (discard) start(context.Context, *graphs.Model, *pipeline.Loader) (int64, error) { return 0, nil }
func (discard) append(Metrics, []graphs.Term, []graphs.Term) error                    { return nil }
func (discard) save(*graphs.Model, int64) error                                       { return nil }
func (discard) interrupted(*graphs.Model, int64) error                                { return nil }
func (discard) lastGood() string                                                      { return "rank 0 keeps the run's checkpoints" }
func (discard) report() *reporter                                                     { return nil }
func (discard) write(string, []byte) error                                            { return nil }
func (discard) evaluate(context.Context) error                                        { return nil }
func (discard) heldout(*graphs.Model, int64, bool)                                    {}
func (discard) close()                                                                {}

// runFolder is a run folder while a run writes it: config.json,
// metrics.jsonl, checkpoints and the report. It has one writer at a time
// (a lock), and a start that fails leaves no run behind.
type runFolder struct {
	cfg     Config
	store   pretrained.Store
	dir     string
	ckpt    string
	resume  bool
	created bool // the folder did not exist before
	log     *slog.Logger
	out     io.Writer // the progress bar's
	unlock  func()
	saved   int64 // the step of the checkpoint on disk, -1 for none
	metrics *metricsLog
	prog    *progress
	rep     *reporter
	curve   *heldoutCurve // nil: no held-back curve
}

// createRunFolder makes, locks and checks the folder, and writes cfg into
// it.
func createRunFolder(cfg Config, opt TrainOptions, log *slog.Logger) (*runFolder, error) {
	dir := opt.Out
	_, dirErr := os.Stat(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create run folder: %w", err)
	}
	unlock, err := lockRun(dir)
	if err != nil {
		return nil, err
	}
	f := &runFolder{cfg: cfg, store: opt.Store, dir: dir, ckpt: filepath.Join(dir, CheckpointFile), resume: opt.Resume,
		created: errors.Is(dirErr, fs.ErrNotExist), log: log, out: opt.Progress, unlock: unlock, saved: -1}
	_, cfgErr := os.Stat(filepath.Join(dir, ConfigFile))
	_, ckptErr := os.Stat(f.ckpt)
	switch {
	case opt.Resume && ckptErr != nil:
		err = fmt.Errorf("resume %s: no checkpoint to resume from: %w", dir, ckptErr)
	case !opt.Resume && cfgErr == nil && ckptErr != nil:
		err = fmt.Errorf("%s holds a run that saved no checkpoint: remove the folder, or choose another run folder", dir)
	case !opt.Resume && cfgErr == nil:
		err = fmt.Errorf("%s already holds a run: resume it to continue, or choose another run folder", dir)
	}
	if err != nil {
		unlock()
		return nil, err
	}
	atomicfile.RemoveStale(dir)
	if err := SaveConfig(dir, cfg); err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

// start builds the report, then resumes from the checkpoint or starts
// metrics afresh.
func (f *runFolder) start(ctx context.Context, model *graphs.Model, train *pipeline.Loader) (int64, error) {
	var held *pipeline.Loader
	if f.cfg.Generative() {
		if len(f.cfg.Heldout) > 0 {
			var err error
			if held, err = openData(f.cfg, f.cfg.Heldout, f.log, nil); err != nil {
				return 0, fmt.Errorf("held-out images: %w", err)
			}
			defer held.Close()
		}
		f.rep = newReporter(f.dir, f.cfg, train, held)
	}
	var step int64
	if f.resume {
		var err error
		if step, err = loadCheckpoint(model, f.ckpt); err != nil {
			return 0, err
		}
		if err := truncateMetrics(f.dir, step); err != nil {
			return 0, fmt.Errorf("resume metrics: %w", err)
		}
		f.log.Info("resuming", "run", f.dir, "step", step)
		f.saved = step
	} else if err := os.Remove(filepath.Join(f.dir, MetricsFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	} else if f.cfg.Init != "" {
		if err := loadInit(model, f.cfg); err != nil {
			return 0, err
		}
		f.log.Info("starting from the weights of another run", "init", f.cfg.Init)
	}
	var err error
	if f.metrics, err = openMetrics(f.dir); err != nil {
		return 0, err
	}
	if held != nil && f.cfg.EvalEvery > 0 {
		if f.curve, err = openHeldoutCurve(f.dir, f.cfg, held, f.store, step, f.log); err != nil {
			return 0, err
		}
	}
	f.prog = newProgress(f.out, f.log, step, f.cfg.Steps)
	return step, nil
}

func (f *runFolder) append(m Metrics, step, measured []graphs.Term) error {
	if err := f.metrics.Append(m); err != nil {
		return err
	}
	if f.rep != nil && f.rep.terms == nil {
		for _, t := range step {
			f.rep.terms = append(f.rep.terms, t.Name) // one plot each
		}
	}
	f.prog.update(m, measured)
	return nil
}

// save writes the checkpoint atomically, then the report's snapshot.
func (f *runFolder) save(model *graphs.Model, step int64) error {
	b, err := model.Save(step)
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(f.ckpt, b); err != nil {
		return err
	}
	f.saved = step
	if step == f.cfg.Steps {
		f.prog.finish() // the last step's checkpoint: the bar is done
	}
	if f.rep != nil {
		// The report is for people: a failure to write it is logged, and
		// training goes on.
		if err := f.rep.snapshot(model, step); err != nil {
			f.log.Warn("report not updated", "reason", err.Error())
		}
	}
	return nil
}

func (f *runFolder) interrupted(model *graphs.Model, step int64) error {
	f.prog.finish()
	if err := f.save(model, step); err != nil {
		return fmt.Errorf("save checkpoint after interrupt: %w", err)
	}
	f.log.Info("interrupted: checkpoint saved", "step", step, "resume", true)
	return nil
}

func (f *runFolder) lastGood() string {
	if f.saved < 0 {
		return "no checkpoint was saved"
	}
	return fmt.Sprintf("the last good checkpoint, %s, is from step %d", f.ckpt, f.saved)
}

func (f *runFolder) report() *reporter { return f.rep }

// heldout evaluates; a failure is logged and training goes on.
func (f *runFolder) heldout(model *graphs.Model, step int64, last bool) {
	if f.curve == nil || step%f.cfg.EvalEvery != 0 && !last {
		return
	}
	if err := f.curve.at(model, step); err != nil {
		f.log.Warn("held-back evaluation failed", "step", step, "reason", err.Error())
	}
}

func (f *runFolder) write(name string, b []byte) error {
	return atomicfile.WriteFile(filepath.Join(f.dir, name), b)
}

func (f *runFolder) evaluate(ctx context.Context) error {
	if f.rep == nil || len(f.cfg.Heldout) == 0 {
		return nil
	}
	opt := EvalOptions{Run: f.dir, Data: f.cfg.Heldout, N: 64, Seed: 1, Store: f.store, Log: f.log}
	if f.curve != nil {
		opt.Judge = f.curve.name // chosen once for the run
	}
	res, err := Evaluate(ctx, opt)
	if err != nil {
		return err
	}
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	if err := f.write(EvalFile, append(b, '\n')); err != nil {
		return err
	}
	return f.rep.write()
}

// close releases the folder. A new run that saved no checkpoint is
// removed, and the folder too when the run created it.
func (f *runFolder) close() {
	if f.prog != nil {
		f.prog.finish()
	}
	if f.metrics != nil {
		f.metrics.Close()
	}
	if f.curve != nil {
		f.curve.close()
	}
	if !f.resume && f.saved < 0 {
		removeRun(f.dir)
		if f.created {
			os.Remove(f.dir) // only when empty
		}
	}
	f.unlock()
}

// removeRun removes the files a run writes from dir.
func removeRun(dir string) {
	for _, name := range []string{ConfigFile, MetricsFile, HeldoutFile, ReportFile, EvalFile, LockFile} {
		os.Remove(filepath.Join(dir, name))
	}
	os.RemoveAll(filepath.Join(dir, reportDir))
}

// HasCheckpoint tells whether the run folder dir holds a checkpoint to
// resume from.
func HasCheckpoint(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, CheckpointFile))
	return err == nil
}

// DiscardUnsaved removes a run that died before its first checkpoint
// (killed, so that it could not remove itself), so that it can start
// afresh; a folder with a checkpoint is left alone.
func DiscardUnsaved(dir string) error {
	if HasCheckpoint(dir) {
		return fmt.Errorf("%s holds a checkpoint: resume it", dir)
	}
	unlock, err := lockRun(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unlock()
	removeRun(dir)
	return nil
}

// loadCheckpoint reads a checkpoint into model. Checkpoints are shared
// between people: the file is checked before libtorch sees it (no larger
// than this model's weights and Adam state can be, every tensor within
// its storage, the pickle within bounds).
func loadCheckpoint(model *graphs.Model, path string) (int64, error) {
	dir, name := filepath.Split(path)
	b, err := readChecked(os.DirFS(filepath.Clean(dir)), name, path, 4*8*model.NumParams()+64<<20, nil)
	if err != nil {
		return 0, err
	}
	step, err := model.Load(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return step, nil
}

// readChecked reads the state dict name of fsys (label in errors), at
// most limit bytes, lets verify see the bytes first where it is not nil,
// and checks the records before libtorch sees them.
func readChecked(fsys fs.FS, name, label string, limit int64, verify func([]byte) error) ([]byte, error) {
	fh, err := fsys.Open(name)
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	if !st.Mode().IsRegular() || st.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than a checkpoint of this model can hold (%d)", label, st.Size(), limit)
	}
	b, err := io.ReadAll(io.LimitReader(fh, limit))
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	if verify != nil {
		if err := verify(b); err != nil {
			return nil, err
		}
	}
	if _, err := torchfile.Check(bytes.NewReader(b), int64(len(b))); err != nil {
		return nil, fmt.Errorf("%s: %w", label, err)
	}
	return b, nil
}
