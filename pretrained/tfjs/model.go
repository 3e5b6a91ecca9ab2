// Package tfjs reads TensorFlow.js "layers" models, Keras models as
// tensorflowjs_converter writes them, into deepsim's graph form: the layer
// graph that graphs builds in libtorch, and the weights in PyTorch's
// layouts.
//
// It reads a model folder (model.json and binary weight shards), and the
// bundled form that npm packages such as nsfwjs ship: model.min.js, a
// minified JavaScript module holding the same object, and weight shards
// that each wrap one base64 string. It runs no JavaScript. Models come
// from other people: every size is checked before memory is allocated for
// it, and any layer class it does not know is refused by name.
package tfjs

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/internal/torchfile"
)

// Model is a TF.js layers model in deepsim's graph form.
type Model struct {
	Name string
	// InputSize is the input's height and width the model was built for;
	// -1 where it is not fixed.
	InputSize [2]int
	Layers    []graphs.Layer
	// Shapes are the layers' output shapes at InputSize, without the batch:
	// [height, width, channels] or [features].
	Shapes [][]int
	// Tensors are the weights, named and laid out as graphs.Layer says.
	Tensors []torchfile.Tensor
}

// Params is the number of weight values.
func (m *Model) Params() int {
	n := 0
	for _, t := range m.Tensors {
		n += len(t.Data)
	}
	return n
}

// DefaultTaps are the layers a perceptual judge compares by default, one
// per scale as LPIPS does: at each spatial size, the last ReLU or
// activation layer before the size changes.
func (m *Model) DefaultTaps() []string {
	var taps []string
	last := map[[2]int]string{}
	var order [][2]int
	for i, l := range m.Layers {
		s := m.Shapes[i]
		if len(s) != 3 || (l.Op != graphs.OpReLU && l.Op != graphs.OpActivation) {
			continue
		}
		k := [2]int{s[0], s[1]}
		if _, seen := last[k]; !seen {
			order = append(order, k)
		}
		last[k] = l.Name
	}
	for _, k := range order {
		taps = append(taps, last[k])
	}
	return taps
}

// modelFile is model.json, or the object model.min.js exports.
type modelFile struct {
	Format          string          `json:"format"`
	ModelTopology   json.RawMessage `json:"modelTopology"`
	WeightsManifest []manifestGroup `json:"weightsManifest"`
}

type manifestGroup struct {
	Paths   []string     `json:"paths"`
	Weights []weightInfo `json:"weights"`
}

type weightInfo struct {
	Name         string `json:"name"`
	Shape        []int  `json:"shape"`
	DType        string `json:"dtype"`
	Quantization *struct {
		DType string  `json:"dtype"`
		Min   float64 `json:"min"`
		Scale float64 `json:"scale"`
	} `json:"quantization"`
}

// Limits on what a model may ask for.
const (
	maxModelFile = 64 << 20  // model.json or model.min.js
	maxWeights   = 1 << 30   // bytes of all shards together
	maxValues    = 256 << 20 // weight values
	maxLayers    = 1 << 16   // layers in the topology
	maxDim       = 1 << 20   // any one dimension
	maxTensor    = 1 << 28   // values in one tensor
	maxShards    = 1 << 12   // shard files
	maxShardFile = 256 << 20 // one shard file
)

// Load reads a TF.js layers model from src: a folder holding model.json
// (or model.min.js) and its weight shards, a model.json file, or an npm
// tarball (.tgz), where model names the model's folder inside it (a
// suffix of its path is enough; it may be empty when the tarball holds one
// model).
func Load(src, model string) (*Model, error) {
	f, err := openFolder(src, model)
	if err != nil {
		return nil, err
	}
	defer f.close()
	mf, err := readModelFile(f)
	if err != nil {
		return nil, err
	}
	m, specs, err := parseTopology(mf.ModelTopology)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.where(), err)
	}
	weights, err := readWeights(f, mf.WeightsManifest)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.where(), err)
	}
	if err := m.attach(specs, weights); err != nil {
		return nil, fmt.Errorf("%s: %w", f.where(), err)
	}
	return m, nil
}

func readModelFile(f folder) (*modelFile, error) {
	var mf modelFile
	if b, err := f.read("model.json", maxModelFile); err == nil {
		if err := json.Unmarshal(b, &mf); err != nil {
			return nil, fmt.Errorf("%s: model.json: %w", f.where(), err)
		}
	} else if b, err2 := f.read("model.min.js", maxModelFile); err2 == nil {
		v, err := exported(string(b))
		if err != nil {
			return nil, fmt.Errorf("%s: model.min.js: %w", f.where(), err)
		}
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(raw, &mf); err != nil {
			return nil, fmt.Errorf("%s: model.min.js: %w", f.where(), err)
		}
	} else {
		return nil, fmt.Errorf("%s: %w", f.where(), errors.Join(err, err2))
	}
	if len(mf.ModelTopology) == 0 {
		return nil, fmt.Errorf("%s: no modelTopology: not a TF.js layers model", f.where())
	}
	if mf.Format != "" && mf.Format != "layers-model" {
		return nil, fmt.Errorf("%s: format %q: only layers models (Keras) are supported, not graph models", f.where(), mf.Format)
	}
	return &mf, nil
}

// exported finds the object a bundled JavaScript module exports
// (exports={...}) and reads it as a literal.
func exported(js string) (any, error) {
	i := strings.Index(js, "exports={")
	if i < 0 {
		return nil, errors.New("no exported object (exports={...})")
	}
	v, _, err := parseLiteral(js[i+len("exports="):])
	return v, err
}

// parseTopology reads a Keras functional or Sequential model config.
func parseTopology(raw json.RawMessage) (*Model, [][]weightSpec, error) {
	var top struct {
		ModelConfig *struct {
			ClassName string          `json:"class_name"`
			Config    json.RawMessage `json:"config"`
		} `json:"model_config"`
		ClassName string          `json:"class_name"`
		Config    json.RawMessage `json:"config"`
	}
	if err := json.Unmarshal(raw, &top); err != nil {
		return nil, nil, fmt.Errorf("modelTopology: %w", err)
	}
	class, cfg := top.ClassName, top.Config
	if top.ModelConfig != nil {
		class, cfg = top.ModelConfig.ClassName, top.ModelConfig.Config
	}
	var body struct {
		Name   string       `json:"name"`
		Layers []kerasLayer `json:"layers"`
	}
	switch class {
	case "Model", "Functional":
		if err := json.Unmarshal(cfg, &body); err != nil {
			return nil, nil, fmt.Errorf("model_config: %w", err)
		}
	case "Sequential":
		// Keras writes a Sequential's config as {name, layers} or, before
		// 2.2.3, as the bare list of layers.
		if err := json.Unmarshal(cfg, &body); err != nil {
			if err := json.Unmarshal(cfg, &body.Layers); err != nil {
				return nil, nil, fmt.Errorf("model_config: %w", err)
			}
		}
	default:
		return nil, nil, fmt.Errorf("model class %q: want a Keras Model or Sequential", class)
	}
	if len(body.Layers) == 0 || len(body.Layers) > maxLayers {
		return nil, nil, fmt.Errorf("%d layers", len(body.Layers))
	}
	m := &Model{Name: body.Name, InputSize: [2]int{-1, -1}}
	var specs [][]weightSpec
	index := map[string]int{}
	add := func(kl kerasLayer, inputs []int) error {
		var c layerConfig
		if err := json.Unmarshal(kl.Config, &c); err != nil {
			return fmt.Errorf("layer %q (%s): %w", kl.Name, kl.ClassName, err)
		}
		name := kl.Name
		if name == "" {
			name = c.Name
		}
		if name == "" || strings.ContainsAny(name, "./+:") {
			return fmt.Errorf("layer name %q: deepsim names layers without '.', '/', '+' or ':'", name)
		}
		if _, dup := index[name]; dup {
			return fmt.Errorf("two layers are named %q", name)
		}
		ins := make([]shape, len(inputs))
		for i, j := range inputs {
			ins[i] = m.Shapes[j]
		}
		cv, err := convert(kl.ClassName, c, ins)
		if err != nil {
			return fmt.Errorf("layer %q (%s): %w", name, kl.ClassName, err)
		}
		for _, d := range cv.out {
			if d > maxDim {
				return fmt.Errorf("layer %q: output %v is too large", name, cv.out)
			}
		}
		cv.layer.Name, cv.layer.Inputs = name, inputs
		index[name] = len(m.Layers)
		m.Layers = append(m.Layers, cv.layer)
		m.Shapes = append(m.Shapes, cv.out)
		specs = append(specs, cv.weights)
		return nil
	}
	if class == "Sequential" {
		first := body.Layers[0]
		if first.ClassName != "InputLayer" {
			// The first layer carries the input shape.
			var c layerConfig
			if err := json.Unmarshal(first.Config, &c); err != nil {
				return nil, nil, err
			}
			in, _ := json.Marshal(map[string]any{"batch_input_shape": c.BatchInputShape})
			if err := add(kerasLayer{ClassName: "InputLayer", Name: "input", Config: in}, nil); err != nil {
				return nil, nil, err
			}
		}
		for _, kl := range body.Layers {
			var inputs []int
			if len(m.Layers) > 0 {
				inputs = []int{len(m.Layers) - 1}
			}
			if err := add(kl, inputs); err != nil {
				return nil, nil, err
			}
		}
	} else {
		for _, kl := range body.Layers {
			names, err := inboundNames(kl)
			if err != nil {
				return nil, nil, err
			}
			var inputs []int
			for _, n := range names {
				j, ok := index[n]
				if !ok {
					return nil, nil, fmt.Errorf("layer %q reads %q, which comes later or not at all", kl.Name, n)
				}
				inputs = append(inputs, j)
			}
			if len(inputs) > graphs.MaxInputs {
				return nil, nil, fmt.Errorf("layer %q has %d inputs, at most %d", kl.Name, len(inputs), graphs.MaxInputs)
			}
			if err := add(kl, inputs); err != nil {
				return nil, nil, err
			}
		}
	}
	if m.Layers[0].Op != graphs.OpInput {
		return nil, nil, errors.New("the first layer is not the input")
	}
	for _, l := range m.Layers[1:] {
		if l.Op == graphs.OpInput {
			return nil, nil, errors.New("models with several inputs are not supported")
		}
	}
	if s := m.Shapes[0]; len(s) == 3 {
		m.InputSize = [2]int{s[0], s[1]}
	}
	return m, specs, nil
}

// inboundNames are the layers a functional model's layer reads, from Keras
// 2's inbound_nodes: [[[name, node_index, tensor_index, kwargs], ...]].
func inboundNames(kl kerasLayer) ([]string, error) {
	var nodes [][][]any
	if len(kl.InboundNodes) > 0 {
		if err := json.Unmarshal(kl.InboundNodes, &nodes); err != nil {
			return nil, fmt.Errorf("layer %q: inbound_nodes are not in Keras 2's form: %w", kl.Name, err)
		}
	}
	switch len(nodes) {
	case 0:
		return nil, nil
	case 1:
	default:
		return nil, fmt.Errorf("layer %q is called %d times: shared layers are not supported", kl.Name, len(nodes))
	}
	var names []string
	for _, ref := range nodes[0] {
		if len(ref) < 3 {
			return nil, fmt.Errorf("layer %q: bad inbound node %v", kl.Name, ref)
		}
		name, ok := ref[0].(string)
		node, _ := ref[1].(float64)
		tensor, _ := ref[2].(float64)
		if !ok || node != 0 || tensor != 0 {
			return nil, fmt.Errorf("layer %q: inbound node %v: only single-output layers called once are supported", kl.Name, ref)
		}
		names = append(names, name)
	}
	return names, nil
}

// weight is one dequantised tensor from the manifest, in Keras' layout.
type weight struct {
	shape []int
	data  []float32
	used  bool
}

// readWeights reads every manifest group's shards, in path order and
// joined, since tensors cross shard boundaries, and dequantises the
// tensors in manifest order. The byte count must be exact.
func readWeights(f folder, groups []manifestGroup) (map[string]*weight, error) {
	out := map[string]*weight{}
	total, values := 0, 0
	for g, group := range groups {
		if len(group.Paths) > maxShards {
			return nil, fmt.Errorf("weights group %d: %d shards", g, len(group.Paths))
		}
		var buf []byte
		for _, p := range group.Paths {
			b, err := readShard(f, p)
			if err != nil {
				return nil, err
			}
			if total += len(b); total > maxWeights {
				return nil, fmt.Errorf("the weight shards hold more than %d bytes", maxWeights)
			}
			buf = append(buf, b...)
		}
		need := 0
		for _, w := range group.Weights {
			n, err := elements(w.Shape)
			if err != nil {
				return nil, fmt.Errorf("weight %q: %w", w.Name, err)
			}
			size, err := bytesPer(w)
			if err != nil {
				return nil, fmt.Errorf("weight %q: %w", w.Name, err)
			}
			need += n * size
			if values += n; values > maxValues {
				return nil, fmt.Errorf("the manifest describes more than %d weight values", maxValues)
			}
		}
		if need != len(buf) {
			return nil, fmt.Errorf("the weights manifest describes %d bytes in group %d, its shards %v hold %d", need, g, group.Paths, len(buf))
		}
		off := 0
		for _, w := range group.Weights {
			n, _ := elements(w.Shape)
			size, _ := bytesPer(w)
			data := dequantise(buf[off:off+n*size], w)
			off += n * size
			name := variableName(w.Name)
			if _, dup := out[name]; dup {
				return nil, fmt.Errorf("the manifest lists weight %q twice", w.Name)
			}
			out[name] = &weight{shape: w.Shape, data: data}
		}
	}
	return out, nil
}

// readShard reads one weight file: raw bytes (.bin, as the converter
// writes them), or a JavaScript module that wraps them in base64 (as
// nsfwjs ships them, path + ".min.js").
func readShard(f folder, path string) ([]byte, error) {
	if strings.Contains(path, "..") || strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("weight shard path %q leaves the model folder", path)
	}
	for _, name := range []string{path, path + ".min.js", path + ".js"} {
		b, err := f.read(name, maxShardFile)
		if errors.Is(err, errNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if !strings.HasSuffix(name, ".js") {
			return b, nil
		}
		s := string(b)
		i := strings.Index(s, `exports="`)
		if i < 0 {
			return nil, fmt.Errorf("%s: no exported base64 string (exports=\"...\")", name)
		}
		s = s[i+len(`exports="`):]
		j := strings.IndexByte(s, '"')
		if j < 0 {
			return nil, fmt.Errorf("%s: unterminated base64 string", name)
		}
		raw, err := base64.StdEncoding.DecodeString(s[:j])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return raw, nil
	}
	return nil, fmt.Errorf("weight shard %q: %w", path, errNotFound)
}

func elements(shape []int) (int, error) {
	n := 1
	for _, d := range shape {
		if d < 0 || d > maxDim {
			return 0, fmt.Errorf("bad dimension in shape %v", shape)
		}
		if n *= d; n > maxTensor {
			return 0, fmt.Errorf("shape %v is too large", shape)
		}
	}
	return n, nil
}

func bytesPer(w weightInfo) (int, error) {
	if w.DType != "float32" {
		return 0, fmt.Errorf("dtype %q: only float32 weights are supported", w.DType)
	}
	if w.Quantization == nil {
		return 4, nil
	}
	switch w.Quantization.DType {
	case "uint8":
		return 1, nil
	case "uint16", "float16":
		return 2, nil
	}
	return 0, fmt.Errorf("quantization dtype %q is not supported", w.Quantization.DType)
}

// dequantise turns a tensor's bytes into float32, as TF.js does: affine
// quantisation gives float32(q*scale + min), computed in float64.
func dequantise(b []byte, w weightInfo) []float32 {
	q := w.Quantization
	switch {
	case q == nil:
		out := make([]float32, len(b)/4)
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		return out
	case q.DType == "uint8":
		out := make([]float32, len(b))
		for i, v := range b {
			out[i] = float32(float64(v)*q.Scale + q.Min)
		}
		return out
	case q.DType == "uint16":
		out := make([]float32, len(b)/2)
		for i := range out {
			out[i] = float32(float64(binary.LittleEndian.Uint16(b[2*i:]))*q.Scale + q.Min)
		}
		return out
	default: // float16
		out := make([]float32, len(b)/2)
		for i := range out {
			out[i] = halfToFloat(binary.LittleEndian.Uint16(b[2*i:]))
		}
		return out
	}
}

func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		f := float32(frac) / 1024 / 16384
		if sign != 0 {
			return -f
		}
		return f
	case exp == 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
}

// variableName is a manifest weight's layer/variable part: converters may
// prefix the model's name and suffix ":0".
func variableName(name string) string {
	name = strings.TrimSuffix(name, ":0")
	parts := strings.Split(name, "/")
	if len(parts) >= 2 {
		return parts[len(parts)-2] + "/" + parts[len(parts)-1]
	}
	return name
}

// attach gives every layer the weights its config needs, checked against
// the manifest's shapes and converted to PyTorch's layouts. A weight no
// layer takes is an error.
func (m *Model) attach(specs [][]weightSpec, weights map[string]*weight) error {
	for i, l := range m.Layers {
		for _, s := range specs[i] {
			key := l.Name + "/" + s.variable
			w, ok := weights[key]
			if !ok {
				return fmt.Errorf("layer %q needs weight %q, which the manifest lacks", l.Name, key)
			}
			if fmt.Sprint(w.shape) != fmt.Sprint(s.shape) {
				return fmt.Errorf("weight %q has shape %v, layer %q's config needs %v", key, w.shape, l.Name, s.shape)
			}
			w.used = true
			data, shape := w.data, w.shape
			if s.convert != nil {
				data, shape = s.convert(data, shape)
			}
			m.Tensors = append(m.Tensors, torchfile.Tensor{Name: l.Name + "." + s.param, Shape: shape, Data: data})
		}
	}
	for name, w := range weights {
		if !w.used {
			return fmt.Errorf("weight %q belongs to no layer of the model", name)
		}
	}
	return nil
}
