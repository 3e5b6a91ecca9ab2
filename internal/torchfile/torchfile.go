// Package torchfile reads and writes state dicts in the format of Python's
// torch.save (PyTorch 1.6 and later): a zip archive holding a pickled
// OrderedDict of tensors and one raw little-endian file per storage.
//
// Rewrite turns a state dict as Python writes it into the plain dict pickle
// that libtorch's reader takes; WritePlain writes tensors in that form.
// Write writes float32 tensors exactly as Python would, for tests.
package torchfile

import (
	"encoding/binary"
	"io"
	"math"
	"strconv"
)

// Tensor is one named float32 tensor. Data may hold more values than Shape
// needs, as a view of a larger storage does.
type Tensor struct {
	Name  string
	Shape []int
	Data  []float32
}

// Write writes float32 tensors exactly as Python's
// torch.save(model.state_dict()) does: an OrderedDict, memoised globals,
// SETITEM for a single entry, and a BUILD that sets _metadata.
func Write(w io.Writer, tensors []Tensor) error {
	entries, storages := layout(tensors)
	return writeArchive(w, pythonPickle(entries), entries, fromMemory(storages))
}

// WritePlain writes float32 tensors as a plain dict, the form that both
// libtorch's reader and Python's torch.load take.
func WritePlain(w io.Writer, tensors []Tensor) error {
	entries, storages := layout(tensors)
	return writeArchive(w, plainPickle(entries), entries, fromMemory(storages))
}

// WriteRecords writes tensor records and storages exactly as given, in the
// plain dict form, without checking that they agree: for files that must
// be inconsistent, such as the tests' hostile ones.
func WriteRecords(w io.Writer, entries []Entry, storages map[string][]byte) error {
	return writeArchive(w, plainPickle(entries), entries, fromMemory(storages))
}

func fromMemory(storages map[string][]byte) func(Entry, io.Writer) error {
	return func(e Entry, w io.Writer) error {
		_, err := w.Write(storages[e.Key])
		return err
	}
}

// layout gives each tensor a storage of its own, little-endian.
func layout(tensors []Tensor) ([]Entry, map[string][]byte) {
	var entries []Entry
	storages := map[string][]byte{}
	for i, t := range tensors {
		key := strconv.Itoa(i)
		raw := make([]byte, 4*len(t.Data))
		for j, v := range t.Data {
			binary.LittleEndian.PutUint32(raw[4*j:], math.Float32bits(v))
		}
		storages[key] = raw
		entries = append(entries, Entry{Name: t.Name, StorageType: "FloatStorage", Key: key,
			Location: "cpu", Numel: len(t.Data), Shape: t.Shape, Stride: contiguousStrides(t.Shape)})
	}
	return entries, storages
}

// pythonPickle is protocol 2 as Python's pickler writes a state dict.
func pythonPickle(entries []Entry) []byte {
	var p pickler
	p.WriteString("\x80\x02ccollections\nOrderedDict\nq\x00)R")
	p.WriteString("q\x01")
	if len(entries) != 1 {
		p.WriteByte('(')
	}
	for _, e := range entries {
		p.tensor(e, func() { p.WriteString("h\x00)R") })
	}
	if len(entries) == 1 {
		p.WriteByte('s')
	} else {
		p.WriteByte('u')
	}
	// state = {"_metadata": OrderedDict({"": {"version": 1}})}
	p.WriteString("}")
	p.str("_metadata")
	p.WriteString("h\x00)R")
	p.str("")
	p.WriteString("}")
	p.str("version")
	p.WriteString("K\x01sssb.")
	return p.Bytes()
}
func contiguousStrides(shape []int) []int {
	s := make([]int, len(shape))
	acc := 1
	for i := len(shape) - 1; i >= 0; i-- {
		s[i] = acc
		acc *= shape[i]
	}
	return s
}

// Numel is the number of values a shape holds.
func Numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}
