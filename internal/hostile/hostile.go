// Package hostile makes files that attack deepsim the way an untrusted
// download or a shared checkpoint could: tensor records that reach outside
// their storage, archives and pickles that claim unbounded memory, thin
// images. The tests run each through the path it attacks.
package hostile

import (
	"archive/zip"
	"bytes"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"

	"github.com/deepsim/deepsim/internal/torchfile"
)

// File is one hostile file and what it must be refused for.
type File struct {
	Name  string // file name in the corpus folder
	Class string // what it attacks
	Want  string // a part of the error it must give
}

// StateDicts are torch.save files whose records lie about their storage,
// or that ask for unbounded memory.
var StateDicts = []File{
	{"offset.pth", "tensor record: storage offset beyond the storage", `tensor "features.0.weight": offset`},
	{"stride.pth", "tensor record: strides beyond the storage", `reach value`},
	{"negative-stride.pth", "tensor record: a negative stride", `stride -1`},
	{"short-storage.pth", "tensor record: a storage shorter than its record says", `holds 16 bytes, its record says 64 values`},
	{"huge-shape.pth", "tensor record: sizes whose product overflows", `reach beyond any storage`},
	{"zip-bomb.pth", "archive: a data.pkl that inflates to 256 MB", `more than the`},
	{"lying-zip.pth", "archive: a storage record whose size differs from what its tensor needs", `its record says`},
	{"pickle-20m.pth", "pickle: 20 million values", `more than 1048576 values`},
}

// rawDict writes a state dict of one float tensor with the given view of
// a storage of numel values, stored in storageBytes bytes.
func rawDict(offset int, shape, stride []int, numel, storageBytes int) []byte {
	var b bytes.Buffer
	e := torchfile.Entry{Name: "features.0.weight", StorageType: "FloatStorage", Key: "0", Location: "cpu",
		Numel: numel, Offset: offset, Shape: shape, Stride: stride}
	torchfile.WriteRecords(&b, []torchfile.Entry{e}, map[string][]byte{"0": make([]byte, storageBytes)})
	return b.Bytes()
}

// zipWith writes a torch.save-like archive from named records, deflating
// the ones named in deflate.
func zipWith(records map[string][]byte, deflate map[string]bool, order []string) []byte {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, name := range order {
		method := zip.Store
		if deflate[name] {
			method = zip.Deflate
		}
		w, _ := zw.CreateHeader(&zip.FileHeader{Name: "archive/" + name, Method: method})
		w.Write(records[name])
	}
	zw.Close()
	return b.Bytes()
}

// pickleOf20M is a pickle whose tuple holds 20 million Nones: 20 MB that a
// careless reader would turn into gigabytes.
func pickleOf20M() []byte {
	var p bytes.Buffer
	p.WriteString("\x80\x02(")
	p.Write(bytes.Repeat([]byte("N"), 20_000_000))
	p.WriteString("t.")
	return p.Bytes()
}

// plainPickle is a valid one-tensor state dict's pickle and storage, for
// archives broken elsewhere.
func plainPickle() ([]byte, []byte) {
	r := rawDict(0, []int{4}, []int{1}, 4, 16)
	zr, _ := zip.NewReader(bytes.NewReader(r), int64(len(r)))
	var pkl, data []byte
	for _, f := range zr.File {
		rc, _ := f.Open()
		var buf bytes.Buffer
		buf.ReadFrom(rc)
		rc.Close()
		switch {
		case strings.HasSuffix(f.Name, "data.pkl"):
			pkl = buf.Bytes()
		case strings.HasSuffix(f.Name, "data/0"):
			data = buf.Bytes()
		}
	}
	return pkl, data
}

// WriteStateDicts writes StateDicts into dir.
func WriteStateDicts(dir string) error {
	pkl, data := plainPickle()
	// 256 MB of spaces after the pickle's STOP: inflating it is the attack.
	bomb := append(append([]byte(nil), pkl...), bytes.Repeat([]byte(" "), 256<<20)...)
	files := map[string][]byte{
		"offset.pth":          rawDict(1000, []int{4}, []int{1}, 4, 16),
		"stride.pth":          rawDict(0, []int{2, 2}, []int{100, 1}, 4, 16),
		"negative-stride.pth": rawDict(3, []int{4}, []int{-1}, 4, 16),
		"short-storage.pth":   rawDict(0, []int{64}, []int{1}, 64, 16),
		"huge-shape.pth":      rawDict(0, []int{1 << 40, 1 << 40}, []int{1 << 40, 1}, 4, 16),
		"zip-bomb.pth": zipWith(map[string][]byte{"data.pkl": bomb, "data/0": data, "version": []byte("3\n")},
			map[string]bool{"data.pkl": true}, []string{"data.pkl", "data/0", "version"}),
		"lying-zip.pth": zipWith(map[string][]byte{"data.pkl": pkl, "data/0": make([]byte, 1<<20), "version": []byte("3\n")},
			map[string]bool{"data/0": true}, []string{"data.pkl", "data/0", "version"}),
		"pickle-20m.pth": zipWith(map[string][]byte{"data.pkl": pickleOf20M(), "version": []byte("3\n")},
			map[string]bool{"data.pkl": true}, []string{"data.pkl", "version"}),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// ThinPNG writes a 1 x 65536 PNG: a few hundred bytes that upscaling to a
// crop's short side would turn into gigabytes.
func ThinPNG(path string) error {
	img := image.NewGray(image.Rect(0, 0, 1, 65536))
	for y := range 65536 {
		img.Pix[y] = uint8(y)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// Checkpoint rewrites a real checkpoint with one tensor's record pointing
// past its storage: the same defect, where --resume, reconstruct, eval and
// sample read it.
func Checkpoint(good []byte) ([]byte, error) {
	zr, err := zip.NewReader(bytes.NewReader(good), int64(len(good)))
	if err != nil {
		return nil, err
	}
	entries, err := torchfile.Check(bytes.NewReader(good), int64(len(good)))
	if err != nil {
		return nil, err
	}
	storages := map[string][]byte{}
	for _, f := range zr.File {
		if i := strings.Index(f.Name, "/data/"); i >= 0 {
			rc, _ := f.Open()
			var buf bytes.Buffer
			buf.ReadFrom(rc)
			rc.Close()
			storages[f.Name[i+len("/data/"):]] = buf.Bytes()
		}
	}
	for i := range entries {
		if entries[i].StorageType == "FloatStorage" {
			entries[i].Offset = entries[i].Numel * 4 // far past the end
			break
		}
	}
	var b bytes.Buffer
	if err := torchfile.WriteRecords(&b, entries, storages); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
