package pretrained

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/internal/atomicfile"
	"github.com/deepsim/deepsim/internal/torchfile"
)

// Store is the local folder of imported comparator weights:
// HOME/comparators/NAME.pt with NAME.json beside it.
type Store struct {
	Home string
	// FS, when set, is what the store reads instead of the folder Home
	// (imports still write to Home).
	FS   fs.FS
	nets *networks // what Resolve read; nil: nothing is remembered
}

// NewStore is the store at home, remembering the networks it resolves
// (Resolve) for as long as it is used: a command that opens a network
// twice reads it once, and opens the same weights both times.
func NewStore(home string) Store { return Store{Home: home, nets: &networks{m: map[string]*Network{}}} }

// networks are resolved networks by spec.
type networks struct {
	mu sync.Mutex
	m  map[string]*Network
}

func (n *networks) get(spec string) (*Network, bool) {
	if n == nil {
		return nil, false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	net, ok := n.m[spec]
	return net, ok
}

func (n *networks) put(spec string, net *Network) {
	if n == nil {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.m[spec] = net
}

// read reads NAME's file with extension ext.
func (s Store) read(name, ext string) ([]byte, error) {
	fsys := s.FS
	if fsys == nil {
		fsys = os.DirFS(s.Home)
	}
	return fs.ReadFile(fsys, entryFile(name, ext))
}

// Entry describes one imported comparator.
type Entry struct {
	Name     string    `json:"name"`
	Arch     string    `json:"arch"`
	SHA256   string    `json:"sha256"` // of NAME.pt
	Bytes    int64     `json:"bytes"`
	Source   string    `json:"source"`
	Imported time.Time `json:"imported"`

	// Keras (TF.js) imports: the model's folder inside Source, the SHA-256
	// of its layer graph (NAME.graph.json), the input side and range its
	// weights expect, the layers a judge taps by default and the number of
	// weight values.
	Model       string   `json:"model,omitempty"`
	GraphSHA256 string   `json:"graph_sha256,omitempty"`
	InputSize   int      `json:"input_size,omitempty"`
	Input       string   `json:"input,omitempty"`
	Taps        []string `json:"taps,omitempty"`
	Params      int      `json:"params,omitempty"`
}

// The files an entry NAME has in the store: its record, its weights and,
// for a Keras import, its layer graph.
const (
	storeDir    = "comparators" // under Home
	manifestExt = ".json"
	weightsExt  = ".pt"
	graphExt    = ".graph.json"
)

// entryFile is NAME's file with extension ext, as a slash path under Home:
// what the store reads (read) and writes (path).
func entryFile(name, ext string) string { return storeDir + "/" + name + ext }

func (s Store) path(name, ext string) string {
	return filepath.Join(s.Home, filepath.FromSlash(entryFile(name, ext)))
}

func (s Store) dir() string { return filepath.Join(s.Home, storeDir) }

// WeightsPath is where the store keeps NAME's state dict.
func (s Store) WeightsPath(name string) string { return s.path(name, weightsExt) }

func (s Store) manifestPath(name string) string { return s.path(name, manifestExt) }

// ImportHint is the command that puts weights in the store, for errors.
const ImportHint = "runner comparator import FILE.pth|MODEL.tgz --as NAME [--arch alexnet|vgg16] [--model PATH]"

// ErrLegacyFormat is returned for files in the pre-1.6 torch.save format.
var ErrLegacyFormat = errors.New("legacy torch.save format")

// checkFormat refuses the legacy (non-zip) torch.save format, which
// libtorch's reader cannot read, with the one-line fix.
func checkFormat(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, 4)
	n, _ := io.ReadFull(f, head)
	switch {
	case n == 4 && bytes.Equal(head, []byte("PK\x03\x04")):
		return nil
	case n >= 1 && head[0] == 0x80: // a bare pickle: torch.save before 1.6
		return fmt.Errorf("%s: %w (before PyTorch 1.6), which libtorch cannot read; re-save it once with:\n"+
			"  python3 -c \"import torch; torch.save(torch.load('%s', map_location='cpu'), 'converted.pth')\"",
			path, ErrLegacyFormat, path)
	}
	return fmt.Errorf("%s: not a torch.save file (no zip header)", path)
}

// validName refuses the names that --comparator could never mean: those
// it reads as a file (a path, or .pt and .pth), reserved names, and names
// with characters that specs use.
func validName(name string) error {
	bad := name == "" || strings.HasSuffix(name, "-random") || name == Shipped || name == "torchscript" ||
		strings.HasPrefix(name, ".") || strings.HasSuffix(name, ".pt") || strings.HasSuffix(name, ".pth") ||
		len(name) > 64
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			bad = true
		}
	}
	if bad {
		return fmt.Errorf("--as %q: a name of letters, digits, '-', '_' and '.', not starting with '.', "+
			"nor ending in .pt, .pth or -random, at most 64 long; %q is reserved", name, Shipped)
	}
	return nil
}

// prepare makes the store's folder and clears the temporary files that an
// import killed mid-way left (they start with '.' and hold ".tmp-").
func (s Store) prepare() error {
	if s.Home == "" {
		return errors.New("no comparator store: set DEEPSIM_HOME (or HOME)")
	}
	if err := os.MkdirAll(s.dir(), 0o755); err != nil {
		return err
	}
	stale, _ := filepath.Glob(filepath.Join(s.dir(), ".*.tmp-*"))
	for _, f := range stale {
		if st, err := os.Stat(f); err == nil && time.Since(st.ModTime()) > time.Hour {
			os.Remove(f)
		}
	}
	return nil
}

// Import checks a state dict against its architecture (arch "" detects it
// from the keys) and stores it under name, rewritten into the form
// libtorch reads (see torchfile.Rewrite); the SHA-256 is of the stored file.
func (s Store) Import(ctx context.Context, file, name, arch string) (Entry, error) {
	if err := validName(name); err != nil {
		return Entry{}, err
	}
	if err := checkFormat(file); err != nil {
		return Entry{}, err
	}
	if err := s.prepare(); err != nil {
		return Entry{}, err
	}
	// Rewrite into a temporary file and check it before it takes the name,
	// so that a bad file never replaces good weights.
	in, err := os.Open(file)
	if err != nil {
		return Entry{}, err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return Entry{}, err
	}
	tmp, err := os.CreateTemp(s.dir(), "."+name+".pt.tmp-*")
	if err != nil {
		return Entry{}, err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	cw := &countWriter{ctx: ctx, w: io.MultiWriter(tmp, h)}
	err = torchfile.Rewrite(in, st.Size(), cw)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Entry{}, fmt.Errorf("%s: %w", file, err)
	}
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	if arch, err = graphs.CheckStateDict(tmp.Name(), arch); err != nil {
		return Entry{}, fmt.Errorf("%s: %w", file, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return Entry{}, err
	}
	abs, _ := filepath.Abs(file)
	e := Entry{Name: name, Arch: arch, SHA256: hex.EncodeToString(h.Sum(nil)), Bytes: cw.n, Source: abs, Imported: time.Now().UTC()}
	if err := os.Rename(tmp.Name(), s.WeightsPath(name)); err != nil {
		return Entry{}, err
	}
	js, _ := json.MarshalIndent(e, "", "  ")
	if err := atomicfile.WriteFile(s.manifestPath(name), append(js, '\n')); err != nil {
		return Entry{}, err
	}
	return e, nil
}

// countWriter counts what passes, and stops the copy when ctx ends.
type countWriter struct {
	ctx context.Context
	w   io.Writer
	n   int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// Lookup returns the entry for name, or an error that says how to import.
func (s Store) Lookup(name string) (Entry, error) {
	if s.Home == "" {
		return Entry{}, fmt.Errorf("no comparator %q: no comparator store (set DEEPSIM_HOME or HOME)", name)
	}
	b, err := s.read(name, manifestExt)
	if errors.Is(err, fs.ErrNotExist) {
		return Entry{}, fmt.Errorf("no comparator %q in %s: import its weights first with\n  %s\n(or name %s-random explicitly for random weights)",
			name, s.dir(), ImportHint, name)
	}
	if err != nil {
		return Entry{}, err
	}
	var e Entry
	if err := json.Unmarshal(b, &e); err != nil {
		return Entry{}, fmt.Errorf("%s: %w", s.manifestPath(name), err)
	}
	return e, nil
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// weights reads e's stored weights, checked against their recorded
// SHA-256: the bytes returned are the bytes checked.
func (s Store) weights(e Entry) ([]byte, error) {
	b, err := s.read(e.Name, weightsExt)
	if err != nil {
		return nil, fmt.Errorf("comparator %q: %w", e.Name, err)
	}
	if got := sha256Hex(b); got != e.SHA256 {
		return nil, fmt.Errorf("stored weights of %q changed since import (sha256 %.12s, recorded %.12s): import them again", e.Name, got, e.SHA256)
	}
	return b, nil
}

// List returns the imported comparators, by name.
func (s Store) List() ([]Entry, error) {
	matches, err := filepath.Glob(filepath.Join(s.dir(), "*.json"))
	if err != nil {
		return nil, err
	}
	var out []Entry
	for _, m := range matches {
		if strings.HasSuffix(m, ".graph.json") {
			continue // a Keras import's layer graph, beside its entry
		}
		e, err := s.Lookup(strings.TrimSuffix(filepath.Base(m), ".json"))
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}
