package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/disintegration/imaging"

	"github.com/deepsim/deepsim/internal/testimages"
	"github.com/deepsim/deepsim/internal/torchfile"
	"github.com/deepsim/deepsim/internal/torchfile/torchfiletest"
	"github.com/deepsim/deepsim/pretrained"
	"github.com/deepsim/deepsim/pretrained/tfjs/tfjstest"
)

func writeStateDict(t *testing.T, path string, tensors []torchfile.Tensor) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := torchfile.Write(f, tensors); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// A full-shape AlexNet state dict with torchvision's key names, in the
// format of Python's torch.save(model.state_dict()), imported through the
// CLI: its conv5 features must match an independent computation.
func TestImportAlexNetMatchesReference(t *testing.T) {
	home := t.TempDir()
	t.Setenv("DEEPSIM_HOME", home)
	tensors := torchfiletest.RandomAlexNet(7)
	file := filepath.Join(t.TempDir(), "alexnet-owt-test.pth")
	writeStateDict(t, file, tensors)

	if code, out := runCLI("comparator", "import", file, "--as", "alexnet"); code != exitOK || !strings.Contains(out, "alexnet:LAYER") {
		t.Fatalf("import: exit %d\n%s", code, out)
	}
	if code, out := runCLI("comparator", "list"); code != exitOK || !strings.Contains(out, "alexnet ") || !strings.Contains(out, "exemplar") {
		t.Fatalf("list: exit %d\n%s", code, out)
	}

	comp, err := pretrained.OpenString("alexnet:conv5", pretrained.Store{Home: home}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer comp.Close()
	rng := rand.New(rand.NewPCG(1, 1))
	x := make([]float32, 3*224*224)
	for i := range x {
		x[i] = rng.Float32()*2 - 1
	}
	got, shape, err := comp.Features(x, 1, 224, 224)
	if err != nil {
		t.Fatal(err)
	}
	if shape != [4]int{1, 256, 6, 6} {
		t.Fatalf("conv5 shape %v", shape)
	}
	want := referenceConv5(tensors, x)
	var maxDiff, maxAbs float64
	for i := range want {
		maxDiff = math.Max(maxDiff, math.Abs(float64(got[i])-want[i]))
		maxAbs = math.Max(maxAbs, math.Abs(want[i]))
	}
	if maxAbs == 0 || maxDiff > 1e-5*math.Max(1, maxAbs) {
		t.Fatalf("conv5 differs from the reference by %g (largest value %g)", maxDiff, maxAbs)
	}
	t.Logf("largest difference %.2g, largest value %.3g", maxDiff, maxAbs)
}

func TestImportRefusesBadStateDicts(t *testing.T) {
	t.Setenv("DEEPSIM_HOME", t.TempDir())
	dir := t.TempDir()
	good := torchfiletest.RandomAlexNet(3)

	renamed := append([]torchfile.Tensor(nil), good...)
	renamed[2].Name = "features.3.weight_renamed"
	reshaped := append([]torchfile.Tensor(nil), good...)
	reshaped[3].Shape = []int{191} // features.3.bias, a view of its 192 values
	writeStateDict(t, filepath.Join(dir, "renamed.pth"), renamed)
	writeStateDict(t, filepath.Join(dir, "reshaped.pth"), reshaped)
	writeStateDict(t, filepath.Join(dir, "good.pth"), good)
	full, err := os.ReadFile(filepath.Join(dir, "good.pth"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "truncated.pth"), full[:len(full)/3], 0o644)
	os.WriteFile(filepath.Join(dir, "legacy.pth"), []byte("\x80\x02\x8a\x0alegacy pickle"), 0o644)

	tests := []struct {
		file, want string
	}{
		{"renamed.pth", `"features.3.weight"`},
		{"reshaped.pth", `"features.3.bias"`},
		{"truncated.pth", "zip"},
		{"legacy.pth", "torch.save(torch.load("},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			code, out := runCLI("comparator", "import", filepath.Join(dir, tc.file), "--as", "alexnet")
			if code != exitError || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d, want %d with %s in:\n%s", code, exitError, tc.want, out)
			}
		})
	}
	if code, out := runCLI("comparator", "list"); code != exitOK || strings.Contains(out, "alexnet ") {
		t.Fatalf("a refused file was stored:\n%s", out)
	}
}

func TestMissingComparatorNamesImportCommand(t *testing.T) {
	t.Setenv("DEEPSIM_HOME", t.TempDir())
	data := photos(t)
	code, out := runCLI(small(data, filepath.Join(t.TempDir(), "run"), "--steps", "1", "--comparator", "alexnet:conv5")...)
	if code != exitError || !strings.Contains(out, "runner comparator import") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	// Random weights only when asked for by name.
	if code, out := runCLI(small(data, filepath.Join(t.TempDir(), "run"), "--steps", "1", "--comparator", "alexnet-random:conv5")...); code != exitOK {
		t.Fatalf("alexnet-random: exit %d\n%s", code, out)
	}
}

// referenceConv5 computes AlexNet's features up to conv5 (after ReLU and
// max-pooling) in plain Go, in float64, from ImageNet-normalised input.
func referenceConv5(ts []torchfile.Tensor, x []float32) []float64 {
	mean := []float64{0.485, 0.456, 0.406}
	std := []float64{0.229, 0.224, 0.225}
	in := vol{c: 3, h: 224, w: 224, v: make([]float64, len(x))}
	for i, v := range x {
		c := i / (224 * 224)
		in.v[i] = ((float64(v)+1)/2 - mean[c]) / std[c]
	}
	w := map[string]torchfile.Tensor{}
	for _, t := range ts {
		w[t.Name] = t
	}
	layer := func(v vol, i string, k, stride, pad int) vol {
		return relu(conv(v, w["features."+i+".weight"], w["features."+i+".bias"], k, stride, pad))
	}
	h := maxpool(layer(in, "0", 11, 4, 2))
	h = maxpool(layer(h, "3", 5, 1, 2))
	h = layer(h, "6", 3, 1, 1)
	h = layer(h, "8", 3, 1, 1)
	return maxpool(layer(h, "10", 3, 1, 1)).v
}

type vol struct {
	c, h, w int
	v       []float64
}

func conv(in vol, wt, b torchfile.Tensor, k, stride, pad int) vol {
	o := wt.Shape[0]
	oh, ow := (in.h+2*pad-k)/stride+1, (in.w+2*pad-k)/stride+1
	out := vol{c: o, h: oh, w: ow, v: make([]float64, o*oh*ow)}
	for oc := 0; oc < o; oc++ {
		for y := 0; y < oh; y++ {
			for xx := 0; xx < ow; xx++ {
				s := float64(b.Data[oc])
				for ic := 0; ic < in.c; ic++ {
					for ky := 0; ky < k; ky++ {
						iy := y*stride + ky - pad
						if iy < 0 || iy >= in.h {
							continue
						}
						row := in.v[(ic*in.h+iy)*in.w:]
						wrow := wt.Data[((oc*in.c+ic)*k+ky)*k:]
						for kx := 0; kx < k; kx++ {
							ix := xx*stride + kx - pad
							if ix >= 0 && ix < in.w {
								s += row[ix] * float64(wrow[kx])
							}
						}
					}
				}
				out.v[(oc*oh+y)*ow+xx] = s
			}
		}
	}
	return out
}

func relu(v vol) vol {
	for i, x := range v.v {
		v.v[i] = math.Max(0, x)
	}
	return v
}

func maxpool(in vol) vol { // 3x3, stride 2
	oh, ow := (in.h-3)/2+1, (in.w-3)/2+1
	out := vol{c: in.c, h: oh, w: ow, v: make([]float64, in.c*oh*ow)}
	for c := 0; c < in.c; c++ {
		for y := 0; y < oh; y++ {
			for x := 0; x < ow; x++ {
				m := math.Inf(-1)
				for ky := 0; ky < 3; ky++ {
					for kx := 0; kx < 3; kx++ {
						m = math.Max(m, in.v[(c*in.h+2*y+ky)*in.w+2*x+kx])
					}
				}
				out.v[(c*oh+y)*ow+x] = m
			}
		}
	}
	return out
}

// TF.js models import through the real binary; bad ones exit with status 1
// and a message that names the problem, never with a crash.
func TestImportTFJS(t *testing.T) {
	home := t.TempDir()
	dir := t.TempDir()
	write := func(name string, m tfjstest.Model, breakIt func(dir string)) string {
		p := filepath.Join(dir, name)
		if err := m.Write(p); err != nil {
			t.Fatal(err)
		}
		if breakIt != nil {
			breakIt(p)
		}
		return p
	}
	lstm := tfjstest.Small()
	lstm.Layers = append(lstm.Layers, tfjstest.Layer{Class: "LSTM", Name: "lstm", Config: map[string]any{}, Inbound: []string{"flat"}})
	wide := tfjstest.Small()
	wide.Layers[14].Config["units"] = 6
	tarball := filepath.Join(dir, "pkg.tgz")
	if err := tfjstest.Small().WriteTarball(tarball, "dist/models/small"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(tarball)
	truncated := filepath.Join(dir, "truncated.tgz")
	os.WriteFile(truncated, b[:len(b)/2], 0o644)

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"a model folder", []string{write("good", tfjstest.Small(), nil)}, exitOK, "default taps relu6+act"},
		{"an npm tarball", []string{tarball, "--model", "small"}, exitOK, "input 9x9, range 0,1"},
		{"unsupported layer class", []string{write("lstm", lstm, nil)}, exitError, "layer class LSTM is not supported"},
		{"manifest larger than its shards", []string{write("short", tfjstest.Small(), func(p string) {
			s := filepath.Join(p, "group1-shard1of1.bin")
			b, _ := os.ReadFile(s)
			os.WriteFile(s, b[:len(b)-8], 0o644)
		})}, exitError, "the weights manifest describes"},
		{"truncated tarball", []string{truncated, "--model", "small"}, exitError, "truncated"},
		{"shape mismatch", []string{write("wide", wide, nil)}, exitError, `weight "dense/kernel" has shape [144 5]`},
		{"unknown input range", []string{write("range", tfjstest.Small(), nil), "--input", "0,255"}, exitError, `--input "0,255"`},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"comparator", "import"}, tc.args...)
			args = append(args, "--as", fmt.Sprintf("m%d", i))
			cmd := exec.Command(binary, args...)
			cmd.Env = append(os.Environ(), "DEEPSIM_HOME="+home)
			out, err := cmd.CombinedOutput()
			code := cmd.ProcessState.ExitCode()
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				t.Fatalf("killed by %v: %v\n%s", ws.Signal(), err, out)
			}
			if code != tc.code || !strings.Contains(string(out), tc.want) || strings.Contains(string(out), "panic") {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, tc.code, tc.want, out)
			}
		})
	}
	// The imported model works as a comparator, by its default taps or a
	// named layer.
	t.Setenv("DEEPSIM_HOME", home)
	a, bimg := filepath.Join(dir, "a.png"), filepath.Join(dir, "b.png")
	imaging.Save(testimages.Photo(1, 40, 40), a)
	imaging.Save(testimages.Photo(2, 40, 40), bimg)
	for _, spec := range []string{"m0", "m0:conv1", "m1:relu6+gap"} {
		if code, out := runCLI("similarity", a, bimg, "--comparator", spec); code != exitOK || !strings.Contains(out, "a.png: ") {
			t.Fatalf("similarity with %s: exit %d\n%s", spec, code, out)
		}
	}
	if code, out := runCLI("comparator", "list"); code != exitOK || !strings.Contains(out, "m1               keras") {
		t.Fatalf("list:\n%s", out)
	}
}
