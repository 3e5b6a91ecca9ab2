package runner

import (
	"fmt"
	"path/filepath"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/pretrained"
)

// OpenModel rebuilds a run's networks from its config.json and loads its
// checkpoint, for inference: without the comparator, which only training
// needs, but with an inversion's target, whose weights must be those the
// run trained with.
func OpenModel(run string, store pretrained.Store) (*graphs.Model, Config, error) {
	cfg, err := LoadConfig(run)
	if err != nil {
		return nil, cfg, err
	}
	graphs.SetThreads(cfg.Threads)
	t, _ := taskNamed(cfg.Task) // LoadConfig knows the task
	net, err := t.target(cfg, store)
	if err != nil {
		return nil, cfg, err
	}
	var target *graphs.Comparator
	if net != nil {
		if net.Fingerprint != cfg.TargetWeights {
			return nil, cfg, fmt.Errorf("%s inverts %s with weights %s, but the store has %s: import the same weights again",
				run, cfg.TargetSpec(), cfg.TargetWeights, net.Fingerprint)
		}
		if target, err = net.Open(cfg.TargetSide()); err != nil {
			return nil, cfg, err
		}
		defer target.Close()
	}
	model, err := graphs.NewModel(cfg.Engine(), nil, target)
	if err != nil {
		return nil, cfg, err
	}
	if _, err := loadCheckpoint(model, filepath.Join(run, CheckpointFile)); err != nil {
		model.Close()
		return nil, cfg, err
	}
	return model, cfg, nil
}
