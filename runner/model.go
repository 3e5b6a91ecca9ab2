package runner

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/pretrained"
)

// WeightsFile holds a run's weights alone, for inference (Ship): a run
// folder with it and no checkpoint reconstructs, evaluates and samples.
const WeightsFile = "weights.pt"

// runFiles is the folder of a run to read: a shipped one
// (pretrained:NAME), or a folder on disk.
func runFiles(run string) (fs.FS, error) {
	if sub, shipped, err := pretrained.ShippedRun(run); shipped {
		return sub, err
	}
	return os.DirFS(run), nil
}

// OpenModel rebuilds a run's networks from its config.json and loads its
// checkpoint, or its weights alone (WeightsFile), for inference: without
// the comparator, which only training needs, but with an inversion's
// target, whose weights must be those the run trained with. run is a
// folder or a shipped run, pretrained:NAME.
func OpenModel(run string, store pretrained.Store) (*graphs.Model, Config, error) {
	model, cfg, _, err := openModel(run, store)
	return model, cfg, err
}

// openModel is OpenModel, and the step of the checkpoint it loaded (0
// for weights alone).
func openModel(run string, store pretrained.Store) (*graphs.Model, Config, int64, error) {
	cfg, err := LoadConfig(run)
	if err != nil {
		return nil, cfg, 0, err
	}
	graphs.SetThreads(cfg.Threads)
	t, _ := taskNamed(cfg.Task) // LoadConfig knows the task
	net, err := t.target(cfg, store)
	if err != nil {
		return nil, cfg, 0, err
	}
	var target *graphs.Comparator
	if net != nil {
		if net.Fingerprint != cfg.TargetWeights {
			return nil, cfg, 0, fmt.Errorf("%s inverts %s with weights %s, but the store has %s: import the same weights again",
				run, cfg.TargetSpec(), cfg.TargetWeights, net.Fingerprint)
		}
		if target, err = net.Open(cfg.TargetSide()); err != nil {
			return nil, cfg, 0, err
		}
		defer target.Close()
	}
	files, err := runFiles(run)
	if err != nil {
		return nil, cfg, 0, err
	}
	_, noCheckpoint := fs.Stat(files, CheckpointFile)
	weightsOnly := noCheckpoint != nil && fileExists(files, WeightsFile)
	if weightsOnly {
		cfg.EMA = 0 // the weights are the averaged ones already
	}
	model, err := graphs.NewModel(cfg.Engine(), nil, target)
	if err != nil {
		return nil, cfg, 0, err
	}
	var step int64
	if weightsOnly {
		err = loadWeights(model, files, filepath.Join(run, WeightsFile))
	} else {
		step, err = loadCheckpoint(model, filepath.Join(run, CheckpointFile))
	}
	if err != nil {
		model.Close()
		return nil, cfg, 0, err
	}
	return model, cfg, step, nil
}

func fileExists(fsys fs.FS, name string) bool {
	_, err := fs.Stat(fsys, name)
	return err == nil
}

// loadWeights reads WeightsFile of a run into model, checked as a
// checkpoint is.
func loadWeights(model *graphs.Model, files fs.FS, label string) error {
	b, err := readChecked(files, WeightsFile, label, 8*model.NumParams()+1<<20,
		func(b []byte) error { return checkShipped(files, b, label) })
	if err != nil {
		return err
	}
	if err := model.LoadWeights(b); err != nil {
		return fmt.Errorf("%s: %w", label, err)
	}
	return nil
}

// loadInit loads the E and G weights of cfg.Init into model, a new run's:
// the weights alone where the run keeps them, else its checkpoint's.
func loadInit(model *graphs.Model, cfg Config) error {
	from, err := LoadConfig(cfg.Init)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if a, b := from.Engine(), cfg.Engine(); a.Task != b.Task || a.Size != b.Size || a.CodeChannels != b.CodeChannels || a.Upsample != b.Upsample {
		return fmt.Errorf("init %s: its networks (%s, %d px, %d code channels, %s) are not this run's (%s, %d px, %d, %s)",
			cfg.Init, from.Task, from.Size, from.CodeChannels, from.Upsample, cfg.Task, cfg.Size, cfg.CodeChannels, cfg.Upsample)
	}
	files, err := runFiles(cfg.Init)
	if err != nil {
		return err
	}
	name, verify := CheckpointFile, func([]byte) error { return nil }
	if !fileExists(files, CheckpointFile) {
		label := filepath.Join(cfg.Init, WeightsFile)
		name, verify = WeightsFile, func(b []byte) error { return checkShipped(files, b, label) }
	}
	b, err := readChecked(files, name, filepath.Join(cfg.Init, name), 4*8*model.NumParams()+64<<20, verify)
	if err != nil {
		return fmt.Errorf("init: %w", err)
	}
	if err := model.LoadWeights(b); err != nil {
		return fmt.Errorf("init %s: %w", cfg.Init, err)
	}
	return nil
}
