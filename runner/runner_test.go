package runner

import (
	"context"
	"image"
	"image/jpeg"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/disintegration/imaging"

	"github.com/deepsim/deepsim/internal/testimages"
)

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

func TestTrainWritesRunFolder(t *testing.T) {
	cfg := smallConfig(photos(t, 4))
	run := filepath.Join(t.TempDir(), "run")
	mustTrain(t, cfg, TrainOptions{Out: run})
	m := readMetrics(t, run)
	if len(m) != int(cfg.Steps) {
		t.Fatalf("%d metrics lines, want %d", len(m), cfg.Steps)
	}
	raw, err := os.ReadFile(filepath.Join(run, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	first := strings.SplitN(string(raw), "\n", 2)[0]
	for _, key := range []string{`"step"`, `"loss_feat"`, `"loss_adv"`, `"loss_img"`, `"loss_discr"`, `"images_per_sec"`} {
		if !strings.Contains(first, key) {
			t.Errorf("metrics line %s lacks %s", first, key)
		}
	}
	for i, l := range m {
		if l.Step != int64(i+1) || l.LossFeat <= 0 || l.LossImg <= 0 || l.LossAdv <= 0 || l.LossDiscr <= 0 || l.ImagesPerSec <= 0 {
			t.Fatalf("line %d: %+v", i, l)
		}
	}
	saved, err := LoadConfig(run)
	if err != nil {
		t.Fatal(err)
	}
	if saved.Size != cfg.Size || saved.LambdaAdv != cfg.LambdaAdv || saved.Data[0] != cfg.Data[0] {
		t.Fatalf("config.json = %+v", saved)
	}
	model, _, err := OpenModel(run)
	if err != nil {
		t.Fatal(err)
	}
	model.Close()
}

func TestSwitchedOffTermsAreLoggedAsZero(t *testing.T) {
	cfg := seConfig(photos(t, 2))
	cfg.LambdaFeat, cfg.Steps = 0, 2
	run := filepath.Join(t.TempDir(), "run")
	mustTrain(t, cfg, TrainOptions{Out: run})
	raw, err := os.ReadFile(filepath.Join(run, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		for _, key := range []string{`"loss_feat":0,`, `"loss_adv":0,`, `"loss_discr":0,`} {
			if !strings.Contains(line, key) {
				t.Fatalf("%s lacks %s", line, key)
			}
		}
	}
}

// Resuming must continue exactly where the run stopped: step count, Adam
// state and data position. Without the adversarial term training is
// deterministic, so the resumed run must log the very same losses as one
// that was never stopped.
func TestResumeContinuesExactly(t *testing.T) {
	data := photos(t, 4)
	straight := filepath.Join(t.TempDir(), "straight")
	mustTrain(t, seConfig(data), TrainOptions{Out: straight})

	split := filepath.Join(t.TempDir(), "split")
	half := seConfig(data)
	half.Steps = 5
	mustTrain(t, half, TrainOptions{Out: split})
	// A crash after the checkpoint leaves lines past it and a partial line.
	f, err := os.OpenFile(filepath.Join(split, MetricsFile), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"step":6,"loss_feat":9,"loss_adv":0,"loss_img":9,"loss_discr":0,"images_per_sec":1}` + "\n" + `{"step":7,"loss_fe`)
	f.Close()
	sum := mustTrain(t, seConfig(data), TrainOptions{Out: split, Resume: true})
	if sum.StartStep != 5 || sum.Step != 12 {
		t.Fatalf("resumed from %d to %d, want 5 to 12", sum.StartStep, sum.Step)
	}

	a, b := readMetrics(t, straight), readMetrics(t, split)
	if len(a) != len(b) {
		t.Fatalf("%d lines after resume, want %d", len(b), len(a))
	}
	for i := range a {
		if b[i].Step != int64(i+1) {
			t.Fatalf("line %d has step %d", i, b[i].Step)
		}
		if a[i].LossImg != b[i].LossImg || a[i].LossFeat != b[i].LossFeat {
			t.Fatalf("step %d: resumed run logged %+v, uninterrupted run %+v", i+1, b[i], a[i])
		}
	}
}

func TestTrainRunFolderGuards(t *testing.T) {
	cfg := seConfig(photos(t, 2))
	cfg.Steps = 1
	run := filepath.Join(t.TempDir(), "run")
	if _, err := Train(context.Background(), cfg, TrainOptions{Out: run, Resume: true, Log: discardLog()}); err == nil {
		t.Fatal("resumed a run that does not exist")
	}
	mustTrain(t, cfg, TrainOptions{Out: run})
	_, err := Train(context.Background(), cfg, TrainOptions{Out: run, Log: discardLog()})
	if err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("training over an existing run: err = %v", err)
	}
}

func TestTrainSkipsBadFilesOnce(t *testing.T) {
	data := photos(t, 3)
	cmyk, err := os.ReadFile("../testdata/cmyk.jpg")
	if err != nil {
		t.Fatal(err)
	}
	if err := testimages.WriteBadFiles(data, cmyk); err != nil {
		t.Fatal(err)
	}
	cfg := seConfig(data)
	cfg.Steps = 3
	log, buf := captureLog()
	sum := mustTrain(t, cfg, TrainOptions{Out: filepath.Join(t.TempDir(), "run"), Log: log})
	if len(sum.Skipped) != len(testimages.Unusable) || sum.Images != 3+len(testimages.Convertible) {
		t.Fatalf("skipped %d, used %d", len(sum.Skipped), sum.Images)
	}
	out := buf.String()
	for _, name := range testimages.Unusable {
		if n := strings.Count(out, filepath.Join(data, name)); n != 1 {
			t.Errorf("%s named in %d log lines, want 1:\n%s", name, n, out)
		}
	}
	for _, name := range testimages.Convertible {
		if strings.Contains(out, name) {
			t.Errorf("convertible %s was warned about", name)
		}
	}
}

func TestTrainInterruptSavesCheckpoint(t *testing.T) {
	cfg := seConfig(photos(t, 2))
	cfg.Steps, cfg.CheckpointEvery = 100000, 100000
	run := filepath.Join(t.TempDir(), "run")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			if m, _ := ReadMetrics(filepath.Join(run, MetricsFile)); len(m) >= 3 {
				cancel()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	sum, err := Train(ctx, cfg, TrainOptions{Out: run, Log: discardLog()})
	if err != ErrInterrupted {
		t.Fatalf("err = %v, want ErrInterrupted", err)
	}
	cfg.Steps = sum.Step + 2
	resumed := mustTrain(t, cfg, TrainOptions{Out: run, Resume: true})
	if resumed.StartStep != sum.Step {
		t.Fatalf("resumed at %d, interrupted at %d", resumed.StartStep, sum.Step)
	}
}

func TestReconstructKeepsSizes(t *testing.T) {
	cfg := seConfig(photos(t, 2))
	cfg.Steps = 2
	run := filepath.Join(t.TempDir(), "run")
	mustTrain(t, cfg, TrainOptions{Out: run})

	in := t.TempDir()
	sizes := map[string]image.Point{"odd.png": {37, 53}, "wide.jpg": {300, 90}, "tiny.png": {5, 3}, "square.png": {64, 64}}
	for name, p := range sizes {
		img := testimages.Photo(3, p.X, p.Y)
		if err := imaging.Save(img, filepath.Join(in, name), imaging.JPEGQuality(90)); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(in, "broken.jpg"), []byte("nope"), 0o644)
	out := filepath.Join(t.TempDir(), "out")
	log, buf := captureLog()
	sum, err := Reconstruct(context.Background(), ReconstructOptions{Run: run, Out: out, Inputs: []string{in}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Written) != len(sizes) || len(sum.Skipped) != 1 || !strings.Contains(buf.String(), "broken.jpg") {
		t.Fatalf("wrote %d, skipped %v", len(sum.Written), sum.Skipped)
	}
	for name, p := range sizes {
		got := filepath.Join(out, strings.TrimSuffix(name, filepath.Ext(name))+".png")
		f, err := os.Open(got)
		if err != nil {
			t.Fatal(err)
		}
		cfg, _, err := image.DecodeConfig(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Width != p.X || cfg.Height != p.Y {
			t.Errorf("%s is %dx%d, want %dx%d", got, cfg.Width, cfg.Height, p.X, p.Y)
		}
	}
	if _, err := os.Stat(filepath.Join(out, GridFile)); err != nil {
		t.Fatal(err)
	}
}

// Tiling must be invisible: a tiled image equals the same pixels run as
// part of a single larger tile, up to rounding, away from the image edge.
func TestReconstructTilesAgree(t *testing.T) {
	cfg := seConfig(photos(t, 2))
	cfg.Steps = 2
	run := filepath.Join(t.TempDir(), "run")
	mustTrain(t, cfg, TrainOptions{Out: run})
	model, _, err := OpenModel(run)
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close()
	img := testimages.Photo(5, 200, 72)
	tiled, err := ReconstructImage(model, img, 32) // 128 px tiles: two across
	if err != nil {
		t.Fatal(err)
	}
	whole, err := ReconstructImage(model, img, 64) // 256 px tiles: one
	if err != nil {
		t.Fatal(err)
	}
	var sum, n float64
	for i := range tiled.Pix {
		d := float64(tiled.Pix[i]) - float64(whole.Pix[i])
		sum += d * d
		n++
	}
	if rms := sum / n; rms > 4 {
		t.Fatalf("tiled and whole reconstructions differ: mean squared difference %.2f", rms)
	}
}

func TestReconstructRefusesNameClash(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, d := range []string{a, b} {
		f, _ := os.Create(filepath.Join(d, "same.jpg"))
		jpeg.Encode(f, testimages.Photo(1, 8, 8), nil)
		f.Close()
	}
	_, err := expandInputs([]string{a, b})
	if err == nil || !strings.Contains(err.Error(), "same.png") {
		t.Fatalf("err = %v", err)
	}
}
