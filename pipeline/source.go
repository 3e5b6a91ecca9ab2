// Package pipeline turns image datasets into batches of training crops:
// it lists sources (folders, WebDataset tar shards, lists of paths) without
// reading pixels, orders them in seeded epochs, decodes on demand only what
// each crop needs, and delivers float32 NCHW batches in [-1,1]. A batch is
// a pure function of the seed, its position and the sources.
package pipeline

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/fnv"
	"os"
	"path/filepath"
	"strings"
)

// A Source is a listed dataset: items numbered 0..Len()-1, each one
// encoded image, read on demand. Listing reads names and sizes, never
// pixels, so a source costs a few dozen bytes per image whatever its
// images weigh. A new kind of source is one type with these methods, and a
// case in List.
type Source interface {
	Len() int
	// Name is the item's path, or shard:member for a member of a tar shard.
	Name(i int) string
	// Read returns the item's encoded bytes.
	Read(i int) ([]byte, error)
	// Fingerprint hashes the index (names relative to what was listed, and
	// sizes, in order): processes that listed the same data agree on it
	// without reading a pixel.
	Fingerprint() uint64
}

// MaxItemBytes bounds one item's encoded size: a larger file is a bad
// item, not an allocation.
const MaxItemBytes = 256 << 20

// ErrNoImages is returned by List when the sources hold no image.
var ErrNoImages = errors.New("no JPEG or PNG images")

// List lists the sources named by specs, in order. A spec is a folder
// (searched recursively for images and .tar shards), an image file, a
// WebDataset tar shard, a text file with one path per line, or a glob or
// brace range of those ('shards/train-{000000..000146}.tar'). warn, when
// not nil, hears of each shard that could only be read in part.
func List(specs []string, warn func(Skipped)) (Source, error) {
	var parts []Source
	for _, spec := range specs {
		paths, err := expand(spec)
		if err != nil {
			return nil, err
		}
		// Runs of shards (a brace range names hundreds) are indexed
		// concurrently.
		for len(paths) > 0 {
			n := 0
			for n < len(paths) && isShardName(paths[n]) {
				n++
			}
			if n > 0 {
				shards, err := indexShards(paths[:n], filepath.Dir(paths[0]), warn)
				if err != nil {
					return nil, err
				}
				parts, paths = append(parts, shards...), paths[n:]
				continue
			}
			ps, err := listPath(paths[0], filepath.Dir(paths[0]), warn)
			if err != nil {
				return nil, err
			}
			parts, paths = append(parts, ps...), paths[1:]
		}
	}
	src := concat(parts)
	if src.Len() == 0 {
		return nil, fmt.Errorf("%w in %s", ErrNoImages, strings.Join(specs, ", "))
	}
	return src, nil
}

// listPath lists one path: a folder, an image, a shard or a list file.
// Names in the index are made relative to root.
func listPath(p, root string, warn func(Skipped)) ([]Source, error) {
	st, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	switch {
	case st.IsDir():
		images, shards, err := walk(p)
		if err != nil {
			return nil, err
		}
		sh, err := indexShards(shards, p, warn)
		if err != nil {
			return nil, err
		}
		return append([]Source{newFiles(images, p)}, sh...), nil
	case isShardName(p):
		sh, err := indexShard(p, root, warn)
		return []Source{sh}, err
	case IsImageName(p):
		return []Source{newFiles([]string{p}, root)}, nil
	default:
		return listFile(p, warn)
	}
}

func isShardName(p string) bool { return strings.EqualFold(filepath.Ext(p), ".tar") }

// concatenated is several sources numbered one after the other.
type concatenated struct {
	parts []Source
	start []int // start[k] is the first index of parts[k]; one more entry for the end
}

func concat(parts []Source) Source {
	var kept []Source
	for _, p := range parts {
		if p.Len() > 0 {
			kept = append(kept, p)
		}
	}
	if len(kept) == 1 {
		return kept[0]
	}
	c := &concatenated{parts: kept, start: make([]int, len(kept)+1)}
	for k, p := range kept {
		c.start[k+1] = c.start[k] + p.Len()
	}
	return c
}

func (c *concatenated) Len() int { return c.start[len(c.parts)] }

// part finds the source that holds item i, and i's index in it.
func (c *concatenated) part(i int) (Source, int) {
	lo, hi := 0, len(c.parts)-1
	for lo < hi {
		m := (lo + hi + 1) / 2
		if c.start[m] <= i {
			lo = m
		} else {
			hi = m - 1
		}
	}
	return c.parts[lo], i - c.start[lo]
}

func (c *concatenated) Name(i int) string {
	p, j := c.part(i)
	return p.Name(j)
}

func (c *concatenated) Read(i int) ([]byte, error) {
	p, j := c.part(i)
	return p.Read(j)
}

func (c *concatenated) Fingerprint() uint64 {
	h := fnv.New64a()
	for _, p := range c.parts {
		writeUint(h, p.Fingerprint())
	}
	return h.Sum64()
}

func writeUint(h hash.Hash64, v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	h.Write(b[:])
}

// readAt reads size bytes at off of the file at path: one item.
func readAt(path string, off, size int64) ([]byte, error) {
	if size <= 0 {
		return nil, errors.New("empty file")
	}
	if size > MaxItemBytes {
		return nil, fmt.Errorf("%d bytes: more than the %d an image may have", size, MaxItemBytes)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, size)
	if _, err := f.ReadAt(b, off); err != nil {
		return nil, fmt.Errorf("read %d bytes at %d: %w", size, off, err)
	}
	return b, nil
}

// Shards counts the tar shards a source reads.
func Shards(src Source) int {
	switch s := src.(type) {
	case *shard:
		return 1
	case *concatenated:
		n := 0
		for _, p := range s.parts {
			n += Shards(p)
		}
		return n
	}
	return 0
}
