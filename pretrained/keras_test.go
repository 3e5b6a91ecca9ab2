package pretrained

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/internal/torchfile"
	"github.com/deepsim/deepsim/pipeline"
	"github.com/deepsim/deepsim/pretrained/tfjs"
	"github.com/deepsim/deepsim/pretrained/tfjs/tfjstest"
)

// nsfwjs returns the pinned nsfwjs tarball that make deps fetches.
func nsfwjs(t *testing.T) string {
	t.Helper()
	p := NSFWJSPath()
	f, err := os.Open(p)
	if err != nil {
		t.Fatalf("the nsfwjs tarball is missing (%v): run make deps", err)
	}
	defer f.Close()
	h := sha256.New()
	io.Copy(h, f)
	if got := hex.EncodeToString(h.Sum(nil)); got != NSFWJSSHA256 {
		t.Fatalf("%s has sha256 %s, want %s", p, got, NSFWJSSHA256)
	}
	return p
}

type reference struct {
	Images []struct {
		Input string `json:"input"`
		Taps  map[string]struct {
			File  string `json:"file"`
			Shape []int  `json:"shape"`
		} `json:"taps"`
	} `json:"images"`
}

// relL2 is ||got - want|| / ||want|| for a tap computed in NCHW against
// TF.js's NHWC (or flat) reference.
func relL2(got []float32, want []float32, shape []int) float64 {
	var num, den float64
	for i, w := range want {
		j := i
		if len(shape) == 4 { // NHWC index i -> NCHW index j
			h, wd, c := shape[1], shape[2], shape[3]
			y, x, ch := i/(wd*c), i/c%wd, i%c
			j = (ch*h+y)*wd + x
		}
		d := float64(got[j]) - float64(w)
		num += d * d
		den += float64(w) * float64(w)
	}
	return math.Sqrt(num / den)
}

// graphComparator builds an imported model tapped at one layer.
func graphComparator(t *testing.T, m *tfjs.Model, layers []graphs.Layer, tap string) *graphs.Comparator {
	t.Helper()
	weights := filepath.Join(t.TempDir(), "w.pt")
	var buf bytes.Buffer
	if err := torchfile.WritePlain(&buf, m.Tensors); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(weights, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := graphs.NewComparator(graphs.ComparatorSpec{Arch: "graph", Layer: tap, Weights: weights,
		Graph: layers, Norm: graphs.NormUnit, OwnSize: 224, InputSize: graphs.InputNative})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// The imported MobileNetV2 reproduces TensorFlow.js's own activations
// (scripts/tfjs_reference computed them) at three taps, and stops doing so
// when a padding or batch-norm convention changes.
func TestMobileNetV2MatchesTFJS(t *testing.T) {
	m, err := tfjs.Load(nsfwjs(t), "mobilenet_v2")
	if err != nil {
		t.Fatal(err)
	}
	dir := "../testdata/mobilenetv2"
	raw, err := os.ReadFile(filepath.Join(dir, "reference.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ref reference
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	// Each tap's worst relative L2 over the images, for a graph.
	worst := func(t *testing.T, layers []graphs.Layer) map[string]float64 {
		out := map[string]float64{}
		for tap := range ref.Images[0].Taps {
			c := graphComparator(t, m, layers, tap)
			for _, img := range ref.Images {
				in, err := pipeline.Decode(filepath.Join(dir, img.Input), pipeline.DecodeOptions{})
				if err != nil {
					t.Fatal(err)
				}
				x := make([]float32, 3*224*224)
				pipeline.ToCHW(in, in.Bounds(), x)
				got, _, err := c.Features(x, 1, 224, 224)
				if err != nil {
					t.Fatal(err)
				}
				b, err := os.ReadFile(filepath.Join(dir, img.Taps[tap].File))
				if err != nil {
					t.Fatal(err)
				}
				want := make([]float32, len(b)/4)
				binary.Read(bytes.NewReader(b), binary.LittleEndian, want)
				if len(got) != len(want) {
					t.Fatalf("%s: %d values, TF.js has %d", tap, len(got), len(want))
				}
				out[tap] = math.Max(out[tap], relL2(got, want, img.Taps[tap].Shape))
			}
		}
		return out
	}
	for tap, e := range worst(t, m.Layers) {
		t.Logf("%s: relative L2 %.2e", tap, e)
		if e > 1e-5 {
			t.Errorf("%s: relative L2 %.2e against TF.js, want <= 1e-5", tap, e)
		}
	}

	// The trunk through block_10_project_BN: 317k values, batch-norm
	// statistics included.
	trunk := 0
	for _, tt := range m.Tensors {
		if tt.Name == "block_11_expand.weight" {
			break
		}
		trunk += len(tt.Data)
	}
	if trunk < 316_000 || trunk > 318_000 {
		t.Errorf("the trunk through block_10_project_BN has %d weight values, want about 317k", trunk)
	}

	perturbed := map[string]func([]graphs.Layer){
		"PyTorch's batch-norm epsilon (1e-5)": func(ls []graphs.Layer) {
			for i := range ls {
				if ls[i].Op == graphs.OpBatchNorm {
					ls[i].Epsilon = 1e-5
				}
			}
		},
		"ZeroPadding2D at the top left": func(ls []graphs.Layer) {
			for i := range ls {
				if ls[i].Op == graphs.OpZeroPad {
					p := ls[i].Pad
					ls[i].Pad = [4]int{p[1], p[0], p[3], p[2]}
				}
			}
		},
	}
	for name, change := range perturbed {
		t.Run(name, func(t *testing.T) {
			layers := append([]graphs.Layer(nil), m.Layers...)
			change(layers)
			if e := worst(t, layers)["block_10_project_BN"]; e <= 1e-5 {
				t.Fatalf("with %s the import still matches TF.js (relative L2 %.2e): the test cannot see it", name, e)
			}
		})
	}
}

// vol is an NHWC image (one of them) for the reference below.
type vol struct {
	h, w, c int
	v       []float64
}

func newVol(h, w, c int) vol { return vol{h, w, c, make([]float64, h*w*c)} }

func (a vol) at(y, x, c int) float64 { return a.v[(y*a.w+x)*a.c+c] }

// samePad is TensorFlow's: any odd extra row or column goes at the end.
func samePad(in, k, s int) (before, out int) {
	out = (in + s - 1) / s
	total := max((out-1)*s+k-in, 0)
	return total / 2, out
}

// window runs f over each output cell's window, with TF "same" padding or
// none; f gets the in-bounds input positions.
func window(a vol, k, s int, same bool, f func(y, x int, cells [][2]int)) (oh, ow int) {
	top, left := 0, 0
	if same {
		top, oh = samePad(a.h, k, s)
		left, ow = samePad(a.w, k, s)
	} else {
		oh, ow = (a.h-k)/s+1, (a.w-k)/s+1
	}
	for y := range oh {
		for x := range ow {
			var cells [][2]int
			for i := range k {
				for j := range k {
					yy, xx := y*s-top+i, x*s-left+j
					if yy >= 0 && yy < a.h && xx >= 0 && xx < a.w {
						cells = append(cells, [2]int{yy, xx})
					} else {
						cells = append(cells, [2]int{-1, -1})
					}
				}
			}
			f(y, x, cells)
		}
	}
	return oh, ow
}

// smallReference evaluates tfjstest.Small in NHWC, straight from Keras'
// definitions, and returns every layer's output.
func smallReference(m tfjstest.Model, x vol) map[string]vol {
	W := map[string][]float32{}
	for _, w := range m.Weights {
		W[w.Name] = w.Data
	}
	conv := func(a vol, kernel, bias []float32, k, s, out, mult int, depthwise, same bool) vol {
		var r vol
		oh, ow := window(a, k, s, same, func(int, int, [][2]int) {})
		r = newVol(oh, ow, out)
		window(a, k, s, same, func(y, x int, cells [][2]int) {
			for o := range out {
				var sum float64
				for i, p := range cells {
					if p[0] < 0 {
						continue // zero padding
					}
					ky, kx := i/k, i%k
					if depthwise {
						c, j := o/mult, o%mult
						sum += a.at(p[0], p[1], c) * float64(kernel[((ky*k+kx)*a.c+c)*mult+j])
					} else {
						for c := range a.c {
							sum += a.at(p[0], p[1], c) * float64(kernel[((ky*k+kx)*a.c+c)*out+o])
						}
					}
				}
				if bias != nil {
					sum += float64(bias[o])
				}
				r.v[(y*ow+x)*out+o] = sum
			}
		})
		return r
	}
	pool := func(a vol, max bool) vol {
		oh, ow := window(a, 2, 2, true, func(int, int, [][2]int) {})
		r := newVol(oh, ow, a.c)
		window(a, 2, 2, true, func(y, x int, cells [][2]int) {
			for c := range a.c {
				acc, n := math.Inf(-1), 0.0
				if !max {
					acc = 0
				}
				for _, p := range cells {
					if p[0] < 0 {
						continue // padded cells are not counted
					}
					v := a.at(p[0], p[1], c)
					if max {
						acc = math.Max(acc, v)
					} else {
						acc += v
					}
					n++
				}
				if !max {
					acc /= n
				}
				r.v[(y*ow+x)*a.c+c] = acc
			}
		})
		return r
	}
	mapv := func(a vol, f func(i int, v float64) float64) vol {
		r := newVol(a.h, a.w, a.c)
		for i, v := range a.v {
			r.v[i] = f(i, v)
		}
		return r
	}
	out := map[string]vol{}
	pad := newVol(x.h+1, x.w+1, x.c)
	for y := range x.h {
		for xx := range x.w {
			for c := range x.c {
				pad.v[(y*pad.w+xx)*pad.c+c] = x.at(y, xx, c)
			}
		}
	}
	out["pad"] = pad
	out["conv1"] = mapv(conv(pad, W["conv1/kernel"], W["conv1/bias"], 3, 2, 4, 0, false, true), func(_ int, v float64) float64 { return math.Max(v, 0) })
	out["bn1"] = mapv(out["conv1"], func(i int, v float64) float64 {
		c := i % 4
		return (v-float64(W["bn1/moving_mean"][c]))/math.Sqrt(float64(W["bn1/moving_variance"][c])+0.01) + float64(W["bn1/beta"][c])
	})
	out["dw"] = conv(out["bn1"], W["dw/depthwise_kernel"], W["dw/bias"], 3, 1, 8, 2, true, true)
	out["relu6"] = mapv(out["dw"], func(_ int, v float64) float64 { return math.Min(math.Max(v, 0), 6) })
	out["conv2"] = conv(out["relu6"], W["conv2/kernel"], nil, 1, 1, 8, 0, false, false)
	out["add"] = mapv(out["conv2"], func(i int, v float64) float64 { return v + out["relu6"].v[i] })
	out["avg"], out["maxp"] = pool(out["add"], false), pool(out["add"], true)
	a, b := out["avg"], out["maxp"]
	cat := newVol(a.h, a.w, a.c+b.c)
	for p := range a.h * a.w {
		copy(cat.v[p*cat.c:], a.v[p*a.c:(p+1)*a.c])
		copy(cat.v[p*cat.c+a.c:], b.v[p*b.c:(p+1)*b.c])
	}
	out["cat"] = cat
	out["act"] = mapv(cat, func(_ int, v float64) float64 { return math.Tanh(v) })
	flat := out["act"].v // NHWC order is Keras' Flatten order
	out["flat"], out["drop"] = vol{1, 1, len(flat), flat}, vol{1, 1, len(flat), flat}
	logits := newVol(1, 1, 5)
	var sum float64
	for o := range 5 {
		s := float64(W["dense/bias"][o])
		for i, v := range flat {
			s += v * float64(W["dense/kernel"][i*5+o])
		}
		logits.v[o] = math.Exp(s)
		sum += logits.v[o]
	}
	out["dense"] = mapv(logits, func(_ int, v float64) float64 { return v / sum })
	gap := newVol(1, 1, 16)
	for i, v := range out["act"].v {
		gap.v[i%16] += v / 9
	}
	out["gap"] = gap
	return out
}

// Every layer class, with TensorFlow's conventions (asymmetric "same"
// padding, average pooling that skips padded cells, Flatten's order,
// batch norm without gamma), matches a reference written from Keras'
// definitions, for float32 and uint8-quantised weights.
func TestSmallModelMatchesKerasReference(t *testing.T) {
	for _, quantize := range []bool{false, true} {
		t.Run(map[bool]string{false: "float32", true: "uint8"}[quantize], func(t *testing.T) {
			src := tfjstest.Small()
			src.Quantize = quantize
			dir := t.TempDir()
			if err := src.Write(dir); err != nil {
				t.Fatal(err)
			}
			m, err := tfjs.Load(dir, "")
			if err != nil {
				t.Fatal(err)
			}
			if quantize {
				// The reference sees the weights the importer dequantised.
				src.Weights = dequantised(t, dir)
			}
			x := tfjstest.Random(11, 3*9*9, 0.7)
			in := newVol(9, 9, 3)
			for c := range 3 {
				for p := range 81 {
					in.v[p*3+c] = float64(x[c*81+p])
				}
			}
			want := smallReference(src, in)
			weights := filepath.Join(t.TempDir(), "w.pt")
			var buf bytes.Buffer
			if err := torchfile.WritePlain(&buf, m.Tensors); err != nil {
				t.Fatal(err)
			}
			os.WriteFile(weights, buf.Bytes(), 0o644)
			for name, ref := range want {
				c, err := graphs.NewComparator(graphs.ComparatorSpec{Arch: "graph", Layer: name, Weights: weights,
					Graph: m.Layers, Norm: graphs.NormSigned, OwnSize: 9, InputSize: graphs.InputNative})
				if err != nil {
					t.Fatal(err)
				}
				got, _, err := c.Features(x, 1, 9, 9)
				c.Close()
				if err != nil {
					t.Fatal(err)
				}
				w32 := make([]float32, len(ref.v))
				for i, v := range ref.v {
					w32[i] = float32(v)
				}
				if e := relL2(got, w32, []int{1, ref.h, ref.w, ref.c}); e > 1e-5 {
					t.Errorf("layer %s: relative L2 %.2e against the reference", name, e)
				}
			}
		})
	}
}

// dequantised reads back the weights of a model folder as the importer
// sees them, in Keras' layout.
func dequantised(t *testing.T, dir string) []tfjstest.Weight {
	t.Helper()
	var doc struct {
		WeightsManifest []struct {
			Weights []struct {
				Name         string `json:"name"`
				Shape        []int  `json:"shape"`
				Quantization struct {
					Min, Scale float64
				} `json:"quantization"`
			} `json:"weights"`
		} `json:"weightsManifest"`
	}
	raw, _ := os.ReadFile(filepath.Join(dir, "model.json"))
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	shard, _ := os.ReadFile(filepath.Join(dir, "group1-shard1of1.bin"))
	var out []tfjstest.Weight
	off := 0
	for _, w := range doc.WeightsManifest[0].Weights {
		n := 1
		for _, d := range w.Shape {
			n *= d
		}
		data := make([]float32, n)
		for i := range data {
			data[i] = float32(float64(shard[off+i])*w.Quantization.Scale + w.Quantization.Min)
		}
		off += n
		out = append(out, tfjstest.Weight{Name: w.Name, Shape: w.Shape, Data: data})
	}
	return out
}
