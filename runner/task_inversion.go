package runner

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/pipeline"
	"github.com/deepsim/deepsim/pretrained"
)

// inversionTask trains a generator that reconstructs images from a fixed
// target network's features at one layer, with the DeePSiM loss; D sees
// the features too. Its comparator is by default the target at that layer.
type inversionTask struct{}

func (inversionTask) defaults(c *Config) {
	c.Comparator = "" // the target at the inverted layer
}

func (inversionTask) validate(c Config) error {
	switch {
	case c.Target == "":
		return errors.New("an inversion needs a target, the network whose features it inverts (e.g. mobilenetv2, alexnet)")
	case strings.Contains(c.Target, ":") && c.Layer != "" && !strings.HasSuffix(c.Target, ":"+c.Layer):
		return fmt.Errorf("target %s names a layer and layer %s another", c.Target, c.Layer)
	case !strings.Contains(c.TargetSpec(), ":") || strings.Contains(c.TargetSpec(), "+"):
		return fmt.Errorf("target %s: name the one layer to invert as its layer", c.Target)
	case c.TargetSize != 0 && c.TargetSize < pretrained.MinInputSize:
		return fmt.Errorf("target_size %d: a target sees images at least %d px (0: the crop size)", c.TargetSize, pretrained.MinInputSize)
	case c.KLWeight > 0:
		return errors.New("kl_weight is for the vae task: an inversion has no KL term")
	case c.Discriminator == DiscriminatorPatch:
		return errPatchD
	}
	// The rest is the DeePSiM generators' own.
	v := c
	v.Comparator = c.ComparatorSpec()
	return deepsimTask{}.validate(v)
}

func (inversionTask) engine() graphs.Task { return graphs.Inversion }

func (inversionTask) generative() bool { return true }

func (inversionTask) inverts() bool { return true }

func (inversionTask) samples() bool { return false }

func (inversionTask) trainedComparator() bool { return false }

// An inversion's Layer is its target's, and its comparator is by default
// the target at that layer.
func (inversionTask) comparatorSpec(c Config) string {
	if c.Comparator == "" {
		return c.TargetSpec()
	}
	return c.Comparator
}

// target is the target at the inverted layer.
func (inversionTask) target(c Config, store pretrained.Store) (*pretrained.Network, error) {
	return pretrained.Resolve(c.TargetSpec(), store)
}

// Feature errors are in the target's space at the inverted layer, as in
// the paper.
func (inversionTask) space(c Config) (string, int) { return c.TargetSpec(), c.TargetSide() }

// networks opens the target and, when it is not the target itself, the
// comparator.
func (t inversionTask) networks(c Config, store pretrained.Store) (fixedNets, error) {
	var n fixedNets
	target, err := t.target(c, store)
	if err != nil {
		return fixedNets{}, err
	}
	n.targetWeights = target.Fingerprint
	if n.target, err = target.Open(c.TargetSide()); err != nil {
		return fixedNets{}, err
	}
	switch {
	case c.Weights.Of(TermFeat) <= 0:
	case c.Comparator == "":
		n.comp = n.target
	default:
		if n.comp, err = pretrained.OpenString(c.ComparatorSpec(), store, c.ComparatorSize); err != nil {
			n.target.Close()
			return fixedNets{}, err
		}
	}
	return n, nil
}

func (inversionTask) begin(c Config, data *pipeline.Loader, g *graphs.Group, log *slog.Logger) (taskRun, error) {
	return &deepsimRun{cfg: c, batches: cropBatches(c, data, g), images: data.Source().Len(), log: log}, nil
}

// The paper's loss weights for inverting AlexNet (the authors' Caffe code):
// pixels, CONV5 features and the adversarial term.
const (
	paperImg  = 2e-6
	paperFeat = 0.01
	paperAdv  = 100
)

// PaperWeights sets an inversion's loss weights to the paper's, rescaled
// to this project's terms. Caffe's Euclidean loss is (1/2N) * the sum of
// squares over a batch of N, on 0..255 pixels; this project's are means
// over every value, on [-1,1] pixels. So a term over E values per image
// takes the paper's weight times E/2, and the pixel term 127.5^2 more.
// The adversarial term is a mean in both. E is counted on the comparator's
// features of an image of the run's size.
func PaperWeights(c *Config, store pretrained.Store) error {
	size := c.ComparatorSize
	if c.Comparator == "" {
		size = c.TargetSide()
	}
	comp, err := pretrained.OpenString(c.ComparatorSpec(), store, size)
	if err != nil {
		return err
	}
	defer comp.Close()
	f, _, err := comp.Features(make([]float32, 3*c.Size*c.Size), 1, c.Size, c.Size)
	if err != nil {
		return err
	}
	pixels := float64(3 * c.Size * c.Size)
	c.Weights.Set(TermFeat, paperFeat*float64(len(f))/2)
	c.Weights.Set(TermImg, paperImg*pixels/2*127.5*127.5)
	c.Weights.Set(TermAdv, paperAdv)
	return nil
}
