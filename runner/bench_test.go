package runner

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/internal/atomicfile"
	"github.com/deepsim/deepsim/internal/testimages"
	"github.com/deepsim/deepsim/pipeline"
	"github.com/deepsim/deepsim/pretrained"
)

// The default photos (make deps installs them); benchmarks fall back to
// synthetic photos where they are missing.
var defaultPhotos = []string{"/usr/share/backgrounds", "/usr/share/wallpapers"}

func benchData(b *testing.B, cfg Config) *pipeline.Loader {
	b.Helper()
	dirs := defaultPhotos
	for _, d := range dirs {
		if _, err := os.Stat(d); err != nil {
			dir := b.TempDir()
			if _, err := testimages.WritePhotos(dir, 16, 640, 480, 1); err != nil {
				b.Fatal(err)
			}
			dirs = []string{dir}
			break
		}
	}
	data, err := openData(cfg, dirs, discardLog(), nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(data.Close)
	b.Logf("%d images from %v", data.Source().Len(), dirs)
	b.ResetTimer()
	return data
}

// stream is the training run's data stream: random crops on two workers.
func stream(ctx context.Context, data *pipeline.Loader, cfg Config) <-chan pipeline.Batch {
	return pipeline.Stream(ctx, cropBatches(cfg, data, nil), 0, 2, 2)
}

// benchModel builds cfg's model, with its comparator from store (a fresh
// one when nil), closed when the benchmark ends, and sets cfg's thread
// count.
func benchModel(b *testing.B, cfg Config, store *pretrained.Store) *graphs.Model {
	graphs.SetThreads(cfg.Threads) // as Train does: 0 is one per CPU
	if store == nil {
		store = &pretrained.Store{Home: b.TempDir()}
	}
	comp, err := pretrained.OpenString(cfg.ComparatorSpec(), *store, cfg.ComparatorSize)
	if err != nil {
		b.Fatal(err)
	}
	defer comp.Close()
	model, err := graphs.NewModel(cfg.Engine(), comp, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(model.Close)
	return model
}

// trainer returns a function that runs one training step of cfg's model
// on cfg's data stream; everything is released when the benchmark ends.
func trainer(b *testing.B, cfg Config) func() {
	data := benchData(b, cfg)
	model := benchModel(b, cfg, nil)
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	s := stream(ctx, data, cfg)
	return func() {
		batch := <-s
		if _, err := model.TrainStep(graphs.Step{Batch: batch.Data, N: batch.N, KLWeight: cfg.KLWeight}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPipeline measures what the data pipeline alone delivers for the
// default configuration, with the training run's worker count.
func BenchmarkPipeline(b *testing.B) {
	cfg := Defaults()
	data := benchData(b, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := stream(ctx, data, cfg)
	<-s
	const batches = 100
	start := time.Now()
	for range batches * b.N {
		<-s
	}
	b.ReportMetric(float64(batches*b.N*cfg.Batch)/time.Since(start).Seconds(), "images/s")
}

// BenchmarkTrain measures training throughput of the reference
// configuration (64 px, batch 16, feature + adversarial + image loss with
// the shipped comparator) and its variants, data pipeline included.
// "adaptive" is the autoencoder's default loss after D's warm-up.
func BenchmarkTrain(b *testing.B) {
	core, _ := graphs.BLAS()
	b.Logf("OpenBLAS kernel %q (OPENBLAS_CORETYPE=%q), %d CPUs", core, os.Getenv("OPENBLAS_CORETYPE"), runtime.NumCPU())
	deconv := Defaults()
	deconv.Upsample = UpsampleDeconv
	adaptive := Defaults()
	deepsimTask{}.defaults(&adaptive)
	adaptive.DWarmup, adaptive.LRDecay = 0, 0
	type benchCase struct {
		name string
		cfg  Config
	}
	cases := []benchCase{
		{"autoencoder", Defaults()},
		{"vae", DefaultsFor(TaskVAE)},
		{"autoencoder-deconv", deconv},
		{"autoencoder-adaptive", adaptive},
	}
	if hasBF16(cpuFlags()) {
		bf16 := Defaults()
		bf16.Precision = PrecisionBF16
		cases = append(cases, benchCase{"autoencoder-bf16", bf16})
	}
	for _, bc := range cases {
		b.Run(bc.name, func(b *testing.B) {
			step := trainer(b, bc.cfg)
			for range 3 { // warm-up
				step()
			}
			const steps = 30
			start := time.Now()
			for range steps * b.N {
				step()
			}
			b.ReportMetric(float64(steps*b.N*bc.cfg.Batch)/time.Since(start).Seconds(), "images/s")
		})
	}
}

// BenchmarkMemoryFlat trains the default configuration (at batch 4, to keep
// it short: per-step leaks do not depend on the batch) for 1000 steps and
// reports the resident set size at steps 200 and 1000.
func BenchmarkMemoryFlat(b *testing.B) {
	cfg := Defaults()
	cfg.Batch = 4
	step := trainer(b, cfg)
	var at200 float64
	for i := 1; i <= 1000; i++ {
		step()
		if i == 200 {
			at200 = rssMiB(b)
		}
	}
	at1000 := rssMiB(b)
	b.ReportMetric(at200, "rss_MiB@200")
	b.ReportMetric(at1000, "rss_MiB@1000")
	b.ReportMetric(100*(at1000-at200)/at200, "growth_%")
}

func rssMiB(b testing.TB) float64 {
	runtime.GC()
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		b.Fatal(err)
	}
	fields := strings.Fields(string(data))
	pages, err := strconv.ParseFloat(fields[1], 64)
	if err != nil {
		b.Fatal(err)
	}
	return pages * float64(os.Getpagesize()) / (1 << 20)
}

// BenchmarkHeldout measures what the held-back curve costs at its default
// interval: one evaluation of HeldoutCrops crops, under the judge a new
// run gets, against DefaultEvalEvery training steps of the autoencoder's
// default configuration, with the comparator and judge of the store make
// models fills (the shipped comparator and a random judge without it).
func BenchmarkHeldout(b *testing.B) {
	store := pretrained.NewStore(pretrained.DefaultHome())
	cfg := Defaults()
	deepsimTask{}.defaults(&cfg)
	PreferTrainedComparator(&cfg, store)
	data := benchData(b, cfg)
	model := benchModel(b, cfg, &store)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := stream(ctx, data, cfg)
	step := func() {
		batch := <-s
		if _, err := model.TrainStep(graphs.Step{Batch: batch.Data, N: batch.N}); err != nil {
			b.Fatal(err)
		}
	}
	curve, err := openHeldoutCurve(b.TempDir(), cfg, data, store, 0, discardLog())
	if err != nil {
		b.Fatal(err)
	}
	defer curve.close()
	for range 3 {
		step()
	}
	if err := curve.at(model, 1); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	const steps, evals = 30, 3
	for range b.N {
		start := time.Now()
		for range steps {
			step()
		}
		perStep := time.Since(start) / steps
		start = time.Now()
		for i := range evals {
			if err := curve.at(model, int64(i)); err != nil {
				b.Fatal(err)
			}
		}
		perEval := time.Since(start) / evals
		b.ReportMetric(perStep.Seconds(), "s/step")
		b.ReportMetric(perEval.Seconds(), "s/eval")
		b.ReportMetric(100*perEval.Seconds()/(perEval.Seconds()+DefaultEvalEvery*perStep.Seconds()), "%_of_training")
		b.Logf("comparator %s, judge %s, %d crops every %d steps", cfg.ComparatorSpec(), curve.name, HeldoutCrops, DefaultEvalEvery)
	}
}

// BenchmarkCheckpoint measures what one checkpoint of the autoencoder's
// default configuration costs once D has started: serialising E, G, D and
// Adam's state, and the atomic write (synced, renamed) into a run folder.
func BenchmarkCheckpoint(b *testing.B) {
	cfg := Defaults()
	deepsimTask{}.defaults(&cfg)
	store := pretrained.NewStore(pretrained.DefaultHome())
	PreferTrainedComparator(&cfg, store)
	model := benchModel(b, cfg, &store)
	// One step first, past D's warm-up: Adam's state exists as in a run.
	zeros := make([]float32, cfg.Batch*3*cfg.Size*cfg.Size)
	if _, err := model.TrainStep(graphs.Step{Batch: zeros, N: cfg.Batch}); err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	b.ResetTimer()
	var size int
	for range b.N {
		state, err := model.Save(1)
		if err != nil {
			b.Fatal(err)
		}
		if err := atomicfile.WriteFile(filepath.Join(dir, CheckpointFile), state); err != nil {
			b.Fatal(err)
		}
		size = len(state)
	}
	b.ReportMetric(float64(size)/(1<<20), "MiB")
}
