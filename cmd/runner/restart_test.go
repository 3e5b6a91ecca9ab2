package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deepsim/deepsim/runner"
)

// children are the processes whose parent is pid.
func children(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so after its ")".
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// lastStep is the last step metrics.jsonl of run holds, 0 for none.
func lastStep(run string) int64 {
	ms, err := runner.ReadMetrics(filepath.Join(run, runner.MetricsFile))
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].Step
}

// killAt starts cmd and kill -9s one of its rank processes, picked under
// rng, once the run has logged each of steps; it returns cmd's output.
func killAt(t *testing.T, cmd *exec.Cmd, run string, steps []int64, rng *rand.Rand) ([]byte, error) {
	t.Helper()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.After(5 * time.Minute)
	for _, s := range steps {
		for lastStep(run) < s || len(children(cmd.Process.Pid)) < 2 {
			select {
			case err := <-done:
				return out.Bytes(), err
			case <-deadline:
				cmd.Process.Kill()
				t.Fatalf("the run did not reach step %d:\n%s", s, out.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
		ranks := children(cmd.Process.Pid)
		victim := ranks[rng.IntN(len(ranks))]
		t.Logf("step %d: kill -9 %d of %v", lastStep(run), victim, ranks)
		syscall.Kill(victim, syscall.SIGKILL)
		// The group stops; wait for the launcher to start a new one, none
		// of whose processes is of the old group.
		for newGroup := false; !newGroup; {
			now := children(cmd.Process.Pid)
			newGroup = len(now) == 2 && !slices.Contains(ranks, now[0]) && !slices.Contains(ranks, now[1])
			select {
			case err := <-done:
				return out.Bytes(), err
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	select {
	case err := <-done:
		return out.Bytes(), err
	case <-deadline:
		cmd.Process.Kill()
		t.Fatalf("the run did not end:\n%s", out.String())
	}
	return nil, nil
}

// A group that loses a process three times, at steps picked from a seed,
// restarts from its last checkpoint each time and ends with the weights
// of a run that never failed, its metrics one line per step.
func TestRestartsReproduceTheRun(t *testing.T) {
	data := dpData(t)
	dir := t.TempDir()
	const steps = 30
	args := func(run string, extra ...string) []string {
		return dpArgs(data, run, runner.TaskAutoencoder, append([]string{"--steps", strconv.Itoa(steps),
			"--nproc", "2", "--threads", "2", "--checkpoint-every", "4"}, extra...)...)
	}
	straight := filepath.Join(dir, "straight")
	if out, err := exec.Command(binary, args(straight)...).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	rng := rand.New(rand.NewPCG(7, 38))
	var kills []int64
	for _, lo := range []int64{3, 12, 21} {
		kills = append(kills, lo+rng.Int64N(6))
	}
	run := filepath.Join(dir, "restarted")
	out, err := killAt(t, exec.Command(binary, args(run, "--max-restarts", "3")...), run, kills, rng)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if n := strings.Count(string(out), "restarting the group"); n != 3 {
		t.Fatalf("%d restarts logged, want 3:\n%s", n, out)
	}
	sameTraining(t, straight, run, steps, 1e-12, 1e-12)
}

// More failures than --max-restarts: the run stops with an error naming
// the last failure, and its last checkpoint resumes.
func TestRestartsRunOut(t *testing.T) {
	data := dpData(t)
	run := filepath.Join(t.TempDir(), "run")
	const steps = 20
	args := dpArgs(data, run, runner.TaskAutoencoder, "--steps", strconv.Itoa(steps), "--nproc", "2", "--threads", "2", "--checkpoint-every", "4")
	rng := rand.New(rand.NewPCG(8, 38))
	out, err := killAt(t, exec.Command(binary, append(args, "--max-restarts", "1")...), run, []int64{6, 13}, rng)
	if err == nil || !strings.Contains(string(out), "after 1 restart(s): rank ") {
		t.Fatalf("%v, want an error naming the last failure:\n%s", err, out)
	}
	if !runner.HasCheckpoint(run) {
		t.Fatal("no checkpoint left")
	}
	if out, err := exec.Command(binary, append(args, "--resume")...).CombinedOutput(); err != nil {
		t.Fatalf("resume: %v\n%s", err, out)
	}
	if s := lastStep(run); s != steps {
		t.Fatalf("resumed run ended at step %d, want %d", s, steps)
	}
}

// Under torchrun's --max-restarts, a restarted group (its processes see
// TORCHELASTIC_RESTART_COUNT above 0) resumes from the run folder with no
// --resume given, and ends as a run that never failed.
func TestTorchrunRestartResumes(t *testing.T) {
	data := dpData(t)
	dir := t.TempDir()
	const steps = 12
	// start runs a group of two by hand, as torchrun's attempt number
	// attempt would, and returns its processes and their output.
	start := func(run string, attempt int) ([]*exec.Cmd, *bytes.Buffer) {
		args := dpArgs(data, run, runner.TaskAutoencoder, "--steps", strconv.Itoa(steps), "--threads", "1", "--checkpoint-every", "4")
		port := freePort(t)
		var out bytes.Buffer
		var cmds []*exec.Cmd
		for r := range 2 {
			cmd := byHand(r, 2, port, args)
			cmd.Env = append(cmd.Env, "TORCHELASTIC_RESTART_COUNT="+strconv.Itoa(attempt))
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			cmds = append(cmds, cmd)
		}
		return cmds, &out
	}
	finish := func(cmds []*exec.Cmd, out *bytes.Buffer) {
		for r, c := range cmds {
			if err := c.Wait(); err != nil {
				t.Fatalf("rank %d: %v\n%s", r, err, out)
			}
		}
	}
	straight := filepath.Join(dir, "straight")
	finish(start(straight, 0))

	run := filepath.Join(dir, "run")
	first, out := start(run, 0)
	for lastStep(run) < 6 {
		time.Sleep(20 * time.Millisecond)
	}
	first[1].Process.Kill()
	for _, c := range first {
		c.Wait()
	}
	if lastStep(run) >= steps {
		t.Fatalf("the first attempt finished before the kill:\n%s", out)
	}
	second, out := start(run, 1)
	finish(second, out)
	if !strings.Contains(out.String(), "restarted by the launcher: resuming") {
		t.Fatalf("the restarted group did not say it resumed:\n%s", out)
	}
	sameTraining(t, straight, run, steps, 1e-12, 1e-12)
}
