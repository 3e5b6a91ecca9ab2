package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image/png"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/deepsim/deepsim/internal/testimages"
	"github.com/deepsim/deepsim/runner"
)

// The Docker image, run as a user would: make image-test builds it, starts
// a daemon where none runs and sets DEEPSIM_IMAGE. Without it the test is
// skipped; with it every step must pass.
func dockerImage(t *testing.T) string {
	img := os.Getenv("DEEPSIM_IMAGE")
	if img == "" {
		t.Skip("DEEPSIM_IMAGE is not set: make image-test runs this test")
	}
	return img
}

// container is one docker run of the image with the caller's IDs, the
// photos at /data (read-only) and runs at /runs; pre are docker run's own
// flags, args runner's.
func container(img, data, runs string, pre []string, args ...string) *exec.Cmd {
	full := []string{"run", "--rm", "--user", fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid()),
		"-v", data + ":/data:ro", "-v", runs + ":/runs"}
	full = append(append(append(full, pre...), img), args...)
	return exec.Command("docker", full...)
}

func mustRun(t *testing.T, cmd *exec.Cmd) []byte {
	t.Helper()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, stderr.String())
	}
	return out
}

// ownedAndReadable fails unless every file under dir belongs to the
// caller's user and group and can be opened.
func ownedAndReadable(t *testing.T, dir string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		st := info.Sys().(*syscall.Stat_t)
		if int(st.Uid) != os.Getuid() || int(st.Gid) != os.Getgid() {
			return fmt.Errorf("%s belongs to %d:%d, not the caller's %d:%d", path, st.Uid, st.Gid, os.Getuid(), os.Getgid())
		}
		if !d.IsDir() {
			f, err := os.Open(path)
			if err != nil {
				return err
			}
			f.Close()
			n++
		}
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("files of %s: %d, %v", dir, n, err)
	}
}

func decodesPNG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := png.Decode(f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func steps(t *testing.T, run string) int64 {
	t.Helper()
	m, err := runner.ReadMetrics(filepath.Join(run, runner.MetricsFile))
	if err != nil || len(m) == 0 {
		t.Fatalf("metrics of %s: %d lines, %v", run, len(m), err)
	}
	return m[len(m)-1].Step
}

func TestImage(t *testing.T) {
	img := dockerImage(t)
	data := testimages.PhotoDir(t, 6, 96, 80, 5)
	runs := t.TempDir()
	// The small runs name the shipped comparator, so that the host can resume
	// them whatever its own store holds.
	tiny := []string{"--size", "32", "--batch", "4", "--comparator", "exemplar:conv2", "--threads", "2"}

	t.Run("help", func(t *testing.T) {
		cmd := exec.Command("docker", "run", "--rm", img, "--help")
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "runner train") || !strings.Contains(string(out), "runner comparator list") {
			t.Fatalf("--help: %v\n%s", err, out)
		}
	})
	t.Run("comparator list", func(t *testing.T) {
		out := string(mustRun(t, exec.Command("docker", "run", "--rm", img, "comparator", "list")))
		for _, name := range []string{"mobilenetv2", "inceptionv3"} {
			if !strings.Contains(out, name) {
				t.Fatalf("comparator list has no %s:\n%s", name, out)
			}
		}
	})

	t.Run("train, reconstruct, eval", func(t *testing.T) {
		// The default comparator: the image's imported MobileNetV2.
		mustRun(t, container(img, data, runs, nil, "train", "--data", "/data", "--out", "/runs/ae", "--steps", "20"))
		run := filepath.Join(runs, "ae")
		if got := steps(t, run); got != 20 {
			t.Fatalf("trained to step %d, want 20", got)
		}
		cfg, err := runner.LoadConfig(run)
		if err != nil || !strings.HasPrefix(cfg.Comparator, "mobilenetv2") {
			t.Fatalf("comparator %q (%v): want the image's mobilenetv2", cfg.Comparator, err)
		}
		mustRun(t, container(img, data, runs, nil, "reconstruct", "--run", "/runs/ae", "--out", "/runs/rec", "/data"))
		out := mustRun(t, container(img, data, runs, nil, "eval", "--run", "/runs/ae", "--data", "/data", "--n", "16", "--json"))
		var ev map[string]any
		if err := json.Unmarshal(out, &ev); err != nil || ev["psnr"] == nil {
			t.Fatalf("eval --json: %v\n%s", err, out)
		}
		ownedAndReadable(t, run)
		ownedAndReadable(t, filepath.Join(runs, "rec"))
		decodesPNG(t, filepath.Join(runs, "rec", "grid.png"))
		// The host's engine loads the container's checkpoint.
		if code, out := runCLI("reconstruct", "--run", run, "--out", filepath.Join(t.TempDir(), "host"), data); code != exitOK {
			t.Fatalf("host reconstruct of the container's run: exit %d\n%s", code, out)
		}
	})

	t.Run("nproc 2 in one container", func(t *testing.T) {
		args := append([]string{"train", "--data", "/data", "--out", "/runs/dp", "--steps", "4", "--nproc", "2"}, tiny...)
		mustRun(t, container(img, data, runs, nil, args...))
		if got := steps(t, filepath.Join(runs, "dp")); got != 4 {
			t.Fatalf("trained to step %d, want 4", got)
		}
		ownedAndReadable(t, filepath.Join(runs, "dp"))
	})

	t.Run("two containers as torchrun starts them", func(t *testing.T) {
		port := fmt.Sprint(freePort(t))
		args := append([]string{"train", "--data", "/data", "--out", "/runs/torchrun", "--steps", "4", "--dist-timeout", "2m"}, tiny...)
		var ranks []*exec.Cmd
		var logs []*bytes.Buffer
		for r := range 2 {
			pre := []string{"--network", "host", "-e", fmt.Sprintf("RANK=%d", r), "-e", "WORLD_SIZE=2",
				"-e", "MASTER_ADDR=127.0.0.1", "-e", "MASTER_PORT=" + port}
			cmd := container(img, data, runs, pre, args...)
			var log bytes.Buffer
			cmd.Stdout, cmd.Stderr = &log, &log
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			ranks, logs = append(ranks, cmd), append(logs, &log)
		}
		for r, cmd := range ranks {
			if err := cmd.Wait(); err != nil {
				t.Fatalf("rank %d: %v\n%s", r, err, logs[r])
			}
		}
		if got := steps(t, filepath.Join(runs, "torchrun")); got != 4 {
			t.Fatalf("trained to step %d, want 4", got)
		}
		ownedAndReadable(t, filepath.Join(runs, "torchrun"))
	})

	// Ctrl-C on docker run is proxied to runner; docker stop sends the
	// image's STOPSIGNAL, SIGINT. Either way runner saves a checkpoint and
	// the container, and so docker run, exits with 130.
	for _, stop := range []struct {
		name string
		stop func(cmd *exec.Cmd, name string) error
	}{
		{"SIGINT to docker run", func(cmd *exec.Cmd, _ string) error { return cmd.Process.Signal(os.Interrupt) }},
		{"docker stop", func(_ *exec.Cmd, name string) error {
			return exec.Command("docker", "stop", "--time", "120", name).Run()
		}},
	} {
		t.Run(stop.name, func(t *testing.T) {
			name := fmt.Sprintf("deepsim-test-%d-%s", os.Getpid(), strings.ReplaceAll(stop.name, " ", "-"))
			out := "sigint-" + strings.ReplaceAll(stop.name, " ", "-")
			args := append([]string{"train", "--data", "/data", "--out", "/runs/" + out, "--steps", "100000", "--checkpoint-every", "100000"}, tiny...)
			cmd := container(img, data, runs, []string{"--name", name}, args...)
			var log bytes.Buffer
			cmd.Stdout, cmd.Stderr = &log, &log
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer exec.Command("docker", "rm", "-f", name).Run()
			run := filepath.Join(runs, out)
			waitForSteps(t, run, 3, 2*time.Minute)
			if err := stop.stop(cmd, name); err != nil {
				t.Fatal(err)
			}
			cmd.Wait()
			if code := cmd.ProcessState.ExitCode(); code != exitInterrupted {
				t.Fatalf("docker run exited %d, want %d\n%s", code, exitInterrupted, log.String())
			}
			ownedAndReadable(t, run)
			last := steps(t, run)
			// The run's /data is the host's data.
			if code, out := runCLI("train", "--out", run, "--resume", "--data", data, "--steps", fmt.Sprint(last+1)); code != exitOK {
				t.Fatalf("host resume of the interrupted run: exit %d\n%s", code, out)
			}
		})
	}
}
