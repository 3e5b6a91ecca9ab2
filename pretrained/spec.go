// Package pretrained resolves comparator specs ("alexnet:conv5",
// "exemplar:conv2", "model.pt:features") to comparators: it keeps the local
// store of imported weights ($DEEPSIM_HOME) and the weights the project
// ships.
package pretrained

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/deepsim/deepsim/graphs"
)

// Spec is a parsed comparator spec.
type Spec struct {
	// Name is the store name ("alexnet"), "exemplar" for the shipped
	// comparator, ARCH-random for random weights, or a TorchScript path.
	Name  string
	Arch  string // alexnet, vgg16, exemplar, torchscript; "" until looked up
	Layer string // layer, or TorchScript submodule ("" for its forward)
	// Random asks for random weights from a fixed seed: only ever on request.
	Random bool
	// Script is the TorchScript file for Arch "torchscript".
	Script string
}

// Shipped is the name of the comparator that ships with the project.
const Shipped = "exemplar"

// Parse reads SPEC as NAME[:LAYERS], ARCH-random[:LAYERS] or
// FILE.pt[:SUBMODULE]. LAYERS is one layer or several joined by '+' (the
// features are then all of theirs); without it a network is tapped at its
// default layers, one per scale.
func Parse(spec string) (Spec, error) {
	if spec == "" {
		return Spec{}, fmt.Errorf("empty comparator spec")
	}
	name, layer, _ := strings.Cut(spec, ":")
	if strings.HasSuffix(name, ".pt") || strings.HasSuffix(name, ".pth") || strings.ContainsRune(name, os.PathSeparator) {
		if _, err := os.Stat(name); err != nil {
			return Spec{}, fmt.Errorf("comparator %q: %w", spec, err)
		}
		return Spec{Name: name, Arch: "torchscript", Layer: layer, Script: name}, nil
	}
	if strings.HasPrefix(layer, "+") || strings.HasSuffix(layer, "+") || strings.Contains(layer, "++") {
		return Spec{}, fmt.Errorf("comparator %q: an empty layer name among %q", spec, layer)
	}
	if arch, ok := strings.CutSuffix(name, "-random"); ok {
		if arch == "torchscript" {
			return Spec{}, fmt.Errorf("comparator %q: a TorchScript comparator is a file, not random weights", spec)
		}
		if _, err := graphs.ArchInputSize(arch); err != nil {
			return Spec{}, fmt.Errorf("comparator %q: %w", spec, err)
		}
		return Spec{Name: name, Arch: arch, Layer: layer, Random: true}, nil
	}
	return Spec{Name: name, Layer: layer}, nil
}

// String writes the spec back in the form Parse reads.
func (s Spec) String() string {
	if s.Layer == "" {
		return s.Name
	}
	return s.Name + ":" + s.Layer
}

// DefaultHome is $DEEPSIM_HOME, or ~/.cache/deepsim; "" when neither can
// be known. It never falls back to a world-writable place such as /tmp,
// where others could plant weights.
func DefaultHome() string {
	if h := os.Getenv("DEEPSIM_HOME"); h != "" {
		return h
	}
	if c, err := os.UserCacheDir(); err == nil {
		return filepath.Join(c, "deepsim")
	}
	return ""
}
