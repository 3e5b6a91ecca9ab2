package pipeline

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/deepsim/deepsim/internal/testimages"
	"github.com/deepsim/deepsim/internal/turbojpeg"
	"github.com/disintegration/imaging"
)

func TestOrderEpochs(t *testing.T) {
	for _, n := range []int{1, 2, 3, 7, 64, 1000, 4097} {
		o := NewOrder(n, 42)
		epoch := func(e int64) []int {
			out := make([]int, n)
			for k := range n {
				item, got := o.At(e*int64(n) + int64(k))
				if got != e {
					t.Fatalf("n=%d: position %d is in epoch %d, want %d", n, e*int64(n)+int64(k), got, e)
				}
				out[k] = item
			}
			return out
		}
		e0, e1 := epoch(0), epoch(1)
		for _, e := range [][]int{e0, e1} {
			seen := make([]bool, n)
			for _, item := range e {
				if item < 0 || item >= n || seen[item] {
					t.Fatalf("n=%d: item %d drawn twice or out of range in one epoch", n, item)
				}
				seen[item] = true
			}
		}
		if n >= 7 {
			if slices.Equal(e0, e1) {
				t.Errorf("n=%d: epochs 0 and 1 have one order", n)
			}
			other := NewOrder(n, 43)
			same := 0
			for k := range n {
				if item, _ := other.At(int64(k)); item == e0[k] {
					same++
				}
			}
			if same == n {
				t.Errorf("n=%d: seeds 42 and 43 give one order", n)
			}
		}
		if again := NewOrder(n, 42); func() bool {
			for k := range n {
				if item, _ := again.At(int64(n + k)); item != e1[k] {
					return false
				}
			}
			return true
		}() == false {
			t.Errorf("n=%d: one seed gave two orders", n)
		}
	}
}

// TestDrawCropDistribution checks the crop policy's statistics: the side
// log-uniform between its bounds, the position uniform.
func TestDrawCropDistribution(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const draws = 200000
	w, h := 500, 375
	opt := CropOptions{Size: 64, MinScale: 0.1}
	lo, hi := math.Log(64), math.Log(375)
	var sumLog, sumLog2, sumU, sumU2 float64
	for range draws {
		r := DrawCrop(rng, w, h, opt)
		if r.Dx() != r.Dy() || r.Dx() < 64 || r.Dx() > 375 || !r.In(image.Rect(0, 0, w, h)) {
			t.Fatalf("crop %v", r)
		}
		l := (math.Log(float64(r.Dx())) - lo) / (hi - lo)
		sumLog += l
		sumLog2 += l * l
		if free := w - r.Dx(); free > 0 {
			u := (float64(r.Min.X) + 0.5) / float64(free+1)
			sumU += u
			sumU2 += u * u
		}
	}
	meanLog, varLog := sumLog/draws, sumLog2/draws-(sumLog/draws)*(sumLog/draws)
	meanU, varU := sumU/draws, sumU2/draws-(sumU/draws)*(sumU/draws)
	// Uniform on [0,1]: mean 1/2, variance 1/12.
	for _, c := range []struct {
		name      string
		got, want float64
	}{{"mean log side", meanLog, 0.5}, {"variance of log side", varLog, 1.0 / 12}, {"mean x", meanU, 0.5}, {"variance of x", varU, 1.0 / 12}} {
		if math.Abs(c.got-c.want) > 0.01 {
			t.Errorf("%s = %.4f, want %.4f", c.name, c.got, c.want)
		}
	}
}

// writeJPEGs writes n synthetic photos of w x h as JPEG files.
func writeJPEGs(t testing.TB, dir string, n, w, h int) []string {
	t.Helper()
	var out []string
	for i := range n {
		b, err := turbojpeg.Encode(testimages.Photo(uint64(i), w, h), 90)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, fmt.Sprintf("img-%03d.jpg", i))
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// The loader's JPEG crop, decoded at a reduced DCT scale, covers the same
// region as the crop policy cuts from the whole decoded image, and looks
// the same.
func TestJPEGCropMatchesWholeImageCrop(t *testing.T) {
	dir := t.TempDir()
	paths := writeJPEGs(t, dir, 1, 600, 400)
	src, err := List([]string{dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	opt := LoaderOptions{Size: 48, MinScale: 0.1, MaxSide: 300}
	l := NewLoader(src, opt)
	defer l.Close()
	whole, err := Decode(paths[0], DecodeOptions{MinSide: opt.Size, MaxSide: opt.MaxSide})
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	const crops = 40
	for p := range int64(crops) {
		got := l.Crop(0, 9, p, true)
		rng := rand.New(rand.NewPCG(9, uint64(p)<<4))
		want := policyCrop(rng, whole, CropOptions{Size: opt.Size, MinScale: opt.MinScale})
		var diff float64
		for i := range got.Pix {
			diff += math.Abs(float64(got.Pix[i]) - float64(want.Pix[i]))
		}
		total += diff / float64(len(got.Pix))
	}
	if mean := total / crops; mean > 8 {
		t.Fatalf("mean absolute difference %.2f levels between the loader's crops and the policy's", mean)
	}
	if c := l.Counts(); c.Drawn != crops || c.Bad != 0 {
		t.Fatalf("counts %+v", c)
	}
}

func TestRowsAreOneBatchWhoeverBuildsThem(t *testing.T) {
	dir := t.TempDir()
	writeJPEGs(t, dir, 5, 160, 120)
	testimages.WritePhotos(dir, 4, 150, 110, 20) // PNG and JPEG by Go
	src, err := List([]string{dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	opt := LoaderOptions{Size: 32, MinScale: 0.2, MaxSide: 100}
	whole := NewLoader(src, LoaderOptions{Size: 32, MinScale: 0.2, MaxSide: 100, CacheBytes: 64 << 20})
	defer whole.Close()
	const n = 6
	for index := range int64(4) {
		all := whole.Rows(3, index, n, 0, n, true)
		var parts []float32
		for _, r := range [][2]int{{0, 2}, {2, 4}, {4, 6}} {
			rank := NewLoader(src, opt) // no cache: every row decodes its region
			b := rank.Rows(3, index, n, r[0], r[1], true)
			if got := rank.Counts().Decodes; got != int64(r[1]-r[0]) {
				t.Fatalf("rows %v decoded %d images, want %d", r, got, r[1]-r[0])
			}
			if b.Offset != r[0] || b.Global != n || b.N != r[1]-r[0] {
				t.Fatalf("rows %v: offset %d, global %d, n %d", r, b.Offset, b.Global, b.N)
			}
			parts = append(parts, b.Data...)
			rank.Close()
		}
		if !slices.Equal(all.Data, parts) {
			t.Fatalf("batch %d: three processes' rows differ from the whole batch", index)
		}
	}
}

// A stream interrupted in the middle of epoch 2 and resumed by a new
// loader (empty cache) gives the same bytes as the one that went on.
func TestStreamResumesMidEpoch(t *testing.T) {
	dir := t.TempDir()
	writeJPEGs(t, dir, 7, 160, 120)
	src, err := List([]string{dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	opt := LoaderOptions{Size: 32, MinScale: 0.2, MaxSide: 100, CacheBytes: 64 << 20}
	build := func(l *Loader, seed uint64) func(int64) Batch {
		return func(i int64) Batch { return l.Rows(seed, i, 3, 0, 3, true) }
	}
	collect := func(build func(int64) Batch, start int64, n int) []Batch {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var out []Batch
		for b := range Stream(ctx, build, start, 3, 2) {
			out = append(out, b)
			if len(out) == n {
				break
			}
		}
		return out
	}
	first := NewLoader(src, opt)
	defer first.Close()
	full := collect(build(first, 5), 0, 8)
	// Batch 3 is positions 9..11: the middle of epoch 2 (positions 7..13).
	resumed := NewLoader(src, opt)
	defer resumed.Close()
	tail := collect(build(resumed, 5), 3, 5)
	for i, b := range tail {
		if b.Index != int64(3+i) || !slices.Equal(b.Data, full[3+i].Data) {
			t.Fatalf("resumed batch %d differs from the uninterrupted one", 3+i)
		}
	}
	for _, v := range full[0].Data {
		if v < -1 || v > 1 {
			t.Fatalf("value %v outside [-1,1]", v)
		}
	}
	if slices.Equal(full[0].Data, full[1].Data) {
		t.Fatal("consecutive batches are identical")
	}
	other := NewLoader(src, opt)
	defer other.Close()
	if slices.Equal(other.Rows(6, 0, 3, 0, 3, true).Data, full[0].Data) {
		t.Fatal("a different seed gave the same batch")
	}
}

// tarMember is one member of a test shard.
type tarMember struct {
	name string
	data []byte
}

func writeTar(t testing.TB, path string, members []tarMember) {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		if err := tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		tw.Write(m.data)
	}
	tw.Close()
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func jpegBytes(t testing.TB, seed uint64) []byte {
	b, err := turbojpeg.Encode(testimages.Photo(seed, 120, 90), 90)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestShards(t *testing.T) {
	dir := t.TempDir()
	good := []tarMember{
		{"s/000.jpg", jpegBytes(t, 1)}, {"s/000.cls", []byte("3")},
		{"s/001.jpeg", jpegBytes(t, 2)}, {"s/001.json", []byte("{}")},
		{"s/002.txt", []byte("a caption, and no image")},
	}
	writeTar(t, filepath.Join(dir, "train-000.tar"), good)
	writeTar(t, filepath.Join(dir, "train-001.tar"), []tarMember{{"s/003.jpg", jpegBytes(t, 3)}, {"s/004.png", func() []byte {
		var b bytes.Buffer
		if err := png.Encode(&b, testimages.Photo(4, 100, 80)); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}()}})
	src, err := List([]string{filepath.Join(dir, "train-{000..001}.tar")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for i := range src.Len() {
		names = append(names, strings.TrimPrefix(src.Name(i), dir+"/"))
	}
	want := []string{"train-000.tar:s/000.jpg", "train-000.tar:s/001.jpeg", "train-001.tar:s/003.jpg", "train-001.tar:s/004.png"}
	if !slices.Equal(names, want) {
		t.Fatalf("items %v, want %v", names, want)
	}
	b, err := src.Read(1)
	if err != nil || !bytes.Equal(b, good[2].data) {
		t.Fatalf("member 1 read back %d bytes (%v), want the file's %d", len(b), err, len(good[2].data))
	}
	glob, err := List([]string{filepath.Join(dir, "train-*.tar")}, nil)
	if err != nil || glob.Fingerprint() != src.Fingerprint() {
		t.Fatalf("a glob and a brace range of the same shards: %v, fingerprints %x, %x", err, glob.Fingerprint(), src.Fingerprint())
	}
	// A copy elsewhere is the same index.
	other := t.TempDir()
	for _, name := range []string{"train-000.tar", "train-001.tar"} {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		os.WriteFile(filepath.Join(other, name), b, 0o644)
	}
	moved, err := List([]string{other}, nil)
	if err != nil || moved.Fingerprint() != src.Fingerprint() {
		t.Fatalf("the same shards in another folder: %v, fingerprints %x, %x", err, moved.Fingerprint(), src.Fingerprint())
	}
	// A list file names them too.
	list := filepath.Join(dir, "list.txt")
	os.WriteFile(list, []byte("# shards\ntrain-000.tar\n\ntrain-001.tar\n"), 0o644)
	listed, err := List([]string{list}, nil)
	if err != nil || listed.Len() != 4 {
		t.Fatalf("list file: %v, %d items", err, listed.Len())
	}
}

func TestBadData(t *testing.T) {
	dir := t.TempDir()
	writeJPEGs(t, dir, 6, 120, 90)
	os.WriteFile(filepath.Join(dir, "zero.jpg"), nil, 0o644)
	writeTar(t, filepath.Join(dir, "a.tar"), []tarMember{
		{"k1.jpg", jpegBytes(t, 7)},
		{"k2.jpg", []byte("not a JPEG at all, though it says so")},
		{"k3.txt", []byte("a member that is no image")},
		{"k4.jpg", jpegBytes(t, 8)},
	})
	// A truncated shard: its last member is cut off.
	var full bytes.Buffer
	writeTar(t, filepath.Join(dir, "b.tmp"), []tarMember{{"m1.jpg", jpegBytes(t, 9)}, {"m2.jpg", jpegBytes(t, 10)}})
	b, _ := os.ReadFile(filepath.Join(dir, "b.tmp"))
	full.Write(b)
	os.Remove(filepath.Join(dir, "b.tmp"))
	os.WriteFile(filepath.Join(dir, "b.tar"), full.Bytes()[:len(b)-1024-300], 0o644)

	var listWarn []string
	src, err := List([]string{dir}, func(s Skipped) { listWarn = append(listWarn, s.Path+": "+s.Err.Error()) })
	if err != nil {
		t.Fatal(err)
	}
	// 6 JPEGs, zero.jpg, a.tar's three images, b.tar's first.
	if src.Len() != 11 {
		t.Fatalf("%d items listed, want 11", src.Len())
	}
	if len(listWarn) != 1 || !strings.Contains(listWarn[0], "b.tar") {
		t.Fatalf("warnings about shards: %q; want one naming b.tar", listWarn)
	}
	run := func() ([]float32, map[string]int) {
		var mu sync.Mutex
		warned := map[string]int{}
		l := NewLoader(src, LoaderOptions{Size: 32, MinScale: 0.2, MaxSide: 100, CacheBytes: 1 << 20, Warn: func(s Skipped) {
			mu.Lock()
			defer mu.Unlock()
			warned[filepath.Base(s.Path)]++
		}})
		defer l.Close()
		var data []float32
		for i := range int64(8) { // 32 draws: every item at least twice
			data = append(data, l.Rows(1, i, 4, 0, 4, true).Data...)
		}
		if c := l.Counts(); c.Bad != 2*3 && c.Bad < 4 {
			t.Fatalf("counts %+v: want the two bad items counted each time they are drawn", c)
		}
		return data, warned
	}
	a, warned := run()
	again, _ := run()
	if !slices.Equal(a, again) {
		t.Fatal("two runs over bad data gave different batches: the substitutes differ")
	}
	if len(warned) != 2 || warned["zero.jpg"] != 1 || warned["a.tar:k2.jpg"] != 1 {
		t.Fatalf("warned %v: want zero.jpg and a.tar:k2.jpg once each", warned)
	}
	// Not a tar at all: refused, by name.
	bad := filepath.Join(t.TempDir(), "c.tar")
	os.WriteFile(bad, bytes.Repeat([]byte("not a tar "), 200), 0o644)
	if _, err := List([]string{bad}, nil); err == nil || !strings.Contains(err.Error(), "c.tar is not a tar") {
		t.Fatalf("a shard that is not a tar: err = %v", err)
	}
}

func TestBraces(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"a", []string{"a"}},
		{"s-{008..011}.tar", []string{"s-008.tar", "s-009.tar", "s-010.tar", "s-011.tar"}},
		{"{a,b}/{1..2}", []string{"a/1", "a/2", "b/1", "b/2"}},
	} {
		got, err := braces(c.in)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("braces(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"a{1..", "{5..2}", "{x..y}", "{0..99999999}"} {
		if _, err := braces(in); err == nil {
			t.Errorf("braces(%q): no error", in)
		}
	}
}

// Hostile sizes cost what they did: a 1 x 65536 JPEG is cropped from a
// 1-pixel-wide decode, and a header declaring a huge size is refused
// before any pixel memory.
func TestHostileSizes(t *testing.T) {
	dir := t.TempDir()
	thin, err := turbojpeg.Encode(image.NewNRGBA(image.Rect(0, 0, 1, 65500)), 90)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "thin.jpg"), thin, 0o644)
	huge := append([]byte(nil), jpegBytes(t, 1)...)
	// The SOF0 marker's height and width fields (FFC0, length, precision).
	i := bytes.Index(huge, []byte{0xff, 0xc0})
	copy(huge[i+5:], []byte{0xff, 0xf0, 0xff, 0xf0})
	os.WriteFile(filepath.Join(dir, "huge.jpg"), huge, 0o644)
	src, err := List([]string{dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var reasons []string
	l := NewLoader(src, LoaderOptions{Size: 32, MinScale: 0.1, MaxSide: 512, Warn: func(s Skipped) { reasons = append(reasons, s.Path+": "+s.Err.Error()) }})
	defer l.Close()
	l.Crop(0, 1, 0, false) // huge.jpg: bad, substituted by thin.jpg
	l.Crop(1, 1, 1, false)
	if len(reasons) != 1 || !strings.Contains(reasons[0], "limit") {
		t.Fatalf("warnings %q: want the huge header refused by its limit", reasons)
	}
	if c := l.Counts(); c.Bad != 1 || c.Decodes != 2 {
		t.Fatalf("counts %+v", c)
	}
}

func TestExemplarClasses(t *testing.T) {
	dir := t.TempDir()
	writeJPEGs(t, dir, 3, 400, 300)
	os.WriteFile(filepath.Join(dir, "zero.jpg"), nil, 0o644)
	src, err := List([]string{dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	warned := 0
	l := NewLoader(src, LoaderOptions{Size: 64, Warn: func(Skipped) { warned++ }})
	defer l.Close()
	ex, err := NewExemplar(l, 6, 64, 1, DecodeOptions{MinSide: 64, MaxSide: 512})
	if err != nil {
		t.Fatal(err)
	}
	if len(ex.Seeds) != 6 || warned != 1 {
		t.Fatalf("%d seeds, %d warnings (want 6 and one, for zero.jpg)", len(ex.Seeds), warned)
	}
	for i := 1; i < len(ex.Seeds); i++ {
		if ex.Seeds[i].GradEnergy > ex.Seeds[i-1].GradEnergy {
			t.Fatal("seeds are not ordered by texture")
		}
	}
	a, b := ex.Batch(2, 7, 5), ex.Batch(2, 7, 5)
	if !slices.Equal(a.Data, b.Data) || !slices.Equal(a.Labels, b.Labels) {
		t.Fatal("the same batch index gave different batches")
	}
	if a.N != 5 || len(a.Labels) != 5 || len(a.Data) != 5*3*64*64 {
		t.Fatalf("batch of %d with %d labels and %d values", a.N, len(a.Labels), len(a.Data))
	}
	for _, l := range a.Labels {
		if l < 0 || l >= 6 {
			t.Fatalf("label %d", l)
		}
	}
	h := ex.Heldout(2, 3)
	if h.N != 18 || h.Labels[0] != 0 || h.Labels[7] != 1 {
		t.Fatalf("held-out set: %d samples, labels %v", h.N, h.Labels[:8])
	}
	if slices.Equal(h.Data[:3*64*64], ex.Batch(2, 0, 1).Data) {
		t.Fatal("held-out sample equals a training sample")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	if slices.Equal(ex.Augment(rng, 0).Pix, ex.Augment(rng, 0).Pix) {
		t.Fatal("two augmentations are identical")
	}
	// Too few usable images is an error, not a hang.
	empty := t.TempDir()
	os.WriteFile(filepath.Join(empty, "zero.jpg"), nil, 0o644)
	src2, _ := List([]string{empty}, nil)
	l2 := NewLoader(src2, LoaderOptions{Size: 64})
	defer l2.Close()
	if _, err := NewExemplar(l2, 4, 64, 1, DecodeOptions{MinSide: 64}); err == nil {
		t.Fatal("no usable image, and no error")
	}
}

// The cache holds a set that fits its budget, holds nothing of one that
// does not (those crops are decoded by region), and neither changes a
// crop's bytes; nor does closing the loader.
func TestCache(t *testing.T) {
	dir := t.TempDir()
	writeJPEGs(t, dir, 6, 160, 120)
	src, err := List([]string{dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	opt := LoaderOptions{Size: 32, MinScale: 0.2, MaxSide: 100}
	ref := NewLoader(src, opt) // no cache
	defer ref.Close()
	want := ref.Rows(5, 0, 200, 0, 200, true).Data
	for _, tc := range []struct {
		name   string
		budget int64
		close  bool
		cached bool // the set is kept, so most crops are hits
	}{
		{"fits", 64 << 20, false, true},
		{"too large", 100 << 10, false, false}, // 6 images of 77 kB at full scale
		{"closed", 64 << 20, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opt.CacheBytes = tc.budget
			l := NewLoader(src, opt)
			defer l.Close()
			if tc.close {
				l.Close()
			}
			if got := l.Rows(5, 0, 200, 0, 200, true).Data; !slices.Equal(got, want) {
				t.Fatal("crops differ from the uncached loader's")
			}
			c := l.Counts()
			if tc.cached && (c.Cached == 0 || c.Decodes > int64(6*len(turbojpeg.Scales))) {
				t.Fatalf("a set that fits: %d bytes cached, %d decodes for 200 crops", c.Cached, c.Decodes)
			}
			if !tc.cached && (c.Cached != 0 || c.Decodes != 200) {
				t.Fatalf("%d bytes cached, %d decodes for 200 crops; want none kept, 200", c.Cached, c.Decodes)
			}
		})
	}
}

// policyCrop is the crop policy written out whole, which the loader's
// crops must follow: one square region at a random scale and position from
// img (DrawCrop), resized to opt.Size, then flipped at random.
func policyCrop(rng *rand.Rand, img *image.NRGBA, opt CropOptions) *image.NRGBA {
	b := img.Bounds()
	r := DrawCrop(rng, b.Dx(), b.Dy(), opt).Add(b.Min)
	crop := imaging.Crop(img, r)
	if r.Dx() != opt.Size {
		crop = imaging.Resize(crop, opt.Size, opt.Size, imaging.Linear)
	}
	if rng.IntN(2) == 1 {
		crop = imaging.FlipH(crop)
	}
	return crop
}
