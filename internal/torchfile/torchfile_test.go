package torchfile

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

func TestRewriteKeepsEveryTensor(t *testing.T) {
	tests := []struct {
		name    string
		tensors []Tensor
	}{
		{"one tensor (SETITEM)", []Tensor{{Name: "w", Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}}}},
		{"several tensors", []Tensor{
			{Name: "a.weight", Shape: []int{2, 1, 1, 2}, Data: []float32{1, -2, 3, -4}},
			{Name: "a.bias", Shape: []int{2}, Data: []float32{0.5, 0.25}},
			{Name: "view", Shape: []int{1}, Data: []float32{7, 8}}, // a view of a larger storage
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var py, plain bytes.Buffer
			if err := Write(&py, tc.tensors); err != nil {
				t.Fatal(err)
			}
			if err := Rewrite(bytes.NewReader(py.Bytes()), int64(py.Len()), &plain); err != nil {
				t.Fatal(err)
			}
			// The rewritten pickle parses to the same entries.
			var again bytes.Buffer
			if err := Rewrite(bytes.NewReader(plain.Bytes()), int64(plain.Len()), &again); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(plain.Bytes(), again.Bytes()) {
				t.Fatal("rewriting a rewritten file changed it")
			}
			for _, f := range []string{"\x80\x02}(", "u."} {
				if !bytes.Contains(plain.Bytes(), []byte(f)) {
					t.Fatalf("rewritten pickle lacks %q", f)
				}
			}
			for _, f := range []string{"OrderedDict"} {
				if bytes.Contains(plain.Bytes(), []byte(f)) {
					t.Fatalf("rewritten pickle still has %q", f)
				}
			}
		})
	}
}

func TestParseStateDict(t *testing.T) {
	in := []Tensor{{Name: "x", Shape: []int{2, 2}, Data: []float32{1, 2, 3, 4}}, {Name: "y", Shape: []int{3}, Data: []float32{1, 2, 3}}}
	got, err := parseStateDict(pythonPickle(func() []Entry {
		var e []Entry
		for i, t := range in {
			e = append(e, Entry{Name: t.Name, StorageType: "FloatStorage", Key: string(rune('0' + i)), Location: "cpu",
				Numel: len(t.Data), Shape: t.Shape, Stride: contiguousStrides(t.Shape)})
		}
		return e
	}()))
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{
		{Name: "x", StorageType: "FloatStorage", Key: "0", Location: "cpu", Numel: 4, Shape: []int{2, 2}, Stride: []int{2, 1}},
		{Name: "y", StorageType: "FloatStorage", Key: "1", Location: "cpu", Numel: 3, Shape: []int{3}, Stride: []int{1}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("parsed %+v\nwant %+v", got, want)
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name string
		code string
	}{
		{"truncated", "\x80\x02}(X\x01\x00\x00"},
		{"not a dict", "\x80\x02K\x05."},
		{"non-tensor value", "\x80\x02}(X\x01\x00\x00\x00aK\x01u."},
		{"unknown global", "\x80\x02cos\nsystem\n)R."},
		{"unknown opcode", "\x80\x02\xff."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseStateDict([]byte(tc.code)); err == nil {
				t.Fatal("parsed")
			} else if tc.name != "truncated" && !errors.Is(err, errUnsupported) {
				t.Fatalf("err = %v", err)
			}
		})
	}
}

func TestFloatsReadsWhatWriteWrote(t *testing.T) {
	want := []Tensor{
		{Name: "a.weight", Shape: []int{2, 3}, Data: []float32{1, -2, 3.5, 4, 5, 6e-8}},
		{Name: "a.bias", Shape: []int{3}, Data: []float32{0.25, 0, -1}},
	}
	var buf bytes.Buffer
	if err := Write(&buf, want); err != nil {
		t.Fatal(err)
	}
	got, err := Floats(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("read %d tensors, want %d", len(got), len(want))
	}
	for _, w := range want {
		g := got[w.Name]
		if len(g) != len(w.Data) {
			t.Fatalf("%s: %d values, want %d", w.Name, len(g), len(w.Data))
		}
		for i := range g {
			if g[i] != float64(w.Data[i]) {
				t.Fatalf("%s[%d] = %v, want %v", w.Name, i, g[i], w.Data[i])
			}
		}
	}
}
