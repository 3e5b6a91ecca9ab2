package tfjs

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
)

var errNotFound = errors.New("not found")

// folder is the model's folder, on disk or inside an npm tarball.
type folder interface {
	// read returns a file of the folder, refusing one larger than limit.
	read(name string, limit int64) ([]byte, error)
	where() string
	close()
}

// openFolder opens src: a folder, a model.json or model.min.js in one, or
// an npm tarball and the model's folder inside it.
func openFolder(src, model string) (folder, error) {
	st, err := os.Stat(src)
	if err != nil {
		return nil, err
	}
	switch {
	case st.IsDir():
		if model != "" {
			src = filepath.Join(src, model)
		}
		return dirFolder(src), nil
	case strings.HasSuffix(src, ".tgz") || strings.HasSuffix(src, ".tar.gz"):
		return openTarball(src, model)
	case filepath.Base(src) == "model.json" || filepath.Base(src) == "model.min.js":
		return dirFolder(filepath.Dir(src)), nil
	}
	return nil, fmt.Errorf("%s: not a model folder, model.json or npm tarball (.tgz)", src)
}

type dirFolder string

func (d dirFolder) read(name string, limit int64) ([]byte, error) {
	f, err := os.Open(filepath.Join(string(d), filepath.FromSlash(name)))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", name, errNotFound)
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", name)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s holds %d bytes, more than the %d allowed", name, st.Size(), limit)
	}
	return io.ReadAll(io.LimitReader(f, limit))
}

func (d dirFolder) where() string { return string(d) }
func (d dirFolder) close()        {}

// tarFolder holds the files of one model folder of a tarball, read in one
// pass: gzip streams cannot seek.
type tarFolder struct {
	tarball, dir string
	files        map[string][]byte
}

// Limits on a tarball: the sum of the model folder's files and the number
// of entries looked at.
const (
	maxTarModel   = 2 << 30
	maxTarEntries = 1 << 16
)

// openTarball finds the model folder in an npm tarball and reads its
// files. model is the folder's path in the tarball or a suffix of it; it
// may be empty when the tarball holds one model.
func openTarball(src, model string) (folder, error) {
	dirs, err := scanTarball(src, "", nil)
	if err != nil {
		return nil, err
	}
	var matches []string
	want := strings.Trim(model, "/")
	for _, d := range dirs {
		if want == "" || d == want || strings.HasSuffix(d, "/"+want) {
			matches = append(matches, d)
		}
	}
	switch {
	case len(matches) == 0 && want == "":
		return nil, fmt.Errorf("%s holds no TF.js model (model.json or model.min.js)", src)
	case len(matches) == 0:
		return nil, fmt.Errorf("%s has no model folder %q; it has: %s", src, model, strings.Join(dirs, ", "))
	case len(matches) > 1:
		return nil, fmt.Errorf("%s holds several models: name one with --model (%s)", src, strings.Join(matches, ", "))
	}
	t := &tarFolder{tarball: src, dir: matches[0], files: map[string][]byte{}}
	if _, err := scanTarball(src, t.dir, t.files); err != nil {
		return nil, err
	}
	return t, nil
}

// scanTarball reads a .tgz. With files nil it lists the folders that hold
// a model; otherwise it keeps the files directly under dir.
func scanTarball(src, dir string, files map[string][]byte) ([]string, error) {
	f, err := os.Open(src)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: not a gzip tarball: %w", src, err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	var dirs []string
	var kept int64
	for n := 0; ; n++ {
		if n > maxTarEntries {
			return nil, fmt.Errorf("%s: more than %d entries", src, maxTarEntries)
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: truncated or corrupt tarball: %w", src, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "./"))
		d, base := path.Split(name)
		d = strings.TrimSuffix(d, "/")
		if files == nil {
			if base == "model.json" || base == "model.min.js" {
				dirs = append(dirs, d)
			}
			continue
		}
		if d != dir {
			continue
		}
		if h.Size < 0 || kept+h.Size > maxTarModel {
			return nil, fmt.Errorf("%s: the model's files hold more than %d bytes", src, int64(maxTarModel))
		}
		b, err := io.ReadAll(io.LimitReader(tr, h.Size))
		if err != nil || int64(len(b)) != h.Size {
			return nil, fmt.Errorf("%s: truncated tarball at %s: %v", src, name, err)
		}
		kept += h.Size
		files[base] = b
	}
	// A truncated gzip stream can end the tar early without an error from
	// tar: the gzip checksum at the end tells.
	if _, err := io.Copy(io.Discard, gz); err != nil {
		return nil, fmt.Errorf("%s: truncated or corrupt tarball: %w", src, err)
	}
	sort.Strings(dirs)
	return dirs, nil
}

func (t *tarFolder) read(name string, limit int64) ([]byte, error) {
	b, ok := t.files[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, errNotFound)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s holds %d bytes, more than the %d allowed", name, len(b), limit)
	}
	return b, nil
}

func (t *tarFolder) where() string { return t.tarball + ":" + t.dir }
func (t *tarFolder) close()        { t.files = nil }
