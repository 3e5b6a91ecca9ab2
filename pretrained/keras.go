package pretrained

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/internal/atomicfile"
	"github.com/deepsim/deepsim/internal/torchfile"
	"github.com/deepsim/deepsim/pretrained/tfjs"
)

// ArchKeras is the store's architecture for imported Keras (TF.js layers)
// models: their layer graph is kept beside the weights, in NAME.graph.json.
const ArchKeras = "keras"

// Input ranges a Keras model may expect, for --input.
var inputRanges = map[string]graphs.Norm{
	"0,1":      graphs.NormUnit,
	"-1,1":     graphs.NormSigned,
	"imagenet": graphs.NormImageNet,
}

// IsTFJS tells whether an import source is a TF.js layers model: a folder,
// an npm tarball, or a model.json or model.min.js.
func IsTFJS(src string) bool {
	if st, err := os.Stat(src); err == nil && st.IsDir() {
		return true
	}
	base := filepath.Base(src)
	return strings.HasSuffix(src, ".tgz") || strings.HasSuffix(src, ".tar.gz") ||
		base == "model.json" || base == "model.min.js"
}

func (s Store) graphPath(name string) string { return s.path(name, graphExt) }

// ImportTFJS reads a TF.js layers model (see tfjs.Load: src and model) and
// stores it under name: its weights as a state dict in PyTorch's layouts,
// its layer graph, and how it expects its input (input: "0,1", "-1,1" or
// "imagenet"). The model is built and run once before it takes the name.
func (s Store) ImportTFJS(ctx context.Context, src, model, name, input string) (Entry, error) {
	if err := validName(name); err != nil {
		return Entry{}, err
	}
	norm, ok := inputRanges[input]
	if !ok {
		return Entry{}, fmt.Errorf("--input %q: want 0,1 (8-bit values / 255), -1,1 or imagenet", input)
	}
	m, err := tfjs.Load(src, model)
	if err != nil {
		return Entry{}, err
	}
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	if err := s.prepare(); err != nil {
		return Entry{}, err
	}
	// Both files are written beside their final names and checked before
	// they take them, so that a bad model never replaces a good one.
	weights, err := os.CreateTemp(s.dir(), "."+name+".pt.tmp-*")
	if err != nil {
		return Entry{}, err
	}
	defer os.Remove(weights.Name())
	h := sha256.New()
	cw := &countWriter{ctx: ctx, w: io.MultiWriter(weights, h)}
	err = torchfile.WritePlain(cw, m.Tensors)
	if err == nil {
		err = weights.Sync()
	}
	if cerr := weights.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Entry{}, fmt.Errorf("write weights: %w", err)
	}
	graphJSON, err := json.Marshal(m.Layers)
	if err != nil {
		return Entry{}, err
	}
	gsum := sha256.Sum256(graphJSON)
	abs, _ := filepath.Abs(src)
	e := Entry{Name: name, Arch: ArchKeras, SHA256: hex.EncodeToString(h.Sum(nil)), Bytes: cw.n,
		Source: abs, Model: model, Imported: time.Now().UTC(), GraphSHA256: hex.EncodeToString(gsum[:]),
		InputSize: m.InputSize[0], Input: input, Taps: m.DefaultTaps(), Params: m.Params()}
	if m.InputSize[0] != m.InputSize[1] || m.InputSize[0] < 1 {
		e.InputSize = 224 // a model without a fixed square input: ImageNet's usual side
	}
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	if err := tryGraph(m.Layers, weights.Name(), norm, e); err != nil {
		return Entry{}, fmt.Errorf("%s: %w", src, err)
	}
	if err := os.Chmod(weights.Name(), 0o644); err != nil {
		return Entry{}, err
	}
	if err := atomicfile.WriteFile(s.graphPath(name), graphJSON); err != nil {
		return Entry{}, err
	}
	if err := os.Rename(weights.Name(), s.WeightsPath(name)); err != nil {
		return Entry{}, err
	}
	js, _ := json.MarshalIndent(e, "", "  ")
	if err := atomicfile.WriteFile(s.manifestPath(name), append(js, '\n')); err != nil {
		return Entry{}, err
	}
	return e, nil
}

// tryGraph builds an imported network with its weights and runs one image
// through every layer it would tap.
func tryGraph(layers []graphs.Layer, weights string, norm graphs.Norm, e Entry) error {
	last := layers[len(layers)-1].Name
	c, err := graphs.NewComparator(graphs.ComparatorSpec{Arch: "graph", Layer: strings.Join(append(e.Taps, last), "+"),
		Weights: weights, Graph: layers, Norm: norm, OwnSize: e.InputSize})
	if err != nil {
		return err
	}
	defer c.Close()
	x := make([]float32, 3*e.InputSize*e.InputSize)
	_, _, err = c.Features(x, 1, e.InputSize, e.InputSize)
	return err
}

// graphSpec fills in how to build an imported Keras network.
func (s Store) graphSpec(e Entry, gs *graphs.ComparatorSpec) error {
	b, err := s.read(e.Name, graphExt)
	if err != nil {
		return fmt.Errorf("comparator %q: its layer graph: %w", e.Name, err)
	}
	if sha256Hex(b) != e.GraphSHA256 {
		return fmt.Errorf("the layer graph of %q changed since import: import it again", e.Name)
	}
	if err := json.Unmarshal(b, &gs.Graph); err != nil {
		return fmt.Errorf("comparator %q: its layer graph: %w", e.Name, err)
	}
	gs.Arch, gs.Norm, gs.OwnSize = "graph", inputRanges[e.Input], e.InputSize
	if gs.Layer == "" {
		gs.Layer = strings.Join(e.Taps, "+")
	}
	return nil
}

// The npm package that gives deepsim its trained natural-image networks
// (MIT licence): make deps fetches it with npm pack and checks its SHA-256.
const (
	NSFWJSFile   = "nsfwjs-4.4.0.tgz"
	NSFWJSSHA256 = "585cd178f3b994337c4d10a87b080d342fc52f8b9bf0085c4d1f345a3a1c5382"
)

// NSFWJSPath is where make deps keeps the nsfwjs tarball:
// $DEEPSIM_HOME/npm (by default ~/.cache/deepsim/npm).
func NSFWJSPath() string { return filepath.Join(DefaultHome(), "npm", NSFWJSFile) }
