package pretrained

import (
	_ "embed" // the shipped comparator's weights
	"encoding/json"
	"fmt"

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

// Resolve fills in the architecture of a spec: from the store for imported
// names, and checks that what it names exists.
func Resolve(spec Spec, store Store) (Spec, error) {
	switch {
	case spec.Random || spec.Arch == "torchscript":
		return spec, nil
	case spec.Name == Shipped:
		spec.Arch = "exemplar"
		return spec, nil
	}
	e, err := store.Lookup(spec.Name)
	if err != nil {
		return spec, err
	}
	spec.Arch = e.Arch
	return spec, nil
}

// NativeSize asks Open for a comparator that takes images at their own
// size instead of resizing them.
const NativeSize = graphs.InputNative

// Open builds the comparator a spec names. inputSize 0 means the
// architecture's own input size, NativeSize no resizing.
func Open(spec Spec, store Store, inputSize int) (*graphs.Comparator, error) {
	spec, err := Resolve(spec, store)
	if err != nil {
		return nil, err
	}
	if inputSize < 0 && inputSize != NativeSize {
		inputSize = graphs.InputOwn
	}
	gs := graphs.ComparatorSpec{Arch: spec.Arch, Layer: spec.Layer, Seed: RandomSeed, InputSize: inputSize}
	switch {
	case spec.Random:
	case spec.Arch == "torchscript":
		gs.Weights = spec.Script
	case spec.Name == Shipped:
		gs.WeightsData = exemplarWeights
	default:
		e, err := store.Lookup(spec.Name)
		if err != nil {
			return nil, err
		}
		if err := store.Verify(e); err != nil {
			return nil, err
		}
		gs.Weights = store.WeightsPath(spec.Name)
		if e.Arch == ArchKeras {
			if err := store.graphSpec(e, &gs); err != nil {
				return nil, err
			}
		}
	}
	c, err := graphs.NewComparator(gs)
	if err != nil {
		return nil, fmt.Errorf("comparator %s: %w", spec, err)
	}
	return c, nil
}

// OpenString parses and opens a spec.
func OpenString(spec string, store Store, inputSize int) (*graphs.Comparator, error) {
	s, err := Parse(spec)
	if err != nil {
		return nil, err
	}
	return Open(s, store, inputSize)
}

// Fingerprint names exactly which weights a spec's network has, for runs to
// record: the SHA-256 of the weights (and of an imported Keras model's
// layer graph), or "random:ARCH" for the fixed-seed random weights.
func Fingerprint(spec string, store Store) (string, error) {
	s, err := Parse(spec)
	if err != nil {
		return "", err
	}
	if s, err = Resolve(s, store); err != nil {
		return "", err
	}
	switch {
	case s.Random:
		return fmt.Sprintf("random:%s:seed%d", s.Arch, RandomSeed), nil
	case s.Arch == "torchscript":
		sum, err := fileSHA256(s.Script)
		return "sha256:" + sum, err
	case s.Name == Shipped:
		rec, err := ShippedInfo()
		return "sha256:" + rec.SHA256, err
	}
	e, err := store.Lookup(s.Name)
	if err != nil {
		return "", err
	}
	if e.GraphSHA256 != "" {
		return "sha256:" + e.SHA256 + ",graph:" + e.GraphSHA256, nil
	}
	return "sha256:" + e.SHA256, nil
}
