package runner

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
)

// resolved is path made absolute, with its symbolic links followed as far
// as it exists, so that two names of one file compare equal.
func resolved(path string) string {
	abs, err := filepath.Abs(path)
	if err != nil {
		return filepath.Clean(path)
	}
	// Resolve the longest part that exists; the rest may be about to be made.
	rest := ""
	for p := abs; ; p = filepath.Dir(p) {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return filepath.Join(r, rest)
		}
		if filepath.Dir(p) == p {
			return abs
		}
		rest = filepath.Join(filepath.Base(p), rest)
	}
}

// within tells whether path is dir or lies inside it.
func within(path, dir string) bool {
	rel, err := filepath.Rel(resolved(dir), resolved(path))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

// keepInputs refuses, before any work, to write into a folder that holds
// an input: outputs would overwrite inputs, or later become inputs.
func keepInputs(cmd, out string, inputs []string) error {
	for _, in := range inputs {
		if within(in, out) {
			return fmt.Errorf("%s: the output %s holds the input %s, which the outputs could overwrite: write elsewhere", cmd, out, in)
		}
	}
	return nil
}

// memoryBytes is the machine's physical memory.
func memoryBytes() float64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 1 << 40 // unknown: do not refuse
	}
	return float64(si.Totalram) * float64(si.Unit)
}

// fits refuses work whose buffers would not fit in half the machine's
// memory, before they are allocated: Go ends the process when an
// allocation cannot be made, which no error can report.
func fits(what string, bytes float64) error {
	if total := memoryBytes(); bytes > total/2 {
		return fmt.Errorf("%s needs about %.3g GB of memory; this machine has %.3g GB", what, bytes/1e9, total/1e9)
	}
	return nil
}

// activationFactor bounds a training step's memory per input value: the
// activations of E, G, D and the comparator, and their gradients, are a
// few hundred times the batch itself.
const activationFactor = 256

// maxImages bounds the images one command makes or measures (crops,
// samples, eval crops), before fits weighs their memory.
const maxImages = 1 << 20

// pixels is the float32 bytes of n RGB images of size x size.
func pixels(n, size int) float64 { return float64(n) * 3 * float64(size) * float64(size) * 4 }
