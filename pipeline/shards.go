package pipeline

import (
	"archive/tar"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// shard is one WebDataset tar shard: one sample per key (a member's name
// up to the first dot of its base name), the sample's image its first
// .jpg, .jpeg or .png member. Other members are ignored. The index holds
// each image's offset and size, read from the tar headers alone.
type shard struct {
	path  string
	items []member
	names []byte // the members' names, end to end
	fp    uint64
}

type member struct {
	off       int64
	size      int64
	nameStart uint32
	nameLen   uint16
}

// indexShard reads the headers of the tar at p. A file that is not a tar
// is refused; one that ends early gives the members before the damage,
// and warn names it.
func indexShard(p, root string, warn func(Skipped)) (*shard, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("shard: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("shard: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("shard %s: not a regular file", p)
	}
	s := &shard{path: p}
	pr := &posReader{f: f, size: st.Size()}
	tr := tar.NewReader(pr)
	lastKey, headers := "", 0
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if headers == 0 {
				return nil, fmt.Errorf("shard %s is not a tar archive: %w", p, err)
			}
			if warn != nil {
				warn(Skipped{Path: p, Err: fmt.Errorf("damaged after %d members (%w); using the %d images before it", headers, err, len(s.items))})
			}
			break
		}
		headers++
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		key, ext := sampleKey(hdr.Name)
		if key == lastKey || !IsImageName("x"+ext) {
			continue // the sample has its image, or this is not one
		}
		if pr.pos+hdr.Size > st.Size() {
			if warn != nil {
				warn(Skipped{Path: p + ":" + hdr.Name, Err: fmt.Errorf("truncated: %d bytes declared, %d in the shard", hdr.Size, st.Size()-pr.pos)})
			}
			break
		}
		lastKey = key
		name := hdr.Name
		if len(name) > 1<<15 {
			name = name[:1<<15]
		}
		s.items = append(s.items, member{off: pr.pos, size: hdr.Size, nameStart: uint32(len(s.names)), nameLen: uint16(len(name))})
		s.names = append(s.names, name...)
	}
	h := fnv.New64a()
	rel, err := filepath.Rel(root, p)
	if err != nil {
		rel = p
	}
	h.Write([]byte(rel))
	h.Write(s.names)
	for _, m := range s.items {
		writeUint(h, uint64(m.size))
	}
	s.fp = h.Sum64()
	return s, nil
}

// sampleKey splits a member name as WebDataset does: the key is the path
// up to the first dot of the base name, the extension the rest.
func sampleKey(name string) (key, ext string) {
	dir, base := path.Split(name)
	if i := strings.IndexByte(base, '.'); i >= 0 {
		return dir + base[:i], strings.ToLower(base[i:])
	}
	return name, ""
}

func (s *shard) Len() int { return len(s.items) }

func (s *shard) Name(i int) string {
	m := s.items[i]
	return s.path + ":" + string(s.names[m.nameStart:m.nameStart+uint32(m.nameLen)])
}

func (s *shard) Read(i int) ([]byte, error) {
	m := s.items[i]
	return readAt(s.path, m.off, m.size)
}

func (s *shard) Fingerprint() uint64 { return s.fp }

// posReader reads an os.File at an offset of its own: a seek is
// arithmetic, not a system call (tar seeks past every member), and the
// offset after a header is where the member's data starts.
type posReader struct {
	f    *os.File
	pos  int64
	size int64
}

func (r *posReader) Read(b []byte) (int, error) {
	n, err := r.f.ReadAt(b, r.pos)
	r.pos += int64(n)
	if err == io.EOF && n > 0 {
		err = nil
	}
	return n, err
}

func (r *posReader) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekCurrent:
		off += r.pos
	case io.SeekEnd:
		off += r.size
	}
	if off < 0 {
		return r.pos, errors.New("seek before the start of the shard")
	}
	r.pos = off
	return off, nil
}

// indexShards indexes the shards at paths concurrently, in order.
func indexShards(paths []string, root string, warn func(Skipped)) ([]Source, error) {
	out := make([]Source, len(paths))
	errs := make([]error, len(paths))
	var mu sync.Mutex
	safeWarn := func(s Skipped) {
		if warn != nil {
			mu.Lock()
			defer mu.Unlock()
			warn(s)
		}
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(len(paths), 8) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				var sh *shard
				sh, errs[i] = indexShard(paths[i], root, safeWarn)
				out[i] = sh
			}
		}()
	}
	for i := range paths {
		next <- i
	}
	close(next)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// expand turns a spec into paths: brace lists and ranges first
// ({a,b}, {000..146}), then globs, each sorted; a spec without either is
// itself.
func expand(spec string) ([]string, error) {
	specs, err := braces(spec)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range specs {
		if !strings.ContainsAny(s, "*?[") {
			out = append(out, s)
			continue
		}
		m, err := filepath.Glob(s)
		if err != nil {
			return nil, fmt.Errorf("data %q: %w", spec, err)
		}
		if len(m) == 0 {
			return nil, fmt.Errorf("data %q: nothing matches %s", spec, s)
		}
		out = append(out, m...)
	}
	return out, nil
}

// maxExpansion bounds what one brace spec may name.
const maxExpansion = 1 << 20

// braces expands the first {...} in s, then the rest, recursively.
func braces(s string) ([]string, error) {
	open := strings.IndexByte(s, '{')
	if open < 0 {
		return []string{s}, nil
	}
	end := strings.IndexByte(s[open:], '}')
	if end < 0 {
		return nil, fmt.Errorf("data %q: { without }", s)
	}
	end += open
	body, rest := s[open+1:end], s[end+1:]
	var alts []string
	if lo, hi, ok := strings.Cut(body, ".."); ok {
		a, errA := strconv.Atoi(lo)
		b, errB := strconv.Atoi(hi)
		if errA != nil || errB != nil || a < 0 || b < a {
			return nil, fmt.Errorf("data %q: {%s} is not a range {FIRST..LAST} of numbers", s, body)
		}
		if b-a >= maxExpansion {
			return nil, fmt.Errorf("data %q: {%s} names more than %d paths", s, body, maxExpansion)
		}
		width := 0
		if len(lo) > 1 && lo[0] == '0' {
			width = len(lo)
		}
		for i := a; i <= b; i++ {
			alts = append(alts, fmt.Sprintf("%0*d", width, i))
		}
	} else {
		alts = strings.Split(body, ",")
	}
	tails, err := braces(rest)
	if err != nil {
		return nil, err
	}
	if len(alts)*len(tails) > maxExpansion {
		return nil, errors.New("data: a brace pattern names too many paths")
	}
	out := make([]string, 0, len(alts)*len(tails))
	for _, a := range alts {
		for _, t := range tails {
			out = append(out, s[:open]+a+t)
		}
	}
	return out, nil
}
