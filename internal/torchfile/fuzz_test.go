package torchfile

import (
	"bytes"
	"io"
	"testing"
)

// FuzzCheck feeds the reader of untrusted state dicts anything: it
// returns records or an error, never panics, and records it accepts lie
// within their storages, so Rewrite copies them.
func FuzzCheck(f *testing.F) {
	var good bytes.Buffer
	Write(&good, []Tensor{{Name: "w", Shape: []int{2, 2}, Data: []float32{1, 2, 3, 4}}, {Name: "b", Shape: []int{1}, Data: []float32{5, 6}}})
	f.Add(good.Bytes())
	var plain bytes.Buffer
	WritePlain(&plain, []Tensor{{Name: "x", Shape: []int{3}, Data: []float32{1, 2, 3}}})
	f.Add(plain.Bytes())
	f.Add([]byte("PK\x03\x04 not really"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := Check(bytes.NewReader(b), int64(len(b))); err != nil {
			return
		}
		if err := Rewrite(bytes.NewReader(b), int64(len(b)), io.Discard); err != nil {
			// Check read only the records; the storages may still be
			// unreadable (a corrupt deflate stream).
			return
		}
	})
}
