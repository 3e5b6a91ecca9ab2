package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deepsim/deepsim/internal/hostile"
	"github.com/deepsim/deepsim/internal/syncbuf"
	"github.com/deepsim/deepsim/internal/testimages"
	"github.com/deepsim/deepsim/pretrained"
	"github.com/deepsim/deepsim/runner"
)

// memoryCapKB caps a hostile run's address space: what the files claim is
// far more, and what libtorch needs to start is far less.
const memoryCapKB = 6 << 20

// capped runs the binary under the memory cap and returns its exit status
// and output; a crash (a signal, a panic, Go's fatal error) fails the test.
func capped(t *testing.T, home string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command("sh", append([]string{"-c", `ulimit -v ` + strconv.Itoa(memoryCapKB) + ` && exec "$0" "$@"`, binary}, args...)...)
	cmd.Env = append(os.Environ(), "DEEPSIM_HOME="+home)
	out, _ := cmd.CombinedOutput()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Fatalf("runner %v: killed by %v\n%s", args, ws.Signal(), out)
	}
	for _, crash := range []string{"SIGSEGV", "panic:", "fatal error", "terminate called"} {
		if strings.Contains(string(out), crash) {
			t.Fatalf("runner %v crashed (%s):\n%s", args, crash, out)
		}
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// noTemporaries fails when a folder holds a temporary file left behind.
func noTemporaries(t *testing.T, dir string) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".tmp") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
}

// Every hostile state dict is refused at import, by name and with status
// 1, and the store keeps nothing of it.
func TestHostileStateDicts(t *testing.T) {
	dir, home := t.TempDir(), t.TempDir()
	if err := hostile.WriteStateDicts(dir); err != nil {
		t.Fatal(err)
	}
	for _, f := range hostile.StateDicts {
		t.Run(f.Name, func(t *testing.T) {
			code, out := capped(t, home, "comparator", "import", filepath.Join(dir, f.Name), "--as", "x")
			if code != exitError || !strings.Contains(out, f.Want) {
				t.Fatalf("%s (%s): exit %d, want 1 with %q:\n%s", f.Name, f.Class, code, f.Want, out)
			}
			noTemporaries(t, home)
			if _, err := os.Stat(filepath.Join(home, "comparators", "x.json")); err == nil {
				t.Fatal("a refused file was stored")
			}
		})
	}
}

// A checkpoint whose tensor records reach outside their storage, or that
// is a zip bomb, is refused wherever a run is read, and a refused resume
// leaves the checkpoint as it was.
func TestHostileCheckpoints(t *testing.T) {
	home := t.TempDir()
	data := photos(t)
	run := filepath.Join(t.TempDir(), "run")
	if code, out := runCLI(small(data, run, "--steps", "2", "--lambda-adv", "0")...); code != exitOK {
		t.Fatalf("train: %s", out)
	}
	good, err := os.ReadFile(filepath.Join(run, "checkpoint.pt"))
	if err != nil {
		t.Fatal(err)
	}
	outside, err := hostile.Checkpoint(good)
	if err != nil {
		t.Fatal(err)
	}
	corpus := t.TempDir()
	if err := hostile.WriteStateDicts(corpus); err != nil {
		t.Fatal(err)
	}
	bomb, _ := os.ReadFile(filepath.Join(corpus, "zip-bomb.pth"))
	inputs := t.TempDir()
	testimages.WritePhotos(inputs, 1, 40, 40, 5)
	for name, ckpt := range map[string][]byte{"record outside its storage": outside, "zip bomb": bomb} {
		t.Run(name, func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(run, "checkpoint.pt"), ckpt, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, args := range [][]string{
				{"reconstruct", "--run", run, "--out", t.TempDir(), inputs},
				{"eval", "--run", run, "--data", data, "--n", "4", "--judge", "alexnet-random:conv1"},
				append(small(data, run, "--steps", "4", "--lambda-adv", "0"), "--resume"),
			} {
				code, out := capped(t, home, args...)
				if code != exitError || !(strings.Contains(out, "reach") || strings.Contains(out, "more than")) {
					t.Fatalf("runner %s on a hostile checkpoint: exit %d:\n%s", args[0], code, out)
				}
			}
			if now, _ := os.ReadFile(filepath.Join(run, "checkpoint.pt")); string(now) != string(ckpt) {
				t.Fatal("a refused resume changed the checkpoint")
			}
			noTemporaries(t, run)
		})
	}
}

// TorchScript comparators whose output no comparator may have are refused
// with an error that says what is wrong with it.
func TestHostileComparators(t *testing.T) {
	data := photos(t)
	a, b := filepath.Join(data, "photoa000.png"), filepath.Join(data, "photob001.jpg")
	tests := []struct{ file, want string }{
		{"scalar.pt", "has shape [] for a batch of 2"},
		{"wrong_batch.pt", "for a batch of 2: want one entry per image"},
		{"empty.pt", "it is empty"},
		{"not_finite.pt", "not finite"},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			spec := filepath.Join("..", "..", "testdata", "hostile", tc.file)
			code, out := capped(t, t.TempDir(), "similarity", a, b, "--comparator", spec)
			if code != exitError || !strings.Contains(out, tc.want) {
				t.Fatalf("similarity: exit %d, want 1 with %q:\n%s", code, tc.want, out)
			}
			run := filepath.Join(t.TempDir(), "run")
			code, out = capped(t, t.TempDir(), small(data, run, "--steps", "1", "--comparator", spec)...)
			if code != exitError || !strings.Contains(out, "comparator's output") {
				t.Fatalf("train: exit %d:\n%s", code, out)
			}
			if _, err := os.Stat(run); err == nil {
				t.Fatal("a failed start left its run folder behind")
			}
		})
	}
}

// A second writer of a run folder is refused at once, and the first run
// finishes with its metrics whole.
func TestRunFolderLock(t *testing.T) {
	data := photos(t)
	run := filepath.Join(t.TempDir(), "run")
	first := exec.Command(binary, small(data, run, "--steps", "40", "--lambda-adv", "0")...)
	first.Env = append(os.Environ(), "DEEPSIM_HOME="+t.TempDir())
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	waitForSteps(t, run, 2, time.Minute)
	for _, args := range [][]string{
		small(data, run, "--steps", "40", "--lambda-adv", "0"),
		append(small(data, run, "--steps", "60", "--lambda-adv", "0"), "--resume"),
		{"ablate", "--data", data, "--heldout", data, "--steps", "2", "--out", run},
	} {
		start := time.Now()
		code, out := runCLI(args...)
		if code != exitError || !strings.Contains(out, "in use") || time.Since(start) > time.Second {
			t.Fatalf("runner %s on a run in progress: exit %d after %v:\n%s", args[0], code, time.Since(start), out)
		}
	}
	if err := first.Wait(); err != nil {
		t.Fatalf("the first run: %v", err)
	}
	m, err := runner.ReadMetrics(filepath.Join(run, runner.MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range m {
		if l.Step != int64(i+1) {
			t.Fatalf("metrics.jsonl line %d has step %d", i, l.Step)
		}
	}
	if len(m) != 40 {
		t.Fatalf("%d metrics lines, want 40", len(m))
	}
}

// reconstruct --out DIR DIR writes nothing over its inputs.
func TestReconstructKeepsInputs(t *testing.T) {
	data := photos(t)
	run := filepath.Join(t.TempDir(), "run")
	if code, out := runCLI(small(data, run, "--steps", "1", "--lambda-adv", "0")...); code != exitOK {
		t.Fatal(out)
	}
	inputs := t.TempDir()
	testimages.WritePhotos(inputs, 2, 40, 32, 9)
	os.WriteFile(filepath.Join(inputs, "grid.png"), []byte("an input named like an output"), 0o644)
	before := snapshot(t, inputs)
	code, out := runCLI("reconstruct", "--run", run, "--out", inputs, inputs)
	if code != exitError || !strings.Contains(out, "holds the input") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if after := snapshot(t, inputs); after != before {
		t.Fatalf("the inputs changed:\n%s\n%s", before, after)
	}
}

func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		c, _ := os.ReadFile(filepath.Join(dir, e.Name()))
		b.WriteString(e.Name() + ":" + string(c) + "\n")
	}
	return b.String()
}

// A 1 x 65536 PNG among the training photos is skipped: it costs no more
// than 100 MB of peak memory, where upscaling it would cost gigabytes.
func TestThinPNGStaysSmall(t *testing.T) {
	peak := func(data string) int64 {
		run := filepath.Join(t.TempDir(), "run")
		cmd := exec.Command(binary, small(data, run, "--steps", "1", "--lambda-adv", "0", "--threads", "1")...)
		cmd.Env = append(os.Environ(), "DEEPSIM_HOME="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if strings.Contains(data, "thin") && !strings.Contains(string(out), "thin.png") {
			t.Fatalf("the thin PNG was not named in a warning:\n%s", out)
		}
		return cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss * 1024
	}
	plain := photos(t)
	thin := filepath.Join(t.TempDir(), "thin")
	os.MkdirAll(thin, 0o755)
	testimages.WritePhotos(thin, 3, 96, 80, 2)
	if err := hostile.ThinPNG(filepath.Join(thin, "thin.png")); err != nil {
		t.Fatal(err)
	}
	a, b := peak(plain), peak(thin)
	t.Logf("peak RSS %d MB without the thin PNG, %d MB with it", a>>20, b>>20)
	if b-a > 100<<20 {
		t.Fatalf("the thin PNG raised peak RSS by %d MB", (b-a)>>20)
	}
}

// SIGINT stops every long command with status 130 and leaves no
// temporary file: during an import, as training starts, and while
// reconstructing.
func TestSIGINTEverywhere(t *testing.T) {
	home := t.TempDir()
	big := t.TempDir()
	testimages.WritePhotos(big, 10, 1200, 900, 7)
	run := filepath.Join(t.TempDir(), "run")
	if code, out := runCLI(small(photos(t), run, "--steps", "1", "--lambda-adv", "0")...); code != exitOK {
		t.Fatal(out)
	}
	var out syncbuf.Buffer
	temporary := func() bool {
		m, _ := filepath.Glob(filepath.Join(home, "comparators", ".*tmp*"))
		return len(m) > 0
	}
	logged := func(s string) func() bool { return func() bool { return strings.Contains(out.String(), s) } }
	reconstructing := filepath.Join(t.TempDir(), "recon")
	tests := []struct {
		name string
		args []string
		busy func() bool // the command is at work: the signal comes now
	}{
		{"import", []string{"comparator", "import", nsfwjsTarball(t), "--model", "inception_v3", "--as", "i3"}, temporary},
		{"starting to train", small(big, filepath.Join(t.TempDir(), "r"), "--steps", "5"), logged("images listed")},
		{"reconstruct", []string{"reconstruct", "--run", run, "--out", reconstructing, big}, func() bool {
			m, _ := filepath.Glob(filepath.Join(reconstructing, "*.png"))
			return len(m) > 0
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out.Reset()
			cmd := exec.Command(binary, tc.args...)
			cmd.Env = append(os.Environ(), "DEEPSIM_HOME="+home)
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			for start := time.Now(); !tc.busy(); time.Sleep(5 * time.Millisecond) {
				if time.Since(start) > time.Minute {
					cmd.Process.Kill()
					t.Fatalf("never got to work:\n%s", out.String())
				}
			}
			cmd.Process.Signal(os.Interrupt)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("still running 30 s after SIGINT:\n%s", out.String())
			}
			if code := cmd.ProcessState.ExitCode(); code != exitInterrupted {
				t.Fatalf("exit %d, want %d:\n%s", code, exitInterrupted, out.String())
			}
			noTemporaries(t, home)
		})
	}
}

// nsfwjsTarball is the tarball make deps fetches.
func nsfwjsTarball(t *testing.T) string {
	t.Helper()
	p := pretrained.NSFWJSPath()
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the nsfwjs tarball is missing (%v): run make deps", err)
	}
	return p
}

// An input that is a FIFO is skipped with a warning, not read forever.
func TestFIFOInputIsSkipped(t *testing.T) {
	data := photos(t)
	run := filepath.Join(t.TempDir(), "run")
	if code, out := runCLI(small(data, run, "--steps", "1", "--lambda-adv", "0")...); code != exitOK {
		t.Fatal(out)
	}
	inputs := t.TempDir()
	testimages.WritePhotos(inputs, 1, 40, 32, 3)
	fifo := filepath.Join(inputs, "pipe.png")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	var code int
	var out string
	go func() {
		code, out = runCLI("reconstruct", "--run", run, "--out", t.TempDir(), inputs, fifo)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("reconstruct is still reading the FIFO")
	}
	if code != exitOK || !strings.Contains(out, "not a regular file") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// Without a home for the store, commands that need one say so; nothing
// falls back to a world-writable folder.
func TestNoStoreWithoutHome(t *testing.T) {
	cmd := exec.Command(binary, "comparator", "import", nsfwjsTarball(t), "--model", "mobilenet_v2", "--as", "m")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != exitError || !strings.Contains(string(out), "set DEEPSIM_HOME") {
		t.Fatalf("exit %d:\n%s", cmd.ProcessState.ExitCode(), out)
	}
}
