package main

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/disintegration/imaging"

	"github.com/deepsim/deepsim/graphs"
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
// CLI, keeps its weights exactly.
func TestImportAlexNetKeepsItsWeights(t *testing.T) {
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

	// The stored weights give the features that the file's own bytes give
	// (graphs/alexnet_test.go checks those against a plain-Go AlexNet).
	comp, err := pretrained.OpenString("alexnet:conv5", pretrained.Store{Home: home}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer comp.Close()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var readable bytes.Buffer
	if err := torchfile.Rewrite(bytes.NewReader(raw), int64(len(raw)), &readable); err != nil {
		t.Fatal(err)
	}
	direct, err := graphs.NewComparator(graphs.ComparatorSpec{Arch: "alexnet", Layer: "conv5", WeightsData: readable.Bytes()})
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	x := make([]float32, 3*224*224)
	for i := range x {
		x[i] = float32(math.Sin(float64(i)))
	}
	var feats [2][]float32
	for i, c := range []*graphs.Comparator{comp, direct} {
		if feats[i], _, err = c.Features(x, 1, 224, 224); err != nil {
			t.Fatal(err)
		}
	}
	got, want := feats[0], feats[1]
	if !slices.Equal(got, want) {
		t.Fatal("the imported weights give other conv5 features than the file's")
	}
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
