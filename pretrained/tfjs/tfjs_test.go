package tfjs

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/pretrained/tfjs/tfjstest"
)

func TestParseLiteral(t *testing.T) {
	tests := []struct {
		in      string
		want    string // the value as JSON
		rest    string
		wantErr string
	}{
		{in: `{a:1,b:!0,c:!1,d:.5,e:1963169733975448e-20,f:-0,g:null}`, want: `{"a":1,"b":true,"c":false,"d":0.5,"e":0.00001963169733975448,"f":-0,"g":null}`},
		{in: `{"quoted":"x\"y",'single':'it\'s',u:"\u00e9\x41"}`, want: `{"quoted":"x\"y","single":"it's","u":"éA"}`},
		{in: `[1, -2.5e+3 ,[],{}, void 0]})(1)`, want: `[1,-2500,[],{},null]`, rest: `})(1)`},
		{in: `{padding:[[0,1],[0,1]],name:"Conv1_pad"}`, want: `{"name":"Conv1_pad","padding":[[0,1],[0,1]]}`},
		{in: `{a:1`, wantErr: "unterminated object"},
		{in: `{a:"x}`, wantErr: "unterminated string"},
		{in: `{a:foo()}`, wantErr: "unexpected"},
		{in: `{a:!x}`, wantErr: "after '!'"},
		{in: strings.Repeat("[", 300) + strings.Repeat("]", 300), wantErr: "nested too deeply"},
		{in: `{a 1}`, wantErr: "no ':'"},
	}
	for _, tc := range tests {
		t.Run(tc.in[:min(len(tc.in), 30)], func(t *testing.T) {
			v, rest, err := parseLiteral(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(v)
			if string(got) != tc.want || rest != tc.rest {
				t.Fatalf("got %s rest %q, want %s rest %q", got, rest, tc.want, tc.rest)
			}
		})
	}
}

// bundle writes a model as nsfwjs ships it: model.min.js, a browserify
// module exporting the model object, and one .min.js module per shard
// exporting its bytes in base64.
func bundle(t *testing.T, m tfjstest.Model, dir string) {
	t.Helper()
	mj, shard, err := m.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	json.Unmarshal(mj, &doc)
	doc["weightsManifest"].([]any)[0].(map[string]any)["paths"] = []string{"group1-shard1of1"}
	obj, _ := json.Marshal(doc)
	// A minifier's habits: !0 for true.
	js := strings.ReplaceAll(string(obj), "true", "!0")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "model.min.js"), []byte(`!function(e){}({1:[function(e,a,n){a.exports=`+js+`},{}]},{},[1])(1)});`), 0o644)
	os.WriteFile(filepath.Join(dir, "group1-shard1of1.min.js"), []byte(`!function(e){}({1:[function(e,h,n){h.exports="`+
		base64.StdEncoding.EncodeToString(shard)+`"},{}]},{},[1])(1)});`), 0o644)
}

// The three forms a model comes in give the same network.
func TestLoadForms(t *testing.T) {
	src := tfjstest.Small()
	dir := t.TempDir()
	folder, tarball, bundled := filepath.Join(dir, "folder"), filepath.Join(dir, "pkg.tgz"), filepath.Join(dir, "bundle")
	if err := src.Write(folder); err != nil {
		t.Fatal(err)
	}
	if err := src.WriteTarball(tarball, "dist/models/small"); err != nil {
		t.Fatal(err)
	}
	bundle(t, src, bundled)
	want, err := Load(folder, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(want.Layers) != len(src.Layers) || want.InputSize != [2]int{9, 9} {
		t.Fatalf("%d layers, input %v", len(want.Layers), want.InputSize)
	}
	for _, tc := range []struct{ src, model string }{
		{filepath.Join(folder, "model.json"), ""},
		{tarball, "small"},
		{tarball, "dist/models/small"},
		{tarball, ""},
		{bundled, ""},
	} {
		got, err := Load(tc.src, tc.model)
		if err != nil {
			t.Fatalf("%s %q: %v", tc.src, tc.model, err)
		}
		if !reflect.DeepEqual(got.Layers, want.Layers) || !reflect.DeepEqual(got.Tensors, want.Tensors) {
			t.Fatalf("%s %q: a different network", tc.src, tc.model)
		}
	}
	// Every class became its op, with the layouts converted.
	ops := map[string]graphs.Op{}
	for _, l := range want.Layers {
		ops[l.Name] = l.Op
	}
	if ops["dw"] != graphs.OpDepthwiseConv || ops["avg"] != graphs.OpAvgPool || ops["drop"] != graphs.OpIdentity {
		t.Fatalf("ops: %v", ops)
	}
	for _, tt := range want.Tensors {
		if tt.Name == "dw.weight" && fmt.Sprint(tt.Shape) != "[8 1 3 3]" {
			t.Fatalf("depthwise kernel in PyTorch's layout: %v", tt.Shape)
		}
		if tt.Name == "dense.weight" && fmt.Sprint(tt.Shape) != "[5 144]" {
			t.Fatalf("dense kernel in PyTorch's layout: %v", tt.Shape)
		}
	}
	if taps := want.DefaultTaps(); !reflect.DeepEqual(taps, []string{"relu6", "act"}) {
		t.Fatalf("default taps %v, want the last activation at each size", taps)
	}
}

func TestSequential(t *testing.T) {
	m := tfjstest.Model{Sequential: true, Layers: []tfjstest.Layer{
		{Class: "Conv2D", Name: "c", Config: map[string]any{"batch_input_shape": []any{nil, 8, 8, 3}, "filters": 2,
			"kernel_size": []int{3, 3}, "strides": []int{1, 1}, "padding": "valid", "use_bias": false}},
		{Class: "Flatten", Name: "f", Config: map[string]any{}},
		{Class: "Dense", Name: "d", Config: map[string]any{"units": 3, "use_bias": false}},
	}, Weights: []tfjstest.Weight{
		{Name: "c/kernel", Shape: []int{3, 3, 3, 2}, Data: tfjstest.Random(1, 54, 1)},
		{Name: "d/kernel", Shape: []int{72, 3}, Data: tfjstest.Random(2, 216, 1)},
	}}
	dir := t.TempDir()
	if err := m.Write(dir); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Layers) != 4 || got.Layers[0].Op != graphs.OpInput || fmt.Sprint(got.Shapes[3]) != "[3]" {
		t.Fatalf("layers %+v shapes %v", got.Layers, got.Shapes)
	}
}

// Files deepsim cannot use are refused, and the error names the problem.
func TestLoadRefuses(t *testing.T) {
	edit := func(f func(*tfjstest.Model)) tfjstest.Model {
		m := tfjstest.Small()
		f(&m)
		return m
	}
	tests := []struct {
		name  string
		model tfjstest.Model
		after func(dir string) // breaks the written files
		want  string
	}{
		{"unsupported layer class", edit(func(m *tfjstest.Model) {
			m.Layers = append(m.Layers, tfjstest.Layer{Class: "LSTM", Name: "lstm", Config: map[string]any{}, Inbound: []string{"flat"}})
		}), nil, `"lstm" (LSTM): layer class LSTM is not supported`},
		{"unsupported activation", edit(func(m *tfjstest.Model) { m.Layers[11].Config["activation"] = "gelu" }), nil, `activation "gelu"`},
		{"weight shape against the config", edit(func(m *tfjstest.Model) { m.Layers[14].Config["units"] = 6 }), nil,
			`weight "dense/kernel" has shape [144 5], layer "dense"'s config needs [144 6]`},
		{"shapes that do not meet", edit(func(m *tfjstest.Model) { m.Layers[6].Config["filters"] = 7 }), nil,
			`layer "add" (Add): Add of shapes [5 5 7] and [5 5 8]`},
		{"missing weight", edit(func(m *tfjstest.Model) { m.Weights = m.Weights[1:] }), nil, `needs weight "conv1/kernel"`},
		{"stray weight", edit(func(m *tfjstest.Model) {
			m.Weights = append(m.Weights, tfjstest.Weight{Name: "ghost/kernel", Shape: []int{2}, Data: []float32{1, 2}})
		}), nil, `"ghost/kernel" belongs to no layer`},
		{"a layer that reads a later one", edit(func(m *tfjstest.Model) { m.Layers[1].Inbound = []string{"conv1"} }), nil,
			`layer "pad" reads "conv1", which comes later`},
		{"shards shorter than the manifest", tfjstest.Small(), func(dir string) {
			p := filepath.Join(dir, "group1-shard1of1.bin")
			b, _ := os.ReadFile(p)
			os.WriteFile(p, b[:len(b)-4], 0o644)
		}, "the weights manifest describes"},
		{"missing shard", tfjstest.Small(), func(dir string) { os.Remove(filepath.Join(dir, "group1-shard1of1.bin")) }, `weight shard "group1-shard1of1.bin"`},
		{"not a layers model", tfjstest.Small(), func(dir string) {
			os.WriteFile(filepath.Join(dir, "model.json"), []byte(`{"format":"graph-model","modelTopology":{"node":[]}}`), 0o644)
		}, "only layers models"},
		{"garbage model.json", tfjstest.Small(), func(dir string) {
			os.WriteFile(filepath.Join(dir, "model.json"), []byte(`{"modelTopology":`), 0o644)
		}, "model.json"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := tc.model.Write(dir); err != nil {
				t.Fatal(err)
			}
			if tc.after != nil {
				tc.after(dir)
			}
			_, err := Load(dir, "")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestTarballRefuses(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "pkg.tgz")
	if err := tfjstest.Small().WriteTarball(good, "dist/models/small"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(good)
	truncated := filepath.Join(dir, "truncated.tgz")
	os.WriteFile(truncated, b[:len(b)*2/3], 0o644)
	garbage := filepath.Join(dir, "garbage.tgz")
	os.WriteFile(garbage, []byte("not gzip at all"), 0o644)
	tests := []struct{ src, model, want string }{
		{truncated, "small", "truncated"},
		{garbage, "", "not a gzip tarball"},
		{good, "other", `no model folder "other"; it has: package/dist/models/small`},
	}
	for _, tc := range tests {
		if _, err := Load(tc.src, tc.model); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s %q: err = %v, want %q", filepath.Base(tc.src), tc.model, err, tc.want)
		}
	}
}
