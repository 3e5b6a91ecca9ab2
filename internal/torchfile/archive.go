package torchfile

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
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

// Rewrite reads a torch.save archive of a state dict and writes it again as
// a plain dict pickle that libtorch's torch::pickle_load reads. libtorch's
// unpickler turns collections.OrderedDict into None and lacks the SETITEM
// and BUILD opcodes, all of which Python uses for model.state_dict().
// Storages are copied byte for byte.
func Rewrite(r io.ReaderAt, size int64, w io.Writer) error {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return fmt.Errorf("not a torch.save zip archive: %w", err)
	}
	files := map[string]*zip.File{}
	var pkl *zip.File
	for _, f := range zr.File {
		files[f.Name] = f
		if strings.HasSuffix(f.Name, "/data.pkl") {
			pkl = f
		}
	}
	if pkl == nil {
		return fmt.Errorf("archive holds no data.pkl: not a torch.save file")
	}
	dir := path.Dir(pkl.Name)
	code, err := readAll(pkl)
	if err != nil {
		return err
	}
	entries, err := parseStateDict(code)
	if err != nil {
		return fmt.Errorf("data.pkl: %w", err)
	}
	storages := map[string][]byte{}
	for _, e := range entries {
		if _, ok := storages[e.Key]; ok {
			continue
		}
		f := files[dir+"/data/"+e.Key]
		if f == nil {
			return fmt.Errorf("tensor %q: storage %s is missing from the archive", e.Name, e.Key)
		}
		if storages[e.Key], err = readAll(f); err != nil {
			return err
		}
	}
	return writeArchive(w, plainPickle(entries), entries, storages)
}

func readAll(f *zip.File) ([]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Name, err)
	}
	return b, nil
}

func writeArchive(w io.Writer, pkl []byte, entries []Entry, storages map[string][]byte) error {
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
		if err := add("data/"+e.Key, storages[e.Key]); err != nil {
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

func (p *pickler) num(v int) {
	p.WriteByte('J')
	binary.Write(p, binary.LittleEndian, int32(v))
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
