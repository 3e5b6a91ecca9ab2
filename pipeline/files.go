package pipeline

import (
	"bufio"
	"fmt"
	"hash/fnv"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// files is a source of image files, one item each.
type files struct {
	paths []string
	root  string // names are fingerprinted relative to it
	fp    uint64
}

func newFiles(paths []string, root string) *files {
	f := &files{paths: paths, root: root}
	h := fnv.New64a()
	for _, p := range paths {
		rel, err := filepath.Rel(root, p)
		if err != nil {
			rel = p
		}
		h.Write([]byte(rel))
		h.Write([]byte{0})
		var size int64
		if st, err := os.Stat(p); err == nil {
			size = st.Size()
		}
		writeUint(h, uint64(size))
	}
	f.fp = h.Sum64()
	return f
}

func (f *files) Len() int            { return len(f.paths) }
func (f *files) Name(i int) string   { return f.paths[i] }
func (f *files) Fingerprint() uint64 { return f.fp }

// Read reads a regular file only: a FIFO or a device would be read
// forever.
func (f *files) Read(i int) ([]byte, error) {
	st, err := os.Stat(f.paths[i])
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("not a regular file (%s)", st.Mode().Type())
	}
	return readAt(f.paths[i], 0, st.Size())
}

// walk returns the image files and the .tar shards under root, each
// sorted, so that a seed means the same thing on every machine. Symbolic
// links to files are followed.
func walk(root string) (images, shards []string, err error) {
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("list images under %s: %w", root, err)
		}
		image, shard := IsImageName(path), isShardName(path)
		if d.IsDir() || !image && !shard {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			if st, err := os.Stat(path); err != nil || st.IsDir() {
				return nil // dangling link or a linked folder
			}
		} else if !d.Type().IsRegular() {
			return nil
		}
		if shard {
			shards = append(shards, path)
		} else {
			images = append(images, path)
		}
		return nil
	})
	sort.Strings(images)
	sort.Strings(shards)
	return images, shards, err
}

// Find returns the image files (JPEG and PNG, by extension) under each
// root, sorted. A root may also be a single file.
func Find(roots ...string) ([]string, error) {
	var out []string
	for _, root := range roots {
		info, err := os.Stat(root)
		if err != nil {
			return nil, fmt.Errorf("find images: %w", err)
		}
		if !info.IsDir() {
			out = append(out, root)
			continue
		}
		images, _, err := walk(root)
		if err != nil {
			return nil, err
		}
		out = append(out, images...)
	}
	sort.Strings(out)
	return out, nil
}

// listFile reads a text file of paths, one per line (blank lines and
// lines starting with # skipped); relative paths are taken from the list
// file's folder. Each may be anything List takes except a list file.
func listFile(p string, warn func(Skipped)) ([]Source, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("list file: %w", err)
	}
	defer f.Close()
	dir := filepath.Dir(p)
	var images []string
	var out []Source
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.ContainsRune(line, 0) {
			return nil, fmt.Errorf("%s is neither an image, a .tar shard nor a text list of paths (line %d)", p, n)
		}
		if !filepath.IsAbs(line) {
			line = filepath.Join(dir, line)
		}
		switch {
		case IsImageName(line):
			images = append(images, line)
		case isShardName(line):
			sh, err := indexShard(line, dir, warn)
			if err != nil {
				return nil, err
			}
			out = append(out, sh)
		default:
			st, err := os.Stat(line)
			if err != nil || !st.IsDir() {
				return nil, fmt.Errorf("%s line %d: %q is neither an image, a .tar shard nor a folder", p, n, line)
			}
			images2, shards, err := walk(line)
			if err != nil {
				return nil, err
			}
			images = append(images, images2...)
			for _, s := range shards {
				sh, err := indexShard(s, dir, warn)
				if err != nil {
					return nil, err
				}
				out = append(out, sh)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s is neither an image, a .tar shard nor a text list of paths: %w", p, err)
	}
	return append([]Source{newFiles(images, dir)}, out...), nil
}

// IsImageName reports whether a file name has an extension the pipeline
// reads.
func IsImageName(name string) bool {
	switch strings.ToLower(filepath.Ext(name)) {
	case ".jpg", ".jpeg", ".png":
		return true
	}
	return false
}
