package pretrained

import (
	"context"
	"os"
	"strings"
	"testing"
)

// Every architecture, built in or imported, sees 16, 32 and 64 px images:
// at the asked side when it takes it, else enlarged to the least side it
// takes. Asked for by a flag, a side below that least is refused with the
// network, its minimum and the flag. And the enlargement is needed: below
// its least side a network computes no features.
func TestSideFitsEveryArchitecture(t *testing.T) {
	if _, err := os.Stat(NSFWJSPath()); err != nil {
		t.Fatalf("the nsfwjs tarball is missing (%v): run make deps", err)
	}
	store := NewStore(t.TempDir())
	for _, m := range []struct{ dir, name string }{{"mobilenet_v2", "mobilenetv2"}, {"inception_v3", "inceptionv3"}} {
		if _, err := store.ImportTFJS(context.Background(), NSFWJSPath(), m.dir, m.name, "0,1"); err != nil {
			t.Fatal(err)
		}
	}
	specs := []string{"alexnet-random", "alexnet-random:conv5", "vgg16-random", "exemplar", "exemplar:conv4",
		"../testdata/tiny_comparator.pt", "mobilenetv2", "inceptionv3"}
	for _, spec := range specs {
		net, err := Resolve(spec, store)
		if err != nil {
			t.Fatal(err)
		}
		least, err := net.MinSide()
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		t.Logf("%s takes images of at least %d px", spec, least)
		for _, size := range []int{16, 32, 64} {
			side, enlarged, err := net.Side(size, "")
			if err != nil {
				t.Fatalf("%s at %d px: %v", spec, size, err)
			}
			if want := max(size, least); side != want || enlarged != (size < least) {
				t.Fatalf("%s at %d px: side %d (enlarged %v), want %d", spec, size, side, enlarged, want)
			}
			c, err := net.Open(side)
			if err != nil {
				t.Fatalf("%s at %d px: %v", spec, side, err)
			}
			_, _, err = c.Features(make([]float32, 3*size*size), 1, size, size)
			c.Close()
			if err != nil {
				t.Fatalf("%s: %d px images at side %d: %v", spec, size, side, err)
			}
			if size >= least {
				continue
			}
			_, _, err = net.Side(size, "--judge-size")
			for _, want := range []string{spec, "at least", "--judge-size"} {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("%s: --judge-size %d: %v, want an error naming %q", spec, size, err, want)
				}
			}
			raw, err := net.Open(size)
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = raw.Features(make([]float32, 3*size*size), 1, size, size)
			raw.Close()
			if err == nil {
				t.Fatalf("%s computes features at %d px, below its least side %d", spec, size, least)
			}
		}
	}
}
