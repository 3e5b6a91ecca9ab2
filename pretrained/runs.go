package pretrained

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

// The trained autoencoders deepsim ships (see docs/pretrained.md): each a
// folder with the run's config.json, the weights inference needs
// (weights.pt: E and G) and info.json, which says how it was trained,
// what it measures, and the weights' SHA-256.
//
//go:embed autoencoders
var shippedRuns embed.FS

// RunPrefix names a shipped run where a run folder goes:
// --run pretrained:autoencoder.
const RunPrefix = "pretrained:"

// ShippedRun is the shipped run a --run value names, and whether it names
// one at all.
func ShippedRun(run string) (fs.FS, bool, error) {
	name, ok := strings.CutPrefix(run, RunPrefix)
	if !ok {
		return nil, false, nil
	}
	names := ShippedRunNames()
	for _, n := range names {
		if n == name {
			sub, err := fs.Sub(shippedRuns, "autoencoders/"+name)
			return sub, true, err
		}
	}
	return nil, true, fmt.Errorf("%s: no such shipped run (have: %s)", run, strings.Join(names, ", "))
}

// ShippedRunNames lists the shipped runs, sorted.
func ShippedRunNames() []string {
	entries, err := fs.ReadDir(shippedRuns, "autoencoders")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names
}
