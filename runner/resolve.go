package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/pretrained"
)

// A Request is what a train command asks for beyond the configuration it
// made: which settings it gave, by config.json key, so that a resumed run
// takes those values and keeps the rest of its own.
type Request struct {
	Out          string
	Resume       bool
	PaperWeights bool // the paper's loss weights, rescaled (PaperWeights)
	// Given tells whether a setting was given, by its config.json key.
	Given func(key string) bool
}

// Resolve is the configuration a run trains with. A new run takes cfg,
// with the defaults that depend on the store; a resumed run takes its
// saved configuration with the flags given applied, which may change only
// what CheckResume allows. In a group rank 0 resolves it and every other
// rank takes rank 0's, with its own thread count.
func Resolve(cfg Config, req Request, store pretrained.Store, g *graphs.Group, log *slog.Logger) (Config, error) {
	resolve := func() (Config, error) {
		if req.Resume {
			cfg, err := resumed(cfg, req)
			if err == nil && cfg.DataStream != DataStreamVersion {
				log.Info("this run began before streamed data: from here on its crops follow the new stream (seeded epochs, decoded on demand)",
					"data_stream", cfg.DataStream, "now", DataStreamVersion)
				cfg.DataStream = DataStreamVersion
			}
			return cfg, err
		}
		return fresh(cfg, req, store, log)
	}
	if g == nil {
		return resolve()
	}
	return shareConfig(g, cfg.Threads, resolve)
}

// resumed is the run's saved configuration with the settings given in
// asked applied.
func resumed(asked Config, req Request) (Config, error) {
	saved, err := LoadConfig(req.Out)
	if err != nil {
		return saved, err
	}
	cfg, err := overlay(saved, asked, req.Given)
	if err != nil {
		return cfg, err
	}
	return cfg, CheckResume(saved, cfg)
}

// overlay is base with the settings given taken from asked, key by key.
func overlay(base, asked Config, given func(key string) bool) (Config, error) {
	b, errBase := fields(base)
	a, errAsked := fields(asked)
	if err := errors.Join(errBase, errAsked); err != nil {
		return base, err
	}
	for k, v := range a {
		if given(k) {
			b[k] = v
		}
	}
	raw, err := json.Marshal(b)
	if err != nil {
		return base, err
	}
	var out Config
	return out, json.Unmarshal(raw, &out)
}

// fitSides raises the sides a new run's fixed networks see images at to
// the least each takes, where the side is a default (an inversion's target
// sees the crops at their own size, which may be too small for its
// layer); a side given by its flag that is too small is refused. The
// sides it sets are recorded in config.json, so a resumed run and the
// commands that use the run see what training saw.
func fitSides(cfg *Config, req Request, store pretrained.Store, log *slog.Logger) error {
	if cfg.Validate() != nil {
		return nil // Train refuses the configuration with the reason
	}
	t, _ := taskNamed(cfg.Task)
	target, err := t.target(*cfg, store)
	if err != nil {
		return err
	}
	if target != nil {
		side, err := fitSide(target, cfg.Size, cfg.TargetSize, "target_size", log)
		if err != nil {
			return err
		}
		if side != cfg.TargetSide() {
			cfg.TargetSize = side
		}
	}
	// -1 is the crops' own side, raised like a default one.
	crops := cfg.ComparatorSize == CropSide
	if crops {
		cfg.ComparatorSize = cfg.Size
	}
	// A comparator at its own input size takes any crop; an inversion's
	// that is its target sees what the target sees.
	if cfg.Comparator == "" || cfg.ComparatorSize <= 0 || cfg.Weights.Of(TermFeat) <= 0 {
		return nil
	}
	comp, err := pretrained.Resolve(cfg.ComparatorSpec(), store)
	if err != nil {
		return err
	}
	given := 0 // the size the trained comparator's default set is not given
	if req.Given("comparator_size") && !crops {
		given = cfg.ComparatorSize
	}
	cfg.ComparatorSize, err = fitSide(comp, cfg.ComparatorSize, given, "comparator_size", log)
	return err
}

// fitSide is the side net sees images of size at: given (by flag) when
// it is positive, else size, raised to the least side net takes, which is
// logged. A given side below that least is refused (pretrained.Network.Side).
func fitSide(net *pretrained.Network, size, given int, flag string, log *slog.Logger) (int, error) {
	side, by := size, ""
	if given > 0 {
		side, by = given, flag
	}
	side, enlarged, err := net.Side(side, by)
	if err == nil && enlarged {
		log.Info("enlarging the images to the least side the network takes", "network", net.Spec.String(), "size", size, "side", side)
	}
	return side, err
}

// fresh is a new run's configuration: the trained comparator where the
// store has it and no comparator flag was given, and the paper's weights
// when asked for.
func fresh(cfg Config, req Request, store pretrained.Store, log *slog.Logger) (Config, error) {
	if !req.Given("comparator") && !req.Given("comparator_size") && !req.Given("layer") && PreferTrainedComparator(&cfg, store) {
		log.Info("comparator: the imported MobileNetV2, the default where make models has run ("+DefaultComparator+" otherwise)",
			"comparator", cfg.Comparator, "comparator_size", cfg.ComparatorSize)
	}
	if err := fitSides(&cfg, req, store, log); err != nil {
		return cfg, err
	}
	// A default decay covers the same share of any run's steps.
	if d := DefaultsFor(cfg.Task); !req.Given("lr_decay") && d.LRDecay > 0 {
		cfg.LRDecay = d.LRDecay * cfg.Steps / d.Steps
	}
	if !req.PaperWeights {
		return cfg, nil
	}
	// The CLI refuses the paper's weights beside weights of one's own.
	if !cfg.Inverts() {
		return cfg, fmt.Errorf("the paper's loss weights are for an inversion, not a %s run", cfg.Task)
	}
	if err := PaperWeights(&cfg, store); err != nil {
		return cfg, err
	}
	args := []any{}
	for i, t := range LossTerms {
		args = append(args, t.Key(), cfg.Weights[i])
	}
	log.Info("loss weights: the paper's, rescaled", args...)
	return cfg, nil
}
