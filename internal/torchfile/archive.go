package torchfile

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"path"
	"strings"
)

// Entry is one tensor of a state dict as torch.save records it: a view
// (offset, shape, stride) of a storage kept in the archive under Key.
type Entry struct {
	Name         string
	StorageType  string // e.g. FloatStorage
	Key          string
	Location     string
	Numel        int
	Offset       int
	Shape        []int
	Stride       []int
	RequiresGrad bool
}

// itemSizes are the bytes per value of the storage types a state dict may
// hold.
var itemSizes = map[string]int64{
	"FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2, "BFloat16Storage": 2,
	"LongStorage": 8, "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1,
	"ByteStorage": 1, "BoolStorage": 1,
}

// maxEntries bounds the files of an archive: a state dict has one per
// tensor and a few more.
const maxEntries = 1 << 17

// check reports the first way a tensor record reaches outside its storage:
// the view (offset, sizes, strides) must lie within the storage's values,
// and the storage's record must hold exactly its values' bytes.
func (e Entry) check(recordBytes int64) error {
	item, ok := itemSizes[e.StorageType]
	if !ok {
		return fmt.Errorf("tensor %q: storage type %q is not supported", e.Name, e.StorageType)
	}
	if e.Numel < 0 || int64(e.Numel) > math.MaxInt64/item {
		return fmt.Errorf("tensor %q: storage of %d values", e.Name, e.Numel)
	}
	if want := int64(e.Numel) * item; recordBytes != want {
		return fmt.Errorf("tensor %q: its storage %s holds %d bytes, its record says %d values of %d bytes",
			e.Name, e.Key, recordBytes, e.Numel, item)
	}
	if len(e.Shape) != len(e.Stride) {
		return fmt.Errorf("tensor %q: %d sizes but %d strides", e.Name, len(e.Shape), len(e.Stride))
	}
	if e.Offset < 0 {
		return fmt.Errorf("tensor %q: negative storage offset %d", e.Name, e.Offset)
	}
	// The last value the view reads, in overflow-safe steps.
	last := int64(e.Offset)
	for i, n := range e.Shape {
		st := e.Stride[i]
		if n < 0 || st < 0 {
			return fmt.Errorf("tensor %q: size %d, stride %d", e.Name, n, st)
		}
		if n == 0 {
			return nil // no values: nothing to read
		}
		if int64(n-1) > 0 && int64(st) > (math.MaxInt64-last)/int64(n-1) {
			return fmt.Errorf("tensor %q: sizes %v and strides %v reach beyond any storage", e.Name, e.Shape, e.Stride)
		}
		last += int64(n-1) * int64(st)
	}
	if last >= int64(e.Numel) {
		return fmt.Errorf("tensor %q: offset %d, sizes %v and strides %v reach value %d of a storage of %d",
			e.Name, e.Offset, e.Shape, e.Stride, last, e.Numel)
	}
	return nil
}

// archive is a torch.save zip, its tensors checked against their storages.
type archive struct {
	dir     string
	files   map[string]*zip.File
	entries []Entry
}

func openArchive(r io.ReaderAt, size int64) (*archive, error) {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil, fmt.Errorf("not a torch.save zip archive: %w", err)
	}
	if len(zr.File) > maxEntries {
		return nil, fmt.Errorf("the archive has %d files, more than a state dict needs", len(zr.File))
	}
	a := &archive{files: map[string]*zip.File{}}
	var pkl *zip.File
	for _, f := range zr.File {
		a.files[f.Name] = f
		if strings.HasSuffix(f.Name, "/data.pkl") {
			pkl = f
		}
	}
	if pkl == nil {
		return nil, fmt.Errorf("archive holds no data.pkl: not a torch.save file")
	}
	if pkl.UncompressedSize64 > MaxPickle {
		return nil, fmt.Errorf("data.pkl holds %d bytes, more than the %d a state dict needs", pkl.UncompressedSize64, MaxPickle)
	}
	a.dir = path.Dir(pkl.Name)
	code, err := readAll(pkl, MaxPickle)
	if err != nil {
		return nil, err
	}
	if a.entries, err = parseStateDict(code); err != nil {
		return nil, fmt.Errorf("data.pkl: %w", err)
	}
	for _, e := range a.entries {
		f := a.storage(e)
		if f == nil {
			return nil, fmt.Errorf("tensor %q: storage %s is missing from the archive", e.Name, e.Key)
		}
		if f.UncompressedSize64 > math.MaxInt64 {
			return nil, fmt.Errorf("tensor %q: storage %s claims %d bytes", e.Name, e.Key, f.UncompressedSize64)
		}
		if err := e.check(int64(f.UncompressedSize64)); err != nil {
			return nil, err
		}
	}
	return a, nil
}

func (a *archive) storage(e Entry) *zip.File { return a.files[a.dir+"/data/"+e.Key] }

// Check reads a torch.save archive of a state dict without loading its
// storages: the pickle within its bounds, and every tensor within its
// storage. It returns the tensors' records.
func Check(r io.ReaderAt, size int64) ([]Entry, error) {
	a, err := openArchive(r, size)
	if err != nil {
		return nil, err
	}
	return a.entries, nil
}

// Rewrite reads a torch.save archive of a state dict and writes it again as
// a plain dict pickle that libtorch's torch::pickle_load reads. libtorch's
// unpickler turns collections.OrderedDict into None and lacks the SETITEM
// and BUILD opcodes, all of which Python uses for model.state_dict().
// Every tensor is checked against its storage first; storages are then
// streamed across byte for byte, never held whole.
func Rewrite(r io.ReaderAt, size int64, w io.Writer) error {
	a, err := openArchive(r, size)
	if err != nil {
		return err
	}
	return writeArchive(w, plainPickle(a.entries), a.entries, func(e Entry, dst io.Writer) error {
		f := a.storage(e)
		rc, err := f.Open()
		if err != nil {
			return fmt.Errorf("%s: %w", f.Name, err)
		}
		defer rc.Close()
		want := int64(f.UncompressedSize64)
		n, err := io.Copy(dst, io.LimitReader(rc, want))
		if err == nil && n != want {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return fmt.Errorf("tensor %q: storage %s: %w", e.Name, e.Key, err)
		}
		return nil
	})
}

func readAll(f *zip.File, limit int64) ([]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s holds more than %d bytes", f.Name, limit)
	}
	return b, nil
}

// writeArchive writes the zip of a state dict: the pickle, then each
// storage once, which storage writes.
func writeArchive(w io.Writer, pkl []byte, entries []Entry, storage func(Entry, io.Writer) error) error {
	zw := zip.NewWriter(w)
	add := func(name string, data []byte) error {
		f, err := zw.CreateHeader(&zip.FileHeader{Name: "archive/" + name, Method: zip.Store})
		if err != nil {
			return err
		}
		_, err = f.Write(data)
		return err
	}
	if err := add("data.pkl", pkl); err != nil {
		return err
	}
	written := map[string]bool{}
	for _, e := range entries {
		if written[e.Key] {
			continue
		}
		written[e.Key] = true
		f, err := zw.CreateHeader(&zip.FileHeader{Name: "archive/data/" + e.Key, Method: zip.Store})
		if err != nil {
			return err
		}
		if err := storage(e, f); err != nil {
			return err
		}
	}
	if err := add("version", []byte("3\n")); err != nil {
		return err
	}
	return zw.Close()
}

// plainPickle writes {name: _rebuild_tensor_v2(...)} with only the opcodes
// libtorch reads.
func plainPickle(entries []Entry) []byte {
	var p pickler
	p.WriteString("\x80\x02}(")
	for _, e := range entries {
		p.tensor(e, func() { p.WriteString("N") })
	}
	p.WriteString("u.")
	return p.Bytes()
}

type pickler struct{ bytes.Buffer }

func (p *pickler) str(s string) {
	p.WriteByte('X')
	binary.Write(p, binary.LittleEndian, uint32(len(s)))
	p.WriteString(s)
}

// num writes an int: BININT where it fits in 32 bits, else LONG1.
func (p *pickler) num(v int) {
	if v == int(int32(v)) {
		p.WriteByte('J')
		binary.Write(p, binary.LittleEndian, int32(v))
		return
	}
	p.WriteString("\x8a\x08")
	binary.Write(p, binary.LittleEndian, int64(v))
}

func (p *pickler) tuple(vs []int) {
	p.WriteByte('(')
	for _, v := range vs {
		p.num(v)
	}
	p.WriteByte('t')
}

// tensor writes name, then _rebuild_tensor_v2(storage, offset, shape,
// stride, requires_grad, hooks), with hooks written by the caller.
func (p *pickler) tensor(e Entry, hooks func()) {
	p.str(e.Name)
	p.WriteString("ctorch._utils\n_rebuild_tensor_v2\n(")
	p.WriteByte('(')
	p.str("storage")
	p.WriteString("ctorch\n" + e.StorageType + "\n")
	p.str(e.Key)
	p.str(e.Location)
	p.num(e.Numel)
	p.WriteString("tQ")
	p.num(e.Offset)
	p.tuple(e.Shape)
	p.tuple(e.Stride)
	if e.RequiresGrad {
		p.WriteByte('\x88')
	} else {
		p.WriteByte('\x89')
	}
	hooks()
	p.WriteString("tR")
}

// Floats reads a torch.save archive's float32 and float64 tensors, each
// as its values in row-major order, by name; tensors of other types are
// left out.
func Floats(r io.ReaderAt, size int64) (map[string][]float64, error) {
	a, err := openArchive(r, size)
	if err != nil {
		return nil, err
	}
	out := map[string][]float64{}
	for _, e := range a.entries {
		var value func([]byte, int) float64
		switch e.StorageType {
		case "FloatStorage":
			value = func(b []byte, i int) float64 {
				return float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
			}
		case "DoubleStorage":
			value = func(b []byte, i int) float64 { return math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:])) }
		default:
			continue
		}
		raw, err := readAll(a.storage(e), int64(e.Numel)*itemSizes[e.StorageType])
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", e.Name, err)
		}
		values := make([]float64, Numel(e.Shape))
		idx := make([]int, len(e.Shape))
		for i := range values {
			at := e.Offset
			for d, k := range idx {
				at += k * e.Stride[d]
			}
			values[i] = value(raw, at)
			for d := len(idx) - 1; d >= 0; d-- {
				if idx[d]++; idx[d] < e.Shape[d] {
					break
				}
				idx[d] = 0
			}
		}
		out[e.Name] = values
	}
	return out, nil
}
