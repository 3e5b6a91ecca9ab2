package main

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/deepsim/deepsim/internal/testimages"
	"github.com/deepsim/deepsim/runner"
)

// BenchmarkDataParallel: the same run on this machine's cores as one
// process with 2 threads and as 2 processes with 1 thread each (make
// bench). img/s is the steady rate from the metrics, start-up left out;
// allreduce_ms/step is the time rank 0's steps spent in all-reduces.
func BenchmarkDataParallel(b *testing.B) {
	data := b.TempDir()
	if _, err := testimages.WritePhotos(data, 16, 640, 480, 1); err != nil {
		b.Fatal(err)
	}
	perStep := regexp.MustCompile(`msg=all-reduce rank=0 per_step=(\S+)`)
	for _, c := range []struct {
		name string
		args []string
	}{
		{"1proc_2threads", []string{"--threads", "2"}},
		{"2procs_1thread", []string{"--nproc", "2", "--threads", "2"}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				run := filepath.Join(b.TempDir(), "run")
				args := append([]string{"train", "--task", "autoencoder", "--data", data, "--out", run,
					"--size", "64", "--batch", "16", "--seed", "1", "--comparator", "exemplar:conv2",
					"--steps", "60", "--log-every", "20", "--checkpoint-every", "1000"}, c.args...)
				out, err := exec.Command(binary, args...).CombinedOutput()
				if err != nil {
					b.Fatalf("%v\n%s", err, out)
				}
				m, err := runner.ReadMetrics(filepath.Join(run, runner.MetricsFile))
				if err != nil || len(m) < 3 {
					b.Fatalf("metrics: %v (%d lines)", err, len(m))
				}
				// The first line's rate includes the start-up.
				var rate float64
				for _, l := range m[1:] {
					rate += l.ImagesPerSec / float64(len(m)-1)
				}
				b.ReportMetric(rate, "img/s")
				if s := perStep.FindSubmatch(out); s != nil {
					d, err := time.ParseDuration(string(s[1]))
					if err != nil {
						b.Fatal(err)
					}
					b.ReportMetric(float64(d)/float64(time.Millisecond), "allreduce_ms/step")
				}
			}
		})
	}
}
