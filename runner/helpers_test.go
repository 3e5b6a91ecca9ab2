package runner

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"github.com/deepsim/deepsim/internal/syncbuf"
	"github.com/deepsim/deepsim/internal/testimages"
)

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func captureLog() (*slog.Logger, *syncbuf.Buffer) {
	b := &syncbuf.Buffer{}
	return slog.New(slog.NewTextHandler(b, nil)), b
}

// photos writes a few small synthetic photos into a new folder.
func photos(t *testing.T, n int) string { return testimages.PhotoDir(t, n, 96, 80, 1) }

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
	cfg.Weights.Set(TermAdv, 0)
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
