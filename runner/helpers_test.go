package runner

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"

	"github.com/deepsim/deepsim/internal/testimages"
)

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// logBuffer is a goroutine-safe buffer for captured logs.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func captureLog() (*slog.Logger, *logBuffer) {
	b := &logBuffer{}
	return slog.New(slog.NewTextHandler(b, nil)), b
}

// photos writes a few small synthetic photos into a new folder.
func photos(t *testing.T, n int) string {
	t.Helper()
	dir := t.TempDir()
	if _, err := testimages.WritePhotos(dir, n, 96, 80, 1); err != nil {
		t.Fatal(err)
	}
	return dir
}

// smallConfig is a configuration that trains in well under a second a step.
func smallConfig(data string) Config {
	cfg := Defaults()
	cfg.Data = []string{data}
	cfg.Size, cfg.Batch, cfg.Steps = 32, 4, 12
	cfg.MaxSide = 96
	cfg.CheckpointEvery = 5
	return cfg
}

// seConfig is smallConfig without the adversarial term: no dropout, so
// training is deterministic and runs can be compared value for value.
func seConfig(data string) Config {
	cfg := smallConfig(data)
	cfg.LambdaAdv = 0
	return cfg
}

func mustTrain(t *testing.T, cfg Config, opt TrainOptions) *TrainSummary {
	t.Helper()
	if opt.Log == nil {
		opt.Log = discardLog()
	}
	sum, err := Train(context.Background(), cfg, opt)
	if err != nil {
		t.Fatal(err)
	}
	return sum
}

func readMetrics(t *testing.T, run string) []Metrics {
	t.Helper()
	m, err := ReadMetrics(filepath.Join(run, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// trainVAE trains a tiny VAE run and returns its folder and data.
func trainVAE(t *testing.T) (run, data string) {
	t.Helper()
	data = photos(t, 4)
	cfg := smallConfig(data)
	cfg.Task, cfg.KLWeight, cfg.KLWarmup = TaskVAE, 1e-3, 6
	run = filepath.Join(t.TempDir(), "vae")
	mustTrain(t, cfg, TrainOptions{Out: run})
	return run, data
}
