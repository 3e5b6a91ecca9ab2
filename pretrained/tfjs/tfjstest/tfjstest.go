// Package tfjstest writes small TF.js layers models, as
// tensorflowjs_converter would, for tests: model.json and one binary
// weight shard in a folder, or the same inside an npm-style tarball.
package tfjstest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
)

// Layer is one Keras layer: its class, name, config and the layers it
// reads (functional models).
type Layer struct {
	Class   string
	Name    string
	Config  map[string]any
	Inbound []string
}

// Weight is one tensor in Keras' layout, named LAYER/VARIABLE.
type Weight struct {
	Name  string
	Shape []int
	Data  []float32
}

// Model is a small Keras model.
type Model struct {
	Layers     []Layer
	Weights    []Weight
	Sequential bool
	// Quantize stores the weights as uint8 with a per-tensor min and
	// scale, as the converter's --quantize_uint8 does.
	Quantize bool
}

// JSON returns model.json and the weight shard's bytes.
func (m Model) JSON() (modelJSON, shard []byte, err error) {
	var layers []map[string]any
	for _, l := range m.Layers {
		cfg := map[string]any{"name": l.Name}
		for k, v := range l.Config {
			cfg[k] = v
		}
		entry := map[string]any{"class_name": l.Class, "name": l.Name, "config": cfg}
		if !m.Sequential {
			nodes := []any{}
			if len(l.Inbound) > 0 {
				var refs []any
				for _, in := range l.Inbound {
					refs = append(refs, []any{in, 0, 0, map[string]any{}})
				}
				nodes = append(nodes, refs)
			}
			entry["inbound_nodes"] = nodes
		}
		layers = append(layers, entry)
	}
	class := "Model"
	if m.Sequential {
		class = "Sequential"
	}
	var specs []map[string]any
	var buf bytes.Buffer
	for _, w := range m.Weights {
		spec := map[string]any{"name": w.Name, "shape": w.Shape, "dtype": "float32"}
		if m.Quantize {
			lo, hi := w.Data[0], w.Data[0]
			for _, v := range w.Data {
				lo, hi = min(lo, v), max(hi, v)
			}
			scale := float64(hi-lo) / 255
			if scale == 0 {
				scale = 1
			}
			spec["quantization"] = map[string]any{"dtype": "uint8", "min": float64(lo), "scale": scale}
			for _, v := range w.Data {
				buf.WriteByte(uint8(math.Round((float64(v) - float64(lo)) / scale)))
			}
		} else {
			binary.Write(&buf, binary.LittleEndian, w.Data)
		}
		specs = append(specs, spec)
	}
	doc := map[string]any{
		"format":          "layers-model",
		"modelTopology":   map[string]any{"keras_version": "2.2.4", "backend": "tensorflow", "model_config": map[string]any{"class_name": class, "config": map[string]any{"name": "test", "layers": layers}}},
		"weightsManifest": []any{map[string]any{"paths": []string{"group1-shard1of1.bin"}, "weights": specs}},
	}
	modelJSON, err = json.Marshal(doc)
	return modelJSON, buf.Bytes(), err
}

// Write writes model.json and group1-shard1of1.bin into dir.
func (m Model) Write(dir string) error {
	mj, shard, err := m.JSON()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "model.json"), mj, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "group1-shard1of1.bin"), shard, 0o644)
}

// WriteTarball writes an npm-style tarball holding the model under
// package/FOLDER.
func (m Model) WriteTarball(path, folder string) error {
	mj, shard, err := m.JSON()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, data := range map[string][]byte{"model.json": mj, "group1-shard1of1.bin": shard} {
		h := &tar.Header{Name: "package/" + folder + "/" + name, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := gz.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// Random returns n values from a seeded normal distribution, times scale.
func Random(seed uint64, n int, scale float32) []float32 {
	r := rand.New(rand.NewPCG(seed, 7))
	out := make([]float32, n)
	for i := range out {
		out[i] = float32(r.NormFloat64()) * scale
	}
	return out
}

// Small is a 9x9 functional model that uses every layer class deepsim
// imports, with odd sizes so that TensorFlow's "same" padding is
// asymmetric and average pooling meets padded cells.
func Small() Model {
	l := func(class, name string, cfg map[string]any, in ...string) Layer {
		return Layer{Class: class, Name: name, Config: cfg, Inbound: in}
	}
	m := Model{Layers: []Layer{
		l("InputLayer", "input_1", map[string]any{"batch_input_shape": []any{nil, 9, 9, 3}, "dtype": "float32"}),
		l("ZeroPadding2D", "pad", map[string]any{"padding": [][]int{{0, 1}, {0, 1}}}, "input_1"),
		l("Conv2D", "conv1", map[string]any{"filters": 4, "kernel_size": []int{3, 3}, "strides": []int{2, 2},
			"padding": "same", "activation": "relu", "use_bias": true}, "pad"),
		l("BatchNormalization", "bn1", map[string]any{"axis": -1, "epsilon": 0.01, "scale": false, "center": true}, "conv1"),
		l("DepthwiseConv2D", "dw", map[string]any{"kernel_size": []int{3, 3}, "strides": []int{1, 1}, "padding": "same",
			"depth_multiplier": 2, "activation": "linear", "use_bias": true}, "bn1"),
		l("ReLU", "relu6", map[string]any{"max_value": 6.0, "negative_slope": 0.0, "threshold": 0.0}, "dw"),
		l("Conv2D", "conv2", map[string]any{"filters": 8, "kernel_size": []int{1, 1}, "strides": []int{1, 1},
			"padding": "valid", "activation": "linear", "use_bias": false}, "relu6"),
		l("Add", "add", map[string]any{}, "conv2", "relu6"),
		l("AveragePooling2D", "avg", map[string]any{"pool_size": []int{2, 2}, "strides": []int{2, 2}, "padding": "same"}, "add"),
		l("MaxPooling2D", "maxp", map[string]any{"pool_size": []int{2, 2}, "strides": []int{2, 2}, "padding": "same"}, "add"),
		l("Concatenate", "cat", map[string]any{"axis": -1}, "avg", "maxp"),
		l("Activation", "act", map[string]any{"activation": "tanh"}, "cat"),
		l("Flatten", "flat", map[string]any{}, "act"),
		l("Dropout", "drop", map[string]any{"rate": 0.5}, "flat"),
		l("Dense", "dense", map[string]any{"units": 5, "activation": "softmax", "use_bias": true}, "drop"),
		l("GlobalAveragePooling2D", "gap", map[string]any{}, "act"),
	}}
	w := func(name string, scale float32, shape ...int) {
		n := 1
		for _, d := range shape {
			n *= d
		}
		m.Weights = append(m.Weights, Weight{Name: name, Shape: shape, Data: Random(uint64(len(m.Weights)+1), n, scale)})
	}
	w("conv1/kernel", 0.4, 3, 3, 3, 4)
	w("conv1/bias", 0.1, 4)
	w("bn1/beta", 0.1, 4)
	w("bn1/moving_mean", 0.2, 4)
	m.Weights = append(m.Weights, Weight{Name: "bn1/moving_variance", Shape: []int{4}, Data: []float32{0.5, 1, 2, 0.01}})
	w("dw/depthwise_kernel", 0.5, 3, 3, 4, 2)
	w("dw/bias", 0.1, 8)
	w("conv2/kernel", 0.5, 1, 1, 8, 8)
	w("dense/kernel", 0.2, 144, 5)
	w("dense/bias", 0.1, 5)
	return m
}
