package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/pipeline"
	"github.com/deepsim/deepsim/pretrained"
)

// deepsimTask trains an encoder and a generator with the DeePSiM loss: the
// autoencoder, or with vae the VAE, whose loss adds a KL term.
type deepsimTask struct{ vae bool }

// DefaultKLWeight weighs the KL (nats per image) against the mean-reduced
// reconstruction terms.
const DefaultKLWeight = 1e-3

// The autoencoder's loss, the sweep's choice (README, under runner
// ablate): the adversarial term weighed adaptively (VQGAN) once D's
// warm-up is over, Adam's beta1 0.5 (DCGAN's), and rates that fall over
// the run's last fifth (a new run's, from its --steps: fresh). The VAE
// keeps the reference loss: these flags did not make its samples sharper
// (README, under runner ablate).
const (
	DefaultAdaptiveAdv = 0.8
	DefaultDWarmup     = 300
	DefaultBeta1       = 0.5
	LRDecayShare       = 5
)

func (t deepsimTask) defaults(c *Config) {
	if t.vae {
		c.KLWeight, c.KLWarmup = DefaultKLWeight, 500
		return
	}
	c.Weights.Set(TermAdv, DefaultAdaptiveAdv)
	c.AdvWeight, c.DWarmup, c.Beta1 = AdvAdaptive, DefaultDWarmup, DefaultBeta1
	c.LRDecay = c.Steps / LRDecayShare
}

// errPatchD refuses a patch discriminator to the tasks without one.
var errPatchD = fmt.Errorf("discriminator patch is for the %s and %s tasks", TaskAutoencoder, TaskVAE)

func (t deepsimTask) validate(c Config) error {
	f := c.Size / 8
	switch {
	case c.Upsample != UpsampleResize && c.Upsample != UpsampleDeconv:
		return fmt.Errorf("upsample %q: have %s, %s", c.Upsample, UpsampleResize, UpsampleDeconv)
	case c.KLWarmup < 0:
		return errors.New("kl_warmup must not be negative")
	case !t.vae && c.Weights.Of(TermPriorAdv) > 0:
		return errors.New("lambda_prior_adv judges draws from a VAE's prior: it is for the vae task")
	case c.Weights.Of(TermPriorAdv) > 0 && c.Weights.Of(TermAdv) <= 0:
		return errors.New("lambda_prior_adv needs lambda_adv above 0, which trains D")
	case !t.vae && c.KLWeight > 0:
		return errors.New("kl_weight is for the vae task: an autoencoder has no KL term")
	case c.Size < 16 || c.Size%8 != 0 || f&(f-1) != 0:
		return fmt.Errorf("size %d: must be 8 times a power of two (16, 32, 64, 128, 256)", c.Size)
	case c.CodeChannels < 1:
		return fmt.Errorf("code_channels %d: must be at least 1 channel", c.CodeChannels)
	case c.Weights.Of(TermFeat) > 0 && c.Comparator == "":
		return errors.New("the feature loss needs a comparator")
	case c.ComparatorSize != 0 && c.ComparatorSize != CropSide && c.ComparatorSize < pretrained.MinInputSize:
		return fmt.Errorf("comparator_size %d: a comparator resizes its input to at least %d px (0: its own size, -1: the crops')", c.ComparatorSize, pretrained.MinInputSize)
	case c.Weights == Weights{}:
		return errors.New("all loss weights are 0: nothing to train")
	case c.MinScale <= 0 || c.MinScale > 1:
		return fmt.Errorf("min scale %g: must be in (0,1]", c.MinScale)
	case c.MaxSide < c.Size:
		return fmt.Errorf("max side %d: must be at least the crop size %d", c.MaxSide, c.Size)
	}
	return nil
}

func (t deepsimTask) engine() graphs.Task {
	if t.vae {
		return graphs.VAE
	}
	return graphs.Autoencoder
}

func (deepsimTask) generative() bool { return true }

func (deepsimTask) inverts() bool { return false }

func (t deepsimTask) samples() bool { return t.vae }

func (deepsimTask) trainedComparator() bool { return true }

func (deepsimTask) comparatorSpec(c Config) string {
	if c.Layer != "" && !strings.Contains(c.Comparator, ":") {
		return c.Comparator + ":" + c.Layer
	}
	return c.Comparator
}

func (deepsimTask) target(Config, pretrained.Store) (*pretrained.Network, error) { return nil, nil }

func (deepsimTask) space(c Config) (string, int) { return c.ComparatorSpec(), c.ComparatorSize }

func (deepsimTask) networks(c Config, store pretrained.Store) (fixedNets, error) {
	if c.Weights.Of(TermFeat) <= 0 {
		return fixedNets{}, nil
	}
	comp, err := pretrained.OpenString(c.ComparatorSpec(), store, c.ComparatorSize)
	return fixedNets{comp: comp}, err
}

func (t deepsimTask) begin(c Config, data *pipeline.Loader, g *graphs.Group, log *slog.Logger) (taskRun, error) {
	return &deepsimRun{cfg: c, vae: t.vae, batches: cropBatches(c, data, g), images: data.Source().Len(), log: log}, nil
}

type deepsimRun struct {
	cfg     Config
	vae     bool
	batches func(int64) pipeline.Batch
	images  int // in an epoch
	log     *slog.Logger
}

func (r *deepsimRun) batch(i int64) pipeline.Batch { return r.batches(i) }

// input logs the epochs done, keeps D out during its warm-up, and gives
// the VAE its KL weight, which warms up, and logs it.
func (r *deepsimRun) input(step int64, b pipeline.Batch) (graphs.Step, []graphs.Term) {
	s := graphs.Step{Batch: b.Data, N: b.N, Offset: b.Offset, Global: b.Global, DWarmup: step <= r.cfg.DWarmup}
	logged := []graphs.Term{{Name: "epoch", Value: float64(step*int64(r.cfg.Batch)) / float64(r.images)}}
	if !r.vae {
		return s, logged
	}
	s.KLWeight = r.cfg.KLWeightAt(step)
	return s, append(logged, graphs.Term{Name: "kl_weight", Value: s.KLWeight})
}

func (*deepsimRun) measure(*graphs.Model, int64, bool) ([]graphs.Term, error) { return nil, nil }

// finish measures the run on its held-out images. The run is done
// whatever happens here: a failure is logged.
func (r *deepsimRun) finish(ctx context.Context, _ *graphs.Model, out output, _ *TrainSummary) error {
	if err := out.evaluate(ctx); err != nil {
		r.log.Warn("final evaluation failed", "reason", err.Error())
	}
	return nil
}
