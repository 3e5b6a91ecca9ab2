package runner

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/deepsim/deepsim/internal/testimages"
	"github.com/deepsim/deepsim/internal/torchfile"
	"github.com/deepsim/deepsim/pretrained"
)

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
		if l.Step != int64(i+1) || l.Get("loss_feat") <= 0 || l.Get("loss_img") <= 0 || l.Get("loss_adv") <= 0 || l.Get("loss_discr") <= 0 || l.ImagesPerSec <= 0 {
			t.Fatalf("line %d: %+v", i, l)
		}
	}
	saved, err := LoadConfig(run)
	if err != nil {
		t.Fatal(err)
	}
	if saved.Size != cfg.Size || saved.Weights != cfg.Weights || saved.Data[0] != cfg.Data[0] {
		t.Fatalf("config.json = %+v", saved)
	}
	model, _, err := OpenModel(run, pretrained.Store{})
	if err != nil {
		t.Fatal(err)
	}
	model.Close()
}

func TestSwitchedOffTermsAreLoggedAsZero(t *testing.T) {
	cfg := seConfig(photos(t, 2))
	cfg.Weights.Set(TermFeat, 0)
	cfg.Steps = 2
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
// that was never stopped. It stops in the middle of the second epoch (7
// images, batches of 4: step 3 ends at position 12).
func TestResumeContinuesExactly(t *testing.T) {
	data := photos(t, 7)
	straight := filepath.Join(t.TempDir(), "straight")
	mustTrain(t, seConfig(data), TrainOptions{Out: straight})

	split := filepath.Join(t.TempDir(), "split")
	half := seConfig(data)
	half.Steps = 3
	mustTrain(t, half, TrainOptions{Out: split})
	// A crash after the checkpoint leaves lines past it and a partial line.
	f, err := os.OpenFile(filepath.Join(split, MetricsFile), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"step":4,"loss_feat":9,"loss_adv":0,"loss_img":9,"loss_discr":0,"images_per_sec":1}` + "\n" + `{"step":5,"loss_fe`)
	f.Close()
	sum := mustTrain(t, seConfig(data), TrainOptions{Out: split, Resume: true})
	if sum.StartStep != 3 || sum.Step != 12 {
		t.Fatalf("resumed from %d to %d, want 3 to 12", sum.StartStep, sum.Step)
	}

	a, b := readMetrics(t, straight), readMetrics(t, split)
	if len(a) != len(b) {
		t.Fatalf("%d lines after resume, want %d", len(b), len(a))
	}
	for i := range a {
		if b[i].Step != int64(i+1) {
			t.Fatalf("line %d has step %d", i, b[i].Step)
		}
		if a[i].Get("loss_img") != b[i].Get("loss_img") || a[i].Get("loss_feat") != b[i].Get("loss_feat") || a[i].Get("epoch") != b[i].Get("epoch") {
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
	if err == nil || !strings.Contains(err.Error(), "resume it") {
		t.Fatalf("training over an existing run: err = %v", err)
	}
}

// Bad files are found as they are drawn, each logged once and replaced;
// convertible ones are used.
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
	items := 3 + len(testimages.Convertible) + len(testimages.Unusable)
	cfg.Steps = int64((items + cfg.Batch - 1) / cfg.Batch) // one epoch: every item drawn
	log, buf := captureLog()
	sum := mustTrain(t, cfg, TrainOptions{Out: filepath.Join(t.TempDir(), "run"), Log: log})
	if len(sum.Skipped) != len(testimages.Unusable) || sum.Images != items {
		t.Fatalf("found %d bad of %d listed; want %d of %d", len(sum.Skipped), sum.Images, len(testimages.Unusable), items)
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

// A run whose loss overflows fails, saves nothing non-finite, and says
// which checkpoint is the last good one; that checkpoint reconstructs
// finite images.
func TestDivergenceNeverSucceeds(t *testing.T) {
	cfg := smallConfig(photos(t, 2))
	cfg.LR, cfg.Weights = 1, Weights{1e6, 1e6, 1e6}
	cfg.Steps, cfg.CheckpointEvery, cfg.Threads = 60, 1, 1
	run := filepath.Join(t.TempDir(), "run")
	_, err := Train(context.Background(), cfg, TrainOptions{Out: run, Log: discardLog()})
	if err == nil || !strings.Contains(err.Error(), "diverged") || !strings.Contains(err.Error(), "the last good checkpoint") {
		t.Fatalf("err = %v, want a divergence that names the last good checkpoint", err)
	}
	model, saved, err := OpenModel(run, pretrained.Store{})
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close()
	x := make([]float32, 3*saved.Size*saved.Size)
	y, err := model.Reconstruct(x, 1, saved.Size, saved.Size)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range y {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatal("the last good checkpoint reconstructs a non-finite image")
		}
	}
}

// A run made before streamed data (no data_stream in config.json) resumes;
// the log says once that its crops follow the new stream, and config.json
// records it.
func TestResumeRunBeforeStreaming(t *testing.T) {
	cfg := seConfig(photos(t, 3))
	cfg.Steps = 2
	run := filepath.Join(t.TempDir(), "run")
	mustTrain(t, cfg, TrainOptions{Out: run})
	raw, err := os.ReadFile(filepath.Join(run, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	old := regexp.MustCompile(`\s*"data_stream": \d+,`).ReplaceAll(raw, nil)
	if bytes.Equal(old, raw) {
		t.Fatal("config.json has no data_stream to remove")
	}
	os.WriteFile(filepath.Join(run, ConfigFile), old, 0o644)
	if c, err := LoadConfig(run); err != nil || c.DataStream != 1 {
		t.Fatalf("an old config reads as stream %d (%v), want 1", c.DataStream, err)
	}
	for i, want := range []int{1, 0} {
		log, buf := captureLog()
		asked := Defaults()
		asked.Steps = int64(3 + i)
		req := Request{Out: run, Resume: true, Given: func(key string) bool { return key == "steps" }}
		resumed, err := Resolve(asked, req, pretrained.Store{}, nil, log)
		if err != nil {
			t.Fatal(err)
		}
		mustTrain(t, resumed, TrainOptions{Out: run, Resume: true, Log: log})
		if n := strings.Count(buf.String(), "began before streamed data"); n != want {
			t.Fatalf("resume %d: the stream change logged %d times, want %d:\n%s", i+1, n, want, buf.String())
		}
		if c, _ := LoadConfig(run); c.DataStream != DataStreamVersion {
			t.Fatalf("resume %d: config.json records stream %d", i+1, c.DataStream)
		}
	}
}

// --ema reaches the model: the run keeps it in config.json and its
// checkpoint holds the averaged weights beside the live ones, which train
// exactly as they would without it.
func TestTrainKeepsMovingAverage(t *testing.T) {
	data := photos(t, 3)
	floats := map[float64]map[string][]float64{}
	for _, ema := range []float64{0, 0.9} {
		cfg := seConfig(data)
		cfg.Steps, cfg.EMA = 3, ema
		run := filepath.Join(t.TempDir(), "run")
		mustTrain(t, cfg, TrainOptions{Out: run})
		if c, err := LoadConfig(run); err != nil || c.EMA != ema {
			t.Fatalf("config.json gives ema %g (%v), want %g", c.EMA, err, ema)
		}
		raw, err := os.ReadFile(filepath.Join(run, CheckpointFile))
		if err != nil {
			t.Fatal(err)
		}
		if floats[ema], err = torchfile.Floats(bytes.NewReader(raw), int64(len(raw))); err != nil {
			t.Fatal(err)
		}
	}
	plain, averaged := floats[0], floats[0.9]
	n := 0
	for name, v := range averaged {
		if live, ok := strings.CutPrefix(name, "ema."); ok {
			n++
			if slices.Equal(v, averaged[live]) {
				t.Errorf("%s equals the live weights after 3 steps", name)
			}
			continue
		}
		if !slices.Equal(v, plain[name]) {
			t.Errorf("%s trained differently with the moving average", name)
		}
	}
	if n == 0 || len(plain)+n != len(averaged) {
		t.Fatalf("%d averaged tensors; %d in the checkpoint without, %d with", n, len(plain), len(averaged))
	}
}
