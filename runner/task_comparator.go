package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/pipeline"
	"github.com/deepsim/deepsim/pretrained"
)

// comparatorTask trains an Exemplar-CNN on surrogate classes: random
// transformations of seed patches, no labels. Its feature layers become a
// comparator.
type comparatorTask struct{}

// A classifier wants a larger batch and learning rate than the generators,
// and no generator losses.
func (comparatorTask) defaults(c *Config) {
	c.Batch, c.Steps, c.LR, c.WeightDecay = 64, 1500, 1e-3, 5e-4
	c.Classes, c.HeldoutPerClass, c.EvalEvery = 100, 4, 100
	c.Comparator = ""
	c.Weights = Weights{}
}

func (comparatorTask) validate(c Config) error {
	switch {
	case c.Size != 64:
		return fmt.Errorf("size %d: the Exemplar-CNN comparator trains on 64 px patches", c.Size)
	case c.Classes < 2:
		return fmt.Errorf("classes %d: need at least 2 surrogate classes", c.Classes)
	case c.HeldoutPerClass < 1 || c.EvalEvery < 1:
		return errors.New("held-out size and intervals must be at least 1")
	case c.Discriminator == DiscriminatorPatch:
		return errPatchD
	}
	return nil
}

func (comparatorTask) engine() graphs.Task { return graphs.ComparatorTask }

func (comparatorTask) generative() bool { return false }

func (comparatorTask) inverts() bool { return false }

func (comparatorTask) samples() bool { return false }

func (comparatorTask) trainedComparator() bool { return false }

func (comparatorTask) comparatorSpec(c Config) string { return deepsimTask{}.comparatorSpec(c) }

func (comparatorTask) target(Config, pretrained.Store) (*pretrained.Network, error) { return nil, nil }

func (comparatorTask) space(Config) (string, int) { return "", 0 }

func (comparatorTask) networks(Config, pretrained.Store) (fixedNets, error) {
	return fixedNets{}, nil
}

func (comparatorTask) begin(c Config, data *pipeline.Loader, _ *graphs.Group, log *slog.Logger) (taskRun, error) {
	seed := uint64(c.Seed)
	ex, err := pipeline.NewExemplar(data, c.Classes, c.Size, seed, pipeline.DecodeOptions{MinSide: c.Size, MaxSide: c.MaxSide})
	if err != nil {
		return nil, err
	}
	r := &comparatorRun{cfg: c, ex: ex, heldout: ex.Heldout(seed, c.HeldoutPerClass), log: log}
	log.Info("surrogate classes", "classes", c.Classes, "heldout_samples", r.heldout.N)
	return r, nil
}

type comparatorRun struct {
	cfg     Config
	ex      *pipeline.Exemplar
	heldout pipeline.Batch
	acc     float64 // the last held-out accuracy
	log     *slog.Logger
}

func (r *comparatorRun) batch(i int64) pipeline.Batch {
	return r.ex.Batch(uint64(r.cfg.Seed), i, r.cfg.Batch)
}

func (r *comparatorRun) input(_ int64, b pipeline.Batch) (graphs.Step, []graphs.Term) {
	return graphs.Step{Batch: b.Data, N: b.N, Labels: b.Labels}, nil
}

// measure classifies the held-out transformations every EvalEvery steps
// and at the last.
func (r *comparatorRun) measure(model *graphs.Model, step int64, last bool) ([]graphs.Term, error) {
	if step%r.cfg.EvalEvery != 0 && !last {
		return nil, nil
	}
	const chunk = 64
	b := r.heldout
	plane := 3 * b.Size * b.Size
	var right float64
	for i := 0; i < b.N; i += chunk {
		n := min(chunk, b.N-i)
		l, err := model.Evaluate(b.Data[i*plane:(i+n)*plane], b.Labels[i:i+n], n)
		if err != nil {
			return nil, err
		}
		right += l.Get("accuracy") * float64(n) // the accuracy on this chunk
	}
	r.acc = right / float64(b.N)
	return []graphs.Term{{Name: "surrogate_acc", Value: r.acc}}, nil
}

// finish writes the trained feature layers as RUN/comparator.pt.
func (r *comparatorRun) finish(_ context.Context, model *graphs.Model, out output, sum *TrainSummary) error {
	sum.HeldoutAcc = r.acc
	b, err := model.ExportComparator()
	if err != nil {
		return err
	}
	if err := out.write(ComparatorFile, b); err != nil {
		return err
	}
	r.log.Info("comparator written", "file", ComparatorFile, "classes", r.cfg.Classes,
		"heldout_surrogate_accuracy", r.acc, "heldout_samples", r.heldout.N)
	return nil
}
