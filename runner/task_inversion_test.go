package runner

import (
	"bytes"
	"context"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/disintegration/imaging"

	"github.com/deepsim/deepsim/internal/testimages"
	"github.com/deepsim/deepsim/internal/torchfile"
	"github.com/deepsim/deepsim/internal/torchfile/torchfiletest"
	"github.com/deepsim/deepsim/pretrained"
)

// importAlexNet puts random torchvision-layout AlexNet weights in a store
// of the test's own, as a user's imported alexnet-owt-*.pth would be.
func importAlexNet(t *testing.T, store pretrained.Store, seed uint64) {
	importAlexNetAs(t, store, "alexnet", seed)
}

func importAlexNetAs(t *testing.T, store pretrained.Store, name string, seed uint64) {
	t.Helper()
	var b bytes.Buffer
	if err := torchfile.Write(&b, torchfiletest.RandomAlexNet(seed)); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "alexnet.pth")
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Import(context.Background(), p, name, ""); err != nil {
		t.Fatal(err)
	}
}

func inversionConfig(data, target, layer string) Config {
	cfg := DefaultsFor(TaskInversion)
	cfg.Data = []string{data}
	cfg.Target, cfg.Layer = target, layer
	cfg.Size, cfg.Batch, cfg.Steps, cfg.MaxSide, cfg.CheckpointEvery = 32, 2, 2, 96, 2
	return cfg
}

// An AlexNet imported from a torchvision state dict inverts from CONV5 and
// from each fully connected layer: it trains, reconstructs and evaluates.
func TestInversionOfAlexNetLayers(t *testing.T) {
	store := pretrained.Store{Home: t.TempDir()}
	importAlexNet(t, store, 5)
	data := photos(t, 2)
	img := filepath.Join(t.TempDir(), "in.png")
	if err := imaging.Save(testimages.Photo(9, 50, 40), img); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		layer string
		shape [3]int
	}{
		{"conv5", [3]int{256, 1, 1}}, // at 64 px AlexNet's CONV5 is one position
		{"fc6", [3]int{4096, 1, 1}},
		{"fc7", [3]int{4096, 1, 1}},
		{"fc8", [3]int{1000, 1, 1}},
	}
	for _, tc := range tests {
		t.Run(tc.layer, func(t *testing.T) {
			cfg := inversionConfig(data, "alexnet", tc.layer)
			cfg.TargetSize = 64
			if err := PaperWeights(&cfg, store); err != nil {
				t.Fatal(err)
			}
			run := filepath.Join(t.TempDir(), "run")
			mustTrain(t, cfg, TrainOptions{Out: run, Store: store})
			model, saved, err := OpenModel(run, store)
			if err != nil {
				t.Fatal(err)
			}
			shape, err := model.FeatureShape()
			model.Close()
			if err != nil || shape != tc.shape {
				t.Fatalf("feature shape %v (%v), want %v", shape, err, tc.shape)
			}
			if !strings.HasPrefix(saved.TargetWeights, "sha256:") {
				t.Fatalf("the run records its target's weights as %q", saved.TargetWeights)
			}
			out := filepath.Join(t.TempDir(), "out")
			sum, err := Reconstruct(context.Background(), ReconstructOptions{Run: run, Out: out, Inputs: []string{img}, Store: store, Log: discardLog()})
			if err != nil || len(sum.Written) != 1 {
				t.Fatalf("reconstruct: %v %v", sum, err)
			}
			if got, err := imaging.Open(sum.Written[0]); err != nil || got.Bounds().Dx() != 32 || got.Bounds().Dy() != 32 {
				t.Fatalf("reconstruction: %v, want 32x32", err)
			}
			res, err := Evaluate(context.Background(), EvalOptions{Run: run, Data: []string{data}, N: 4, Seed: 1,
				Judge: "alexnet-random:conv1", JudgeSize: 64, Store: store, Log: discardLog()})
			if err != nil {
				t.Fatal(err)
			}
			if res.Comparator != "alexnet:"+tc.layer {
				t.Fatalf("feature error measured with %s, want the target at the inverted layer", res.Comparator)
			}
			for name, v := range map[string]float64{"image error": res.ImageErrorPct, "feature error": res.FeatureErrorPct, "perceptual distance": res.PerceptualDistance} {
				if math.IsNaN(v) || math.IsInf(v, 0) || v <= 0 {
					t.Fatalf("%s = %v", name, v)
				}
			}
		})
	}
}

// runner features then reconstruct --features gives exactly what
// reconstruct gives on the images; features of another shape are refused,
// with both shapes named.
func TestInversionFeaturesRoundTrip(t *testing.T) {
	store := pretrained.Store{Home: t.TempDir()}
	data := photos(t, 2)
	cfg := inversionConfig(data, "exemplar", "conv2")
	cfg.Weights.Set(TermAdv, 0)
	run := filepath.Join(t.TempDir(), "run")
	mustTrain(t, cfg, TrainOptions{Out: run, Store: store})

	inputs := t.TempDir()
	for i, size := range [][2]int{{48, 40}, {32, 32}, {70, 30}} {
		imaging.Save(testimages.Photo(uint64(30+i), size[0], size[1]), filepath.Join(inputs, string(rune('a'+i))+".png"))
	}
	direct := filepath.Join(t.TempDir(), "direct")
	if _, err := Reconstruct(context.Background(), ReconstructOptions{Run: run, Out: direct, Inputs: []string{inputs}, Store: store, Log: discardLog()}); err != nil {
		t.Fatal(err)
	}
	npyFile := filepath.Join(t.TempDir(), "f.npy")
	files, err := Features(context.Background(), FeaturesOptions{Target: cfg.TargetSpec(), Size: cfg.Size, Inputs: []string{inputs}, Out: npyFile, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	inverted := filepath.Join(t.TempDir(), "inverted")
	sum, err := Reconstruct(context.Background(), ReconstructOptions{Run: run, Out: inverted, Features: npyFile, Store: store, Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Written) != len(files) {
		t.Fatalf("%d images from %d features", len(sum.Written), len(files))
	}
	for i, f := range files {
		a, _ := os.ReadFile(filepath.Join(direct, outputName(f)))
		b, _ := os.ReadFile(sum.Written[i])
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Fatalf("%s: inverting its stored features gives other bytes than reconstructing it", f)
		}
	}

	other := filepath.Join(t.TempDir(), "conv3.npy")
	if _, err := Features(context.Background(), FeaturesOptions{Target: "exemplar:conv3", Size: 32, Inputs: []string{inputs}, Out: other, Store: store}); err != nil {
		t.Fatal(err)
	}
	_, err = Reconstruct(context.Background(), ReconstructOptions{Run: run, Out: t.TempDir(), Features: other, Store: store, Log: discardLog()})
	if err == nil || !strings.Contains(err.Error(), "[3 128 4 4]") || !strings.Contains(err.Error(), "(N, 64, 8, 8)") {
		t.Fatalf("features of another shape: err = %v", err)
	}
}

// A run is never used with other target weights than it trained with.
func TestInversionRefusesOtherTargetWeights(t *testing.T) {
	store := pretrained.Store{Home: t.TempDir()}
	importAlexNet(t, store, 1)
	cfg := inversionConfig(photos(t, 2), "alexnet", "conv5")
	cfg.TargetSize = 64
	cfg.Weights.Set(TermAdv, 0)
	run := filepath.Join(t.TempDir(), "run")
	mustTrain(t, cfg, TrainOptions{Out: run, Store: store})
	importAlexNet(t, store, 2) // other weights under the same name
	if _, _, err := OpenModel(run, store); err == nil || !strings.Contains(err.Error(), "import the same weights again") {
		t.Fatalf("open with other target weights: err = %v", err)
	}
	saved, err := LoadConfig(run)
	if err != nil {
		t.Fatal(err)
	}
	saved.Steps = 4
	if _, err := Train(context.Background(), saved, TrainOptions{Out: run, Resume: true, Store: store, Log: discardLog()}); err == nil || !strings.Contains(err.Error(), "other weights") {
		t.Fatalf("resume with other target weights: err = %v", err)
	}
}

// The paper's Caffe weights, rescaled to mean-reduced terms on [-1,1]
// pixels: the Exemplar-CNN's conv2 gives 64 x 8 x 8 values for a 32 px
// image.
func TestPaperWeights(t *testing.T) {
	cfg := inversionConfig("photos", "exemplar", "conv2")
	if err := PaperWeights(&cfg, pretrained.Store{Home: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	want := map[string][2]float64{
		"feat": {cfg.Weights.Of(TermFeat), 0.01 * 64 * 8 * 8 / 2},
		"img":  {cfg.Weights.Of(TermImg), 2e-6 * 3 * 32 * 32 / 2 * 127.5 * 127.5},
		"adv":  {cfg.Weights.Of(TermAdv), 100},
	}
	for name, v := range want {
		if math.Abs(v[0]-v[1]) > 1e-9*v[1] {
			t.Errorf("lambda %s = %v, want %v", name, v[0], v[1])
		}
	}
}

// countingFS counts how often each file of a folder is opened.
type countingFS struct {
	fs.FS
	mu     sync.Mutex
	opened map[string]int
}

func (c *countingFS) Open(name string) (fs.File, error) {
	c.mu.Lock()
	c.opened[name]++
	c.mu.Unlock()
	return c.FS.Open(name)
}

// An inversion run reads each network it opens once: one read of the
// store's record and one of the weights, whether its comparator is the
// target itself or a network of its own, with the paper's weights and
// the final evaluation included.
func TestInversionReadsEachNetworkOnce(t *testing.T) {
	home := t.TempDir()
	importAlexNet(t, pretrained.Store{Home: home}, 5)
	importAlexNetAs(t, pretrained.Store{Home: home}, "other", 6)
	data := photos(t, 4)
	for _, tc := range []struct {
		name, comparator string
		nets             []string
	}{
		{"the target is the comparator", "", []string{"alexnet"}},
		{"a comparator of its own", "other:conv2", []string{"alexnet", "other"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			counted := &countingFS{FS: os.DirFS(home), opened: map[string]int{}}
			store := pretrained.NewStore(home)
			store.FS = counted
			cfg := inversionConfig(data, "alexnet", "conv5")
			cfg.Comparator, cfg.Heldout, cfg.TargetSize = tc.comparator, []string{data}, 64
			cfg, err := Resolve(cfg, Request{PaperWeights: true, Given: func(string) bool { return false }}, store, nil, discardLog())
			if err != nil {
				t.Fatal(err)
			}
			run := filepath.Join(t.TempDir(), "run")
			mustTrain(t, cfg, TrainOptions{Out: run, Store: store})
			if _, err := os.Stat(filepath.Join(run, EvalFile)); err != nil {
				t.Fatalf("no final evaluation: %v", err)
			}
			for _, name := range tc.nets {
				for _, f := range []string{"comparators/" + name + ".json", "comparators/" + name + ".pt"} {
					if n := counted.opened[f]; n != 1 {
						t.Errorf("%s read %d times, want once", f, n)
					}
				}
			}
			for f, n := range counted.opened {
				if n > 1 {
					t.Errorf("%s read %d times", f, n)
				}
			}
		})
	}
}
