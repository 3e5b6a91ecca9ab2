package main

import (
	"bytes"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/deepsim/deepsim/internal/testimages"
	"github.com/deepsim/deepsim/internal/torchfile"
	"github.com/deepsim/deepsim/runner"
)

// Data-parallel runs are compared with one process in float64: there the
// rounding that splitting a batch's sums changes stays near 1e-16 for
// many steps. In float32 training's chaos grows it (one process at 1
// thread against 2 differs by 1e-2 after 50 steps), so float32 is
// compared on the first steps only.

const dpSteps = 50

// dpArgs is a tiny float64 run of task, 50 steps, logging every step.
// D judges from the first step, as it does not by default before step 300,
// so that its all-reduce is exercised; and the rates stay constant, so an
// interrupted run's --steps cannot change its schedule (extra may say
// otherwise: the last flag wins).
func dpArgs(data, out, task string, extra ...string) []string {
	return append([]string{"train", "--task", task, "--data", data, "--out", out,
		"--size", "16", "--batch", "4", "--seed", "5", "--comparator", "exemplar:conv2",
		"--adv-weight", "fixed", "--lambda-adv", "0.01", "--d-warmup", "0", "--lr-decay", "0",
		"--precision", "float64", "--log-every", "1", "--steps", strconv.Itoa(dpSteps)}, extra...)
}

var dp struct {
	once sync.Once
	data string
	mu   sync.Mutex
	refs map[string]string // run folder of one process, by task and precision
}

// dpData is the images every data-parallel test trains on: five photos
// in two WebDataset shards (three and two), written by runner data shard,
// so that a batch of 4 straddles epochs and shards.
func dpData(t *testing.T) string {
	t.Helper()
	dp.once.Do(func() {
		photos := filepath.Join(filepath.Dir(binary), "dp-photos")
		dp.refs = map[string]string{}
		if err := os.MkdirAll(photos, 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := testimages.WritePhotos(photos, 5, 96, 80, 2); err != nil {
			t.Fatal(err)
		}
		shards := filepath.Join(filepath.Dir(binary), "dp-shards")
		code, out := runCLI("data", "shard", "--out", shards, "--per-shard", "3", photos)
		if code != exitOK {
			t.Fatalf("runner data shard: exit %d\n%s", code, out)
		}
		dp.data = filepath.Join(shards, "shard-{000000..000001}.tar")
		if !strings.Contains(out, dp.data) {
			t.Fatalf("runner data shard printed %q, want the pattern %s", out, dp.data)
		}
	})
	if dp.data == "" {
		t.Fatal("no data-parallel data (an earlier test failed to make it)")
	}
	return dp.data
}

// reference is the run folder of one process training task, made once.
func reference(t *testing.T, task string, extra ...string) string {
	t.Helper()
	data := dpData(t)
	dp.mu.Lock()
	defer dp.mu.Unlock()
	key := task + strings.Join(extra, " ")
	if run, ok := dp.refs[key]; ok {
		return run
	}
	run := filepath.Join(filepath.Dir(binary), fmt.Sprintf("ref-%d", len(dp.refs)))
	out, err := exec.Command(binary, dpArgs(data, run, task, append([]string{"--threads", "1"}, extra...)...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("one process: %v\n%s", err, out)
	}
	dp.refs[key] = run
	return run
}

// sameTraining checks that run logged what want logged, each loss within
// tol relative at every step, and that their final weights are within
// paramTol (relative L2, per tensor).
func sameTraining(t *testing.T, want, run string, steps int, tol, paramTol float64) {
	t.Helper()
	a, err := runner.ReadMetrics(filepath.Join(want, runner.MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	b, err := runner.ReadMetrics(filepath.Join(run, runner.MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(a) < steps || len(b) != steps {
		t.Fatalf("%d and %d metrics lines, want %d", len(a), len(b), steps)
	}
	worst := 0.0
	for i := range steps {
		if a[i].Step != int64(i+1) || b[i].Step != int64(i+1) {
			t.Fatalf("line %d: steps %d and %d", i, a[i].Step, b[i].Step)
		}
		for _, name := range []string{"loss_feat", "loss_adv", "loss_img", "loss_discr", "adv_weight"} {
			x, y := term(a[i], name), term(b[i], name)
			if math.IsNaN(x) && math.IsNaN(y) {
				continue // logged by neither
			}
			d := math.Abs(x-y) / math.Max(math.Abs(x), 1e-12)
			if d > tol || math.IsNaN(d) {
				t.Fatalf("step %d: %s = %v, one process logged %v (relative difference %.2g > %g)", i+1, name, y, x, d, tol)
			}
			worst = max(worst, d)
		}
		if a[i].UpdatedG != b[i].UpdatedG || a[i].UpdatedD != b[i].UpdatedD {
			t.Fatalf("step %d: balancing took another branch", i+1)
		}
	}
	t.Logf("losses within %.2g relative over %d steps", worst, steps)
	if paramTol <= 0 {
		return
	}
	pa, pb := weights(t, want), weights(t, run)
	if len(pa) == 0 || len(pa) != len(pb) {
		t.Fatalf("%d and %d tensors in the checkpoints", len(pa), len(pb))
	}
	worst = 0
	for name, x := range pa {
		y, ok := pb[name]
		if !ok || len(x) != len(y) {
			t.Fatalf("tensor %s missing or reshaped", name)
		}
		var d, n float64
		for i := range x {
			d += (x[i] - y[i]) * (x[i] - y[i])
			n += x[i] * x[i]
		}
		if r := math.Sqrt(d / math.Max(n, 1e-300)); r > paramTol {
			t.Fatalf("%s differs by %.2g relative, more than %g", name, r, paramTol)
		} else {
			worst = max(worst, r)
		}
	}
	t.Logf("weights within %.2g relative", worst)
}

func term(m runner.Metrics, name string) float64 {
	for _, t := range m.Terms {
		if t.Name == name {
			return t.Value
		}
	}
	return math.NaN()
}

func weights(t *testing.T, run string) map[string][]float64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(run, runner.CheckpointFile))
	if err != nil {
		t.Fatal(err)
	}
	w, err := torchfile.Floats(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	for name := range w {
		if !strings.HasPrefix(name, "encoder.") && !strings.HasPrefix(name, "generator.") && !strings.HasPrefix(name, "discriminator.") {
			delete(w, name) // optimizer state and metadata
		}
	}
	return w
}

// freePort is a TCP port nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// byHand starts rank of world with torchrun's variables set by hand.
func byHand(rank, world, port int, args []string) *exec.Cmd {
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "WORLD_SIZE="+strconv.Itoa(world), "RANK="+strconv.Itoa(rank),
		"LOCAL_RANK="+strconv.Itoa(rank), "MASTER_ADDR=127.0.0.1", "MASTER_PORT="+strconv.Itoa(port))
	return cmd
}

func TestDataParallelMatchesOneProcess(t *testing.T) {
	data := dpData(t)
	tests := []struct {
		name   string
		task   string
		nproc  int
		byHand bool
		extra  []string
	}{
		{"autoencoder, --nproc 2", runner.TaskAutoencoder, 2, false, nil},
		{"vae, --nproc 2", runner.TaskVAE, 2, false, nil},
		// Each rank decodes its rows of one global draw from the prior.
		{"vae judging prior draws, 3 processes", runner.TaskVAE, 3, false, []string{"--lambda-prior-adv", "0.1"}},
		{"autoencoder, variables set by hand", runner.TaskAutoencoder, 2, true, nil},
		// 4 rows over 3 processes: 1, 1 and 2, weighted by their share.
		{"autoencoder, 3 processes", runner.TaskAutoencoder, 3, false, nil},
		{"autoencoder, 4 processes", runner.TaskAutoencoder, 4, false, nil},
		// The adaptive weight's gradients are the global batch's.
		{"adaptive adversarial weight, 3 processes", runner.TaskAutoencoder, 3, false,
			[]string{"--adv-weight", "adaptive", "--lambda-adv", "0.8", "--d-warmup", "3"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := reference(t, tc.task, tc.extra...)
			run := filepath.Join(t.TempDir(), "run")
			args := dpArgs(data, run, tc.task, append([]string{"--threads", strconv.Itoa(tc.nproc)}, tc.extra...)...)
			if !tc.byHand {
				out, err := exec.Command(binary, append(args, "--nproc", strconv.Itoa(tc.nproc))...).CombinedOutput()
				if err != nil {
					t.Fatalf("%v\n%s", err, out)
				}
			} else {
				port := freePort(t)
				var cmds []*exec.Cmd
				var outs []*bytes.Buffer
				for r := range tc.nproc {
					cmd := byHand(r, tc.nproc, port, append(args, "--threads", "1"))
					var out bytes.Buffer
					cmd.Stdout, cmd.Stderr = &out, &out
					if err := cmd.Start(); err != nil {
						t.Fatal(err)
					}
					cmds, outs = append(cmds, cmd), append(outs, &out)
				}
				for r, cmd := range cmds {
					if err := cmd.Wait(); err != nil {
						t.Fatalf("rank %d: %v\n%s", r, err, outs[r])
					}
				}
			}
			sameTraining(t, want, run, dpSteps, 1e-4, 1e-5)
		})
	}
}

// In float32 the first steps agree to rounding.
func TestDataParallelFloat32FirstSteps(t *testing.T) {
	data := dpData(t)
	want := reference(t, runner.TaskAutoencoder, "--precision", "float32")
	run := filepath.Join(t.TempDir(), "run")
	out, err := exec.Command(binary, dpArgs(data, run, runner.TaskAutoencoder, "--precision", "float32", "--steps", "3", "--nproc", "2", "--threads", "2")...).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	sameTraining(t, want, run, 3, 1e-5, 0)
}

// A 2-process run stopped with SIGINT resumes in one process, and goes on
// exactly as one process that was never interrupted.
func TestDataParallelResumesWithOtherSize(t *testing.T) {
	data := dpData(t)
	want := reference(t, runner.TaskAutoencoder)
	run := filepath.Join(t.TempDir(), "run")
	cmd := exec.Command(binary, dpArgs(data, run, runner.TaskAutoencoder, "--nproc", "2", "--threads", "2", "--steps", "100000")...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitForSteps(t, run, 5, 2*time.Minute)
	cmd.Process.Signal(syscall.SIGINT)
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != exitInterrupted {
		t.Fatalf("exit %d, want %d\n%s", code, exitInterrupted, stderr.String())
	}
	before, _ := runner.ReadMetrics(filepath.Join(run, runner.MetricsFile))
	if len(before) == 0 || len(before) >= dpSteps {
		t.Fatalf("interrupted after %d steps; the test needs fewer than %d", len(before), dpSteps)
	}
	if code, out := runCLI("train", "--out", run, "--resume", "--steps", strconv.Itoa(dpSteps), "--threads", "1"); code != exitOK {
		t.Fatalf("resume in one process: exit %d\n%s", code, out)
	}
	t.Logf("interrupted at step %d", len(before))
	sameTraining(t, want, run, dpSteps, 1e-4, 1e-5)
}

// A rank killed with kill -9 mid-run: the other exits within the timeout,
// names it, and the last checkpoint is intact.
func TestDataParallelDeadRank(t *testing.T) {
	data := dpData(t)
	tests := []struct {
		name    string
		lost    int
		sig     syscall.Signal
		timeout time.Duration
	}{
		{"rank 1 killed", 1, syscall.SIGKILL, 30 * time.Second},
		{"rank 0 killed", 0, syscall.SIGKILL, 30 * time.Second},
		// A stopped process holds its connections open: only the timeout
		// finds it.
		{"rank 1 hangs", 1, syscall.SIGSTOP, 5 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			killed := tc.lost
			run := filepath.Join(t.TempDir(), "run")
			port := freePort(t)
			args := dpArgs(data, run, runner.TaskAutoencoder, "--steps", "100000", "--checkpoint-every", "3", "--threads", "1", "--dist-timeout", tc.timeout.String())
			var cmds [2]*exec.Cmd
			var outs [2]bytes.Buffer
			for r := range 2 {
				cmds[r] = byHand(r, 2, port, args)
				cmds[r].Stdout, cmds[r].Stderr = &outs[r], &outs[r]
				if err := cmds[r].Start(); err != nil {
					t.Fatal(err)
				}
			}
			waitForSteps(t, run, 7, 2*time.Minute)
			cmds[killed].Process.Signal(tc.sig)
			killedAt := time.Now()
			survivor := cmds[1-killed]
			survivor.Wait()
			took := time.Since(killedAt)
			cmds[killed].Process.Kill()
			cmds[killed].Wait()
			code := survivor.ProcessState.ExitCode()
			msg := outs[1-killed].String()
			t.Logf("rank %d exited %d after %v: %s", 1-killed, code, took.Round(time.Millisecond), lastLine(msg))
			if code != exitError {
				t.Fatalf("survivor exit %d, want %d\n%s", code, exitError, msg)
			}
			// The timeout, then the roll call's few seconds.
			if limit := tc.timeout + 10*time.Second; took > limit {
				t.Fatalf("survivor took %v, more than its timeout and the roll call (%v)", took, limit)
			}
			if want := fmt.Sprintf("lost rank %d of 2", killed); !strings.Contains(msg, want) {
				t.Fatalf("survivor's message does not say %q:\n%s", want, msg)
			}
			b, err := os.ReadFile(filepath.Join(run, runner.CheckpointFile))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := torchfile.Check(bytes.NewReader(b), int64(len(b))); err != nil {
				t.Fatalf("checkpoint after the crash: %v", err)
			}
			if code, out := runCLI("train", "--out", run, "--resume", "--steps", "8", "--threads", "1"); code != exitOK {
				t.Fatalf("resume from the last good checkpoint: exit %d\n%s", code, out)
			}
		})
	}
}

// Bad variables and unreachable peers give a clear error and exit 1,
// never an abort.
func TestDataParallelBadEnvironment(t *testing.T) {
	data := dpData(t)
	closed := freePort(t)
	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"rank out of range", []string{"WORLD_SIZE=2", "RANK=2", "MASTER_ADDR=127.0.0.1", "MASTER_PORT=29500"}, "RANK=2 is outside 0..1"},
		{"bad port", []string{"WORLD_SIZE=2", "RANK=0", "MASTER_ADDR=127.0.0.1", "MASTER_PORT=99999"}, "MASTER_PORT=99999 is not a port"},
		{"no master", []string{"WORLD_SIZE=2", "RANK=1", "MASTER_PORT=29500"}, "MASTER_ADDR is not set"},
		{"unreachable master", []string{"WORLD_SIZE=2", "RANK=1", "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + strconv.Itoa(closed)}, "cannot reach the rendezvous store at 127.0.0.1:" + strconv.Itoa(closed)},
		{"a rank that never starts", []string{"WORLD_SIZE=2", "RANK=0", "MASTER_ADDR=127.0.0.1", "MASTER_PORT=" + strconv.Itoa(closed)}, "rank 1 never joined"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			run := filepath.Join(t.TempDir(), "run")
			cmd := exec.Command(binary, dpArgs(data, run, runner.TaskAutoencoder, "--dist-timeout", "3s")...)
			cmd.Env = append(os.Environ(), tc.env...)
			out, _ := cmd.CombinedOutput()
			code := cmd.ProcessState.ExitCode()
			if code != exitError || !strings.Contains(string(out), tc.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, exitError, tc.want, out)
			}
			for _, abort := range []string{"terminate called", "SIGABRT", "panic:"} {
				if strings.Contains(string(out), abort) {
					t.Fatalf("output has %q:\n%s", abort, out)
				}
			}
		})
	}
}

func TestNprocRefusals(t *testing.T) {
	data := dpData(t)
	run := filepath.Join(t.TempDir(), "run")
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"comparator task", []string{"train", "--task", "comparator", "--data", data, "--out", run, "--size", "64", "--classes", "4", "--nproc", "2"}, "trains in one process"},
		{"batch smaller than the processes", dpArgs(data, run, runner.TaskAutoencoder, "--batch", "2", "--nproc", "3"), "less than the 3 processes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, tc.args...)
			out, _ := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != exitError || !strings.Contains(string(out), tc.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s", code, exitError, tc.want, out)
			}
		})
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}
