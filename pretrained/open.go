package pretrained

import (
	_ "embed" // the shipped comparator's weights
	"encoding/json"
	"fmt"
	"os"
	"sync"

	"github.com/deepsim/deepsim/graphs"
)

// The Exemplar-CNN this project trained and ships (see exemplar.json and
// the README): a state dict of its feature layers.
//
//go:embed exemplar.pt
var exemplarWeights []byte

//go:embed exemplar.json
var exemplarRecord []byte

// ShippedRecord describes how the shipped comparator was made.
type ShippedRecord struct {
	Command        string  `json:"command"`
	Data           string  `json:"data"`
	Seed           int64   `json:"seed"`
	Classes        int     `json:"classes"`
	Steps          int64   `json:"steps"`
	HeldoutAcc     float64 `json:"heldout_surrogate_accuracy"`
	HeldoutSamples int     `json:"heldout_samples"`
	SHA256         string  `json:"sha256"`
}

// ShippedInfo returns the record of how the shipped comparator was made.
func ShippedInfo() (ShippedRecord, error) {
	var r ShippedRecord
	err := json.Unmarshal(exemplarRecord, &r)
	return r, err
}

// RandomSeed is the fixed seed of every ARCH-random comparator, so that
// "alexnet-random:conv5" means the same network in every run.
const RandomSeed = 0

// NativeSize asks Open for a comparator that takes images at their own
// size instead of resizing them.
const NativeSize = graphs.InputNative

// A Network is a comparator spec resolved once: its architecture, the
// fingerprint of its weights, and the weights themselves, read once and
// checked against the store's record. Open builds the engine's network
// from those bytes, at any input side, without reading anything again, so
// what was checked is what is loaded.
type Network struct {
	Spec Spec // with its architecture
	// Fingerprint names exactly which weights these are, for runs to
	// record: the SHA-256 of the weights (and of an imported Keras model's
	// layer graph), or "random:ARCH:seedN" for the fixed-seed random ones.
	Fingerprint string
	gs          graphs.ComparatorSpec // all but the input side

	minOnce sync.Once
	min     int // MinSide's answer
	minErr  error
}

// Resolve reads the network a spec names: one read of the store's record
// and one of the weights. A Store made by NewStore remembers what it
// resolved, so that a command opens each network once.
func Resolve(spec string, store Store) (*Network, error) {
	if n, ok := store.nets.get(spec); ok {
		return n, nil
	}
	n, err := resolve(spec, store)
	if err != nil {
		return nil, err
	}
	store.nets.put(spec, n)
	return n, nil
}

func resolve(spec string, store Store) (*Network, error) {
	s, err := Parse(spec)
	if err != nil {
		return nil, err
	}
	n := &Network{Spec: s, gs: graphs.ComparatorSpec{Arch: s.Arch, Layer: s.Layer, Seed: RandomSeed}}
	switch {
	case s.Random:
		n.Fingerprint = fmt.Sprintf("random:%s:seed%d", s.Arch, RandomSeed)
		return n, nil
	case s.Arch == "torchscript":
		if n.gs.WeightsData, err = os.ReadFile(s.Script); err != nil {
			return nil, fmt.Errorf("comparator %s: %w", spec, err)
		}
		n.Fingerprint = "sha256:" + sha256Hex(n.gs.WeightsData)
		return n, nil
	case s.Name == Shipped:
		rec, err := ShippedInfo()
		if err != nil {
			return nil, err
		}
		n.Spec.Arch, n.gs.Arch, n.gs.WeightsData = "exemplar", "exemplar", exemplarWeights
		n.Fingerprint = "sha256:" + rec.SHA256
		return n, nil
	}
	e, err := store.Lookup(s.Name)
	if err != nil {
		return nil, err
	}
	n.Spec.Arch, n.gs.Arch = e.Arch, e.Arch
	if n.gs.WeightsData, err = store.weights(e); err != nil {
		return nil, err
	}
	n.Fingerprint = "sha256:" + e.SHA256
	if e.Arch == ArchKeras {
		if err := store.graphSpec(e, &n.gs); err != nil {
			return nil, err
		}
		n.Fingerprint += ",graph:" + e.GraphSHA256
	}
	return n, nil
}

// Open builds the network. inputSize 0 means the architecture's own input
// size, NativeSize no resizing.
func (n *Network) Open(inputSize int) (*graphs.Comparator, error) {
	gs := n.gs
	gs.InputSize = inputSize
	if inputSize < 0 && inputSize != NativeSize {
		gs.InputSize = graphs.InputOwn
	}
	c, err := graphs.NewComparator(gs)
	if err != nil {
		return nil, fmt.Errorf("comparator %s: %w", n.Spec, err)
	}
	return c, nil
}

// MinSide is the smallest side of a square image whose features the
// network computes (graphs.Comparator.MinSide), found once per network.
func (n *Network) MinSide() (int, error) {
	n.minOnce.Do(func() { n.min, n.minErr = n.findMinSide() })
	return n.min, n.minErr
}

func (n *Network) findMinSide() (int, error) {
	c, err := n.Open(NativeSize)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	side, err := c.MinSide()
	if err != nil {
		return 0, fmt.Errorf("comparator %s: %w", n.Spec, err)
	}
	return side, nil
}

// Side is the side the network should see images at when asked for side
// (resized to it): side itself, or the least the network takes when side
// is smaller, and then enlarged is true. flag names the flag that gave
// side, "" for a default: a side a user gave is never changed, and one
// that is too small is refused with the network, its minimum and the flag.
func (n *Network) Side(side int, flag string) (size int, enlarged bool, err error) {
	least, err := n.MinSide()
	if err != nil {
		// A network that computes nothing at any side has no least side
		// to fit: the caller's own call on it says what is wrong, for its
		// batch, which a blank probe image cannot.
		least = 0
	}
	least = max(least, MinInputSize)
	switch {
	case side >= least:
		return side, false, nil
	case flag != "":
		return 0, false, fmt.Errorf("comparator %s takes images of at least %d px: %s %d is smaller (leave it out to use %d)",
			n.Spec, least, flag, side, least)
	}
	return least, true, nil
}

// MinInputSize is the least side a comparator resizes its input to.
const MinInputSize = 16

// OpenString resolves and opens a spec.
func OpenString(spec string, store Store, inputSize int) (*graphs.Comparator, error) {
	n, err := Resolve(spec, store)
	if err != nil {
		return nil, err
	}
	return n.Open(inputSize)
}
