package runner

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"

	"github.com/deepsim/deepsim/internal/atomicfile"
)

// readLines reads a JSON-lines file of T, a value a line; blank lines are
// skipped.
func readLines[T any](path string) ([]T, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []T
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var v T
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			return out, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		out = append(out, v)
	}
	return out, sc.Err()
}

// keepUpTo drops the lines of a JSON-lines file whose step is after step,
// which a run wrote after its last checkpoint: a resumed run writes them
// again. A partial last line (a crash mid-write) is dropped too. It
// returns the lines it kept.
func keepUpTo[T any](path string, step int64, stepOf func(T) int64) ([]T, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var keep bytes.Buffer
	var kept []T
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		var v T
		if len(line) == 0 || line[len(line)-1] != '\n' || json.Unmarshal(line, &v) != nil || stepOf(v) > step {
			continue
		}
		keep.Write(line)
		kept = append(kept, v)
	}
	if keep.Len() == len(b) {
		return kept, nil
	}
	return kept, atomicfile.WriteFile(path, keep.Bytes())
}
