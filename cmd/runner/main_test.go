package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deepsim/deepsim/internal/testimages"
	"github.com/deepsim/deepsim/pretrained"
	"github.com/deepsim/deepsim/runner"
)

var binary string

// TestMain builds the runner binary once: signal handling can only be
// tested on a real process.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "runner-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "runner")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build runner: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func photos(t *testing.T) string { return testimages.PhotoDir(t, 3, 96, 80, 2) }

// small are the flags of a run that takes a fraction of a second a step.
// small is a tiny autoencoder run. It names its comparator: the default
// depends on what the user's store holds (make models imports the
// MobileNetV2), and these tests must not.
func small(data, out string, extra ...string) []string {
	return append([]string{"train", "--task", "autoencoder", "--data", data, "--out", out,
		"--size", "32", "--batch", "4", "--seed", "3", "--comparator", "exemplar:conv2"}, extra...)
}

func runCLI(args ...string) (int, string) {
	var buf bytes.Buffer
	code := run(context.Background(), args, &buf, &buf)
	return code, buf.String()
}

func TestUsageErrors(t *testing.T) {
	data := photos(t)
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no command", nil, exitUsage, "Commands:"},
		{"unknown command", []string{"frobnicate"}, exitUsage, "unknown command"},
		{"train without out", []string{"train", "--data", data}, exitUsage, "--out is required"},
		{"bad flag", []string{"train", "--nope"}, exitUsage, "nope"},
		{"bad size", small(data, filepath.Join(t.TempDir(), "r"), "--size", "48"), exitError, "power of two"},
		{"missing data", small(filepath.Join(t.TempDir(), "none"), filepath.Join(t.TempDir(), "r")), exitError, "no such file"},
		{"reconstruct without inputs", []string{"reconstruct", "--run", "x", "--out", "y"}, exitUsage, "usage"},
		{"reconstruct missing run", []string{"reconstruct", "--run", filepath.Join(t.TempDir(), "none"), "--out", t.TempDir(), data}, exitError, "config"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runCLI(tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d (want %d), output:\n%s\nwant mention of %q", code, tc.code, out, tc.want)
			}
		})
	}
}

func TestResumeKeepsConfig(t *testing.T) {
	data := photos(t)
	run := filepath.Join(t.TempDir(), "run")
	if code, out := runCLI(small(data, run, "--steps", "2")...); code != exitOK {
		t.Fatalf("train: %d\n%s", code, out)
	}
	code, out := runCLI("train", "--out", run, "--resume", "--steps", "4", "--lambda-adv", "0.5")
	if code != exitError || !strings.Contains(out, "lambda_adv") {
		t.Fatalf("changing a loss weight on resume: exit %d\n%s", code, out)
	}
	if code, out := runCLI("train", "--out", run, "--resume", "--steps", "4"); code != exitOK {
		t.Fatalf("resume: exit %d\n%s", code, out)
	}
	m, err := runner.ReadMetrics(filepath.Join(run, runner.MetricsFile))
	if err != nil || len(m) != 4 || m[3].Step != 4 {
		t.Fatalf("metrics after resume: %v %v", m, err)
	}
}

func waitForSteps(t *testing.T, run string, n int, deadline time.Duration) {
	t.Helper()
	end := time.Now().Add(deadline)
	for time.Now().Before(end) {
		if m, _ := runner.ReadMetrics(filepath.Join(run, runner.MetricsFile)); len(m) >= n {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("run did not reach %d steps in %v", n, deadline)
}

func TestSIGINTSavesAndResumes(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			data := photos(t)
			run := filepath.Join(t.TempDir(), "run")
			cmd := exec.Command(binary, small(data, run, "--steps", "100000", "--checkpoint-every", "100000")...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			waitForSteps(t, run, 3, 2*time.Minute)
			sent := time.Now()
			cmd.Process.Signal(sig)
			err := cmd.Wait()
			if took := time.Since(sent); took > 30*time.Second {
				t.Fatalf("exit took %v after %v", took, sig)
			}
			if code := cmd.ProcessState.ExitCode(); code != exitInterrupted {
				t.Fatalf("exit %d (%v), want %d\n%s", code, err, exitInterrupted, stderr.String())
			}
			m, _ := runner.ReadMetrics(filepath.Join(run, runner.MetricsFile))
			last := m[len(m)-1].Step
			steps := fmt.Sprint(last + 2)
			if code, out := runCLI("train", "--out", run, "--resume", "--steps", steps); code != exitOK {
				t.Fatalf("resume: exit %d\n%s", code, out)
			}
			after, _ := runner.ReadMetrics(filepath.Join(run, runner.MetricsFile))
			for i, l := range after {
				if l.Step != int64(i+1) {
					t.Fatalf("line %d has step %d after resume", i, l.Step)
				}
			}
			if got := after[len(after)-1].Step; got != last+2 {
				t.Fatalf("resumed run ended at %d, want %d", got, last+2)
			}
		})
	}
}

// kill -9 while a checkpoint is being written: the test watches the run
// folder and kills the process as soon as a temporary checkpoint file
// appears. The previous checkpoint must still load, every time.
func TestKill9DuringCheckpointWrite(t *testing.T) {
	data := photos(t)
	run := filepath.Join(t.TempDir(), "run")
	if code, out := runCLI(small(data, run, "--steps", "1", "--lambda-adv", "0")...); code != exitOK {
		t.Fatalf("first run: %d\n%s", code, out)
	}
	pattern := filepath.Join(run, ".checkpoint.pt.tmp-*")
	midWrite := 0
	for try := range 4 {
		cmd := exec.Command(binary, "train", "--out", run, "--resume", "--steps", "100000", "--checkpoint-every", "1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for end := time.Now().Add(time.Minute); time.Now().Before(end); {
			if tmp, _ := filepath.Glob(pattern); len(tmp) > 0 {
				break
			}
			time.Sleep(200 * time.Microsecond)
		}
		cmd.Process.Kill()
		cmd.Wait()
		if tmp, _ := filepath.Glob(pattern); len(tmp) > 0 {
			midWrite++ // died before the rename: the write was cut short
		}
		model, _, err := runner.OpenModel(run, pretrained.Store{})
		if err != nil {
			t.Fatalf("kill %d: checkpoint does not load: %v", try, err)
		}
		model.Close()
	}
	if midWrite == 0 {
		t.Fatal("no kill landed during a checkpoint write; the test proved nothing")
	}
	t.Logf("%d of 4 kills landed during a checkpoint write", midWrite)
}

func TestSimilarityJSON(t *testing.T) {
	dir := photos(t)
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	var out bytes.Buffer
	if code := run(context.Background(), []string{"similarity", files[0], files[0], "--json"}, &out, io.Discard); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	var one map[string]float64
	if err := json.Unmarshal(out.Bytes(), &one); err != nil || len(one) != 1 || one["distance"] != 0 {
		t.Fatalf("two images: %s (%v)", out.String(), err)
	}
	out.Reset()
	if code := run(context.Background(), []string{"similarity", "--json", dir, dir}, &out, io.Discard); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	var list []map[string]any
	if err := json.Unmarshal(out.Bytes(), &list); err != nil || len(list) != len(files) || list[0]["name"] == nil {
		t.Fatalf("two folders: %s (%v)", out.String(), err)
	}
	if code, _ := runCLI("similarity", files[0], dir); code != exitError {
		t.Fatalf("an image and a folder: exit %d", code)
	}
}

func TestSampleCommand(t *testing.T) {
	data := photos(t)
	dir := t.TempDir()
	vae, ae := filepath.Join(dir, "vae"), filepath.Join(dir, "ae")
	vaeArgs := []string{"train", "--task", "vae", "--data", data, "--out", vae, "--size", "32", "--batch", "4",
		"--steps", "2", "--latent", "4x8x8", "--kl-warmup", "1", "--comparator", "exemplar:conv2"}
	if code, out := runCLI(vaeArgs...); code != exitOK {
		t.Fatalf("train vae: exit %d\n%s", code, out)
	}
	if code, out := runCLI(small(data, ae, "--steps", "1")...); code != exitOK {
		t.Fatalf("train autoencoder: exit %d\n%s", code, out)
	}
	var pngs [2][]byte
	for i := range pngs {
		out := filepath.Join(dir, fmt.Sprintf("s%d.png", i))
		if code, msg := runCLI("sample", "--run", vae, "--n", "4", "--out", out, "--seed", "5"); code != exitOK {
			t.Fatalf("sample: exit %d\n%s", code, msg)
		}
		b, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		pngs[i] = b
	}
	if !bytes.Equal(pngs[0], pngs[1]) {
		t.Fatal("runner sample with the same --seed wrote different PNGs")
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"autoencoder run", []string{"sample", "--run", ae, "--n", "4", "--out", filepath.Join(dir, "x.png")}, exitError, "vae run"},
		{"one image to interpolate", []string{"sample", "--run", vae, "--interpolate", data, "--out", filepath.Join(dir, "y.png")}, exitUsage, "two images"},
		{"no out", []string{"sample", "--run", vae}, exitUsage, "usage"},
		{"latent not 8x8", []string{"train", "--task", "vae", "--data", data, "--out", filepath.Join(dir, "z"), "--latent", "4x4x4"}, exitUsage, "8 x 8"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, out := runCLI(tc.args...)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d (want %d), output:\n%s\nwant mention of %q", code, tc.code, out, tc.want)
			}
		})
	}
	cfg, err := runner.LoadConfig(vae)
	if err != nil || cfg.CodeChannels != 4 || cfg.Task != runner.TaskVAE {
		t.Fatalf("--latent 4x8x8 gave config %+v (%v)", cfg, err)
	}
}

// --threads 0 gives libtorch one intra-op thread per CPU the process may
// run on: all of them, or those an affinity mask leaves it.
func TestThreadsFollowCPUs(t *testing.T) {
	data := photos(t)
	for _, tc := range []struct {
		taskset []string
		want    int
	}{{nil, runtime.NumCPU()}, {[]string{"taskset", "-c", "0"}, 1}} {
		args := append(tc.taskset, binary)
		args = append(args, small(data, filepath.Join(t.TempDir(), "run"), "--steps", "1", "--threads", "0", "--lambda-adv", "0")...)
		out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args[:len(tc.taskset)], err, out)
		}
		if want := fmt.Sprintf("threads=%d ", tc.want); !strings.Contains(string(out), want) {
			t.Fatalf("%v: want %q in:\n%s", tc.taskset, want, out)
		}
	}
}
