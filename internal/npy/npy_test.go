package npy

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	for _, shape := range [][]int{{3}, {2, 3}, {1, 4, 2, 2}, {0, 5}} {
		n := 1
		for _, d := range shape {
			n *= d
		}
		data := make([]float32, n)
		for i := range data {
			data[i] = float32(i)*0.5 - 3
		}
		var b bytes.Buffer
		if err := Write(&b, shape, data); err != nil {
			t.Fatal(err)
		}
		if pre := strings.Index(b.String(), "\n") + 1; pre%64 != 0 {
			t.Fatalf("shape %v: data starts at byte %d, not a multiple of 64", shape, pre)
		}
		gotShape, got, err := Read(&b, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(gotShape, shape) || (n > 0 && !reflect.DeepEqual(got, data)) {
			t.Fatalf("shape %v: read %v %v", shape, gotShape, got)
		}
	}
}

// A header as NumPy 1.x writes it for np.save of a (2, 3) float32 array.
const numpyHeader = "\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }                                                            \n"

func TestReadRefuses(t *testing.T) {
	tests := []struct{ name, file, want string }{
		{"not npy", "hello", "not a .npy file"},
		{"float64", strings.Replace(numpyHeader, "<f4", "<f8", 1) + strings.Repeat("\x00", 48), `dtype "<f8"`},
		{"fortran", strings.Replace(numpyHeader, "False", "True ", 1) + strings.Repeat("\x00", 24), "Fortran"},
		{"short data", numpyHeader + strings.Repeat("\x00", 20), "needs 24 bytes"},
		{"too large", "\x93NUMPY\x01\x00\x46\x00{'descr': '<f4', 'fortran_order': False, 'shape': (99999999, 99999), }\n", "more than"},
	}
	for _, tc := range tests {
		if _, _, err := Read(strings.NewReader(tc.file), 1<<20); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	if shape, data, err := Read(strings.NewReader(numpyHeader+strings.Repeat("\x00", 24)), 1<<20); err != nil || len(data) != 6 || len(shape) != 2 {
		t.Fatalf("NumPy's own header: %v %v %v", shape, data, err)
	}
}
