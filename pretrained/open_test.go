package pretrained

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"strings"
	"testing"
)

// The TorchScript file in testdata has fixed weights: features keeps R and
// 2*G of the ImageNet-normalised input plus biases 0.5 and -0.5, then
// averages 4x4 blocks; forward flattens.
func TestTorchScriptComparator(t *testing.T) {
	store := Store{Home: t.TempDir()}
	const size, nb = 16, 4 // nb x nb blocks of 4x4
	x := make([]float32, 3*size*size)
	for i := range x {
		x[i] = float32(i%7)/3 - 1
	}
	mean := []float64{0.485, 0.456, 0.406}
	std := []float64{0.229, 0.224, 0.225}
	norm := func(c, y, xx int) float64 {
		return ((float64(x[(c*size+y)*size+xx])+1)/2 - mean[c]) / std[c]
	}
	want := make([]float64, 2*nb*nb)
	for c, scale := range []float64{1, 2} {
		for by := 0; by < nb; by++ {
			for bx := 0; bx < nb; bx++ {
				var s float64
				for y := 4 * by; y < 4*by+4; y++ {
					for xx := 4 * bx; xx < 4*bx+4; xx++ {
						s += scale * norm(c, y, xx)
					}
				}
				want[(c*nb+by)*nb+bx] = s/16 + []float64{0.5, -0.5}[c]
			}
		}
	}
	for _, tc := range []struct {
		spec  string
		shape [4]int
	}{
		{"../testdata/tiny_comparator.pt:features", [4]int{1, 2, nb, nb}},
		{"../testdata/tiny_comparator.pt", [4]int{1, 2 * nb * nb, 1, 1}},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			c, err := OpenString(tc.spec, store, size)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			got, shape, err := c.Features(x, 1, size, size)
			if err != nil {
				t.Fatal(err)
			}
			if shape != tc.shape {
				t.Fatalf("shape %v, want %v", shape, tc.shape)
			}
			for i := range want {
				if math.Abs(float64(got[i])-want[i]) > 1e-5 {
					t.Fatalf("feature %d = %v, want %v", i, got[i], want[i])
				}
			}
		})
	}
	if _, err := OpenString("../testdata/tiny_comparator.pt:nothing", store, size); err == nil || !strings.Contains(err.Error(), "nothing") {
		t.Fatalf("missing submodule: err = %v", err)
	}
}

func TestComparatorShapes(t *testing.T) {
	store := Store{Home: t.TempDir()}
	tests := []struct {
		spec  string
		size  int
		shape [4]int
	}{
		{"alexnet-random:conv5", 224, [4]int{2, 256, 6, 6}},
		{"alexnet-random:fc6", 128, [4]int{2, 4096, 1, 1}},
		{"alexnet-random:conv1", 224, [4]int{2, 64, 27, 27}},
		{"vgg16-random:conv1_2", 32, [4]int{2, 64, 32, 32}},
		{"vgg16-random:pool2", 32, [4]int{2, 128, 8, 8}},
		{"exemplar:conv3", 0, [4]int{2, 128, 8, 8}},
		{"exemplar:conv4", 0, [4]int{2, 256, 8, 8}},
	}
	x := make([]float32, 2*3*48*48)
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			c, err := OpenString(tc.spec, store, tc.size)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, shape, err := c.Features(x, 2, 48, 48) // resized to the comparator's size
			if err != nil {
				t.Fatal(err)
			}
			if shape != tc.shape {
				t.Fatalf("shape %v, want %v", shape, tc.shape)
			}
		})
	}
	if _, err := OpenString("alexnet-random:conv9", store, 0); err == nil || !strings.Contains(err.Error(), "conv9") {
		t.Fatalf("unknown layer: err = %v", err)
	}
}

func TestShippedRecord(t *testing.T) {
	r, err := ShippedInfo()
	if err != nil {
		t.Fatal(err)
	}
	if r.Classes < 2 || r.HeldoutAcc < 0.6 || !strings.Contains(r.Command, "--task comparator") {
		t.Fatalf("shipped comparator record: %+v", r)
	}
	if sum := sha256.Sum256(exemplarWeights); hex.EncodeToString(sum[:]) != r.SHA256 {
		t.Fatalf("exemplar.json records sha256 %s, the shipped weights have %x", r.SHA256, sum)
	}
}
