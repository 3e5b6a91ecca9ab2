package main

import (
	"bytes"
	"fmt"
	"image"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/disintegration/imaging"

	"github.com/deepsim/deepsim/internal/turbojpeg"
	"github.com/deepsim/deepsim/pipeline"
	"github.com/deepsim/deepsim/runner"
)

// The synthetic ImageNet-like set of make bench-data: 100 classes of 1000
// photos of 500x375 (a fifth of them 375x500), JPEG quality 90, cut from
// the default photos; as class folders, and as 100 shards of 1000.
const (
	benchClasses  = 100
	benchPerClass = 1000
)

// benchDataDir is where the synthetic set is kept between runs:
// DEEPSIM_BENCH_DATA, else DEEPSIM_HOME/bench-data.
func benchDataDir(b *testing.B) string {
	if d := os.Getenv("DEEPSIM_BENCH_DATA"); d != "" {
		return d
	}
	home := os.Getenv("DEEPSIM_HOME")
	if home == "" {
		b.Skip("set DEEPSIM_HOME or DEEPSIM_BENCH_DATA (make bench-data does)")
	}
	return filepath.Join(home, "bench-data")
}

// makeBenchData writes the set under dir, unless a complete one is there.
func makeBenchData(b *testing.B, dir string) {
	done := filepath.Join(dir, "complete")
	if _, err := os.Stat(done); err == nil {
		return
	}
	start := time.Now()
	photos, err := pipeline.Find("/usr/share/backgrounds", "/usr/share/wallpapers")
	if err != nil || len(photos) == 0 {
		b.Fatalf("the default photos (make deps installs them): %v", err)
	}
	// Each photo at a quarter of its pixels: large enough for 500x375
	// crops at several scales.
	var srcs []*image.NRGBA
	for _, p := range photos {
		img, err := pipeline.Decode(p, pipeline.DecodeOptions{MaxSide: 800, MinSide: 400})
		if err == nil {
			srcs = append(srcs, img)
		}
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= benchClasses*benchPerClass {
					return
				}
				rng := rand.New(rand.NewPCG(7, uint64(i)))
				w, h := 500, 375
				if rng.IntN(5) == 0 {
					w, h = h, w
				}
				src := srcs[rng.IntN(len(srcs))]
				sb := src.Bounds()
				s := min(float64(sb.Dx())/float64(w), float64(sb.Dy())/float64(h))
				s *= 0.6 + 0.4*rng.Float64()
				cw, ch := int(float64(w)*s), int(float64(h)*s)
				x, y := rng.IntN(sb.Dx()-cw+1), rng.IntN(sb.Dy()-ch+1)
				img := imaging.Resize(imaging.Crop(src, image.Rect(x, y, x+cw, y+ch)), w, h, imaging.Linear)
				jpg, err := turbojpeg.Encode(img, 90)
				if err == nil {
					class := filepath.Join(dir, "folders", fmt.Sprintf("c%03d", i/benchPerClass))
					os.MkdirAll(class, 0o755)
					err = os.WriteFile(filepath.Join(class, fmt.Sprintf("%06d.jpg", i)), jpg, 0o644)
				}
				if err != nil {
					failed.Store(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	b.Logf("made %d JPEGs in %s", benchClasses*benchPerClass, time.Since(start).Round(time.Second))
	out, err := exec.Command(binary, "data", "shard", "--out", filepath.Join(dir, "shards"), "--per-shard", strconv.Itoa(benchPerClass), filepath.Join(dir, "folders")).CombinedOutput()
	if err != nil {
		b.Fatalf("runner data shard: %v\n%s", err, out)
	}
	// The small set, cached whole: a list of 300 paths.
	var list strings.Builder
	for i := range 300 {
		fmt.Fprintf(&list, "folders/c%03d/%06d.jpg\n", i/benchPerClass, i)
	}
	if err := os.WriteFile(filepath.Join(dir, "small.txt"), []byte(list.String()), 0o644); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(done, []byte(time.Now().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("made the set and its shards in %s", time.Since(start).Round(time.Second))
}

// trainRun is one measured training run.
type trainRun struct {
	firstStep time.Duration // from the start of the process to step 1's line
	peakMB    float64
	rate      float64 // images/s over steps 11..50
}

func benchTrain(b *testing.B, data string, threads int) trainRun {
	run := filepath.Join(b.TempDir(), "run")
	cmd := exec.Command(binary, "train", "--task", "autoencoder", "--data", data, "--out", run,
		"--size", "64", "--batch", "16", "--seed", "1", "--steps", "50", "--log-every", "1",
		"--checkpoint-every", "1000", "--threads", strconv.Itoa(threads))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	// The child's peak RSS is read from /proc while it runs (VmHWM): the
	// rusage of a forked child starts from its parent's peak, this
	// benchmark's, so wait4's would not do.
	var r trainRun
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	metrics := filepath.Join(run, runner.MetricsFile)
	for waiting := true; waiting; {
		select {
		case err := <-done:
			if err != nil {
				b.Fatalf("runner train --data %s: %v\n%s", data, err, out.String())
			}
			waiting = false
		case <-time.After(20 * time.Millisecond):
			if kb := vmHWM(cmd.Process.Pid); kb > 0 {
				r.peakMB = float64(kb) / 1024
			}
			if r.firstStep == 0 {
				if st, err := os.Stat(metrics); err == nil && st.Size() > 0 {
					r.firstStep = time.Since(start)
				}
			}
		}
	}
	m, err := runner.ReadMetrics(metrics)
	if err != nil || len(m) < 50 {
		b.Fatalf("metrics: %v (%d lines)", err, len(m))
	}
	for _, l := range m[10:] {
		r.rate += l.ImagesPerSec / float64(len(m)-10)
	}
	return r
}

// vmHWM is a process's peak resident set so far, in kB (0 if unknown).
func vmHWM(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return kb
		}
	}
	return 0
}

// loaderRate is the crops per second the loader alone delivers on
// workers goroutines, over about seconds.
func loaderRate(b *testing.B, data string, workers int, seconds float64) float64 {
	src, err := pipeline.List([]string{data}, nil)
	if err != nil {
		b.Fatal(err)
	}
	cfg := runner.Defaults()
	l := pipeline.NewLoader(src, pipeline.LoaderOptions{Size: cfg.Size, MinScale: cfg.MinScale, MaxSide: cfg.MaxSide, CacheBytes: int64(cfg.CacheMB) << 20})
	defer l.Close()
	var batches atomic.Int64
	stop := time.Now().Add(time.Duration(seconds * float64(time.Second)))
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				i := batches.Add(1) - 1
				l.Rows(1, i, 16, 0, 16, true)
			}
		}()
	}
	wg.Wait()
	return float64(16*batches.Load()) / time.Since(start).Seconds()
}

// BenchmarkData (make bench-data): memory and start-up against the
// dataset's size, the loader alone against torchvision's recipe, and
// training streamed against training on a set cached whole.
func BenchmarkData(b *testing.B) {
	dir := benchDataDir(b)
	makeBenchData(b, dir)
	cores := runtime.NumCPU()
	shards := func(n int) string { return filepath.Join(dir, "shards", fmt.Sprintf("shard-{000000..%06d}.tar", n-1)) }
	folders := func(n int) string { return filepath.Join(dir, "folders", fmt.Sprintf("c{000..%03d}", n-1)) }
	runs := []struct {
		name, data string
	}{
		{"folders 10k", folders(10)}, {"folders 100k", folders(100)},
		{"shards 10k", shards(10)}, {"shards 100k", shards(100)},
		{"cached 300", filepath.Join(dir, "small.txt")},
	}
	// Three rounds, alternating, so that a machine that slows down in the
	// middle penalises every configuration alike; medians are reported.
	results := map[string][]trainRun{}
	for round := range 3 {
		for _, r := range runs {
			t := benchTrain(b, r.data, cores)
			results[r.name] = append(results[r.name], t)
			b.Logf("round %d: train %-12s first step %5.1f s, peak RSS %6.0f MB, %5.1f images/s", round+1, r.name,
				t.firstStep.Seconds(), t.peakMB, t.rate)
		}
	}
	mean := func(name string, f func(trainRun) float64) float64 { // the median
		var v []float64
		for _, t := range results[name] {
			v = append(v, f(t))
		}
		slices.Sort(v)
		return v[len(v)/2]
	}
	rss := func(t trainRun) float64 { return t.peakMB }
	first := func(t trainRun) float64 { return t.firstStep.Seconds() }
	rate := func(t trainRun) float64 { return t.rate }
	for _, kind := range []string{"folders", "shards"} {
		b.Logf("%s: peak RSS %.0f MB at 10k, %.0f MB at 100k (x%.3f); first step %.1f s at 10k, %.1f s at 100k; images/s at 100k / cached whole = %.1f / %.1f = %.2f",
			kind, mean(kind+" 10k", rss), mean(kind+" 100k", rss), mean(kind+" 100k", rss)/mean(kind+" 10k", rss),
			mean(kind+" 10k", first), mean(kind+" 100k", first),
			mean(kind+" 100k", rate), mean("cached 300", rate), mean(kind+" 100k", rate)/mean("cached 300", rate))
	}
	// The loaders alone, alternating over three rounds; medians.
	var oursAll, theirsAll []float64
	for range 3 {
		oursAll = append(oursAll, loaderRate(b, filepath.Join(dir, "folders"), cores, 20))
		out, err := exec.Command("/usr/bin/python3", "../../scripts/bench_peer/loader.py", filepath.Join(dir, "folders"),
			strconv.Itoa(cores), "64", "20").Output()
		if err != nil {
			b.Fatalf("torchvision's loader: %v", err)
		}
		r, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
		if err != nil {
			b.Fatal(err)
		}
		theirsAll = append(theirsAll, r)
		b.Logf("loader round: deepsim %.0f crops/s, torchvision %.0f crops/s", oursAll[len(oursAll)-1], r)
	}
	slices.Sort(oursAll)
	slices.Sort(theirsAll)
	ours, theirs := oursAll[1], theirsAll[1]
	b.Logf("loader alone, %d cores, 64 px crops of 100k JPEGs: deepsim %.0f crops/s (%.0f per core), torchvision ImageFolder+RandomResizedCrop+DataLoader %.0f crops/s (%.0f per core): x%.2f",
		cores, ours, ours/float64(cores), theirs, theirs/float64(cores), ours/theirs)
	b.ReportMetric(ours/float64(cores), "deepsim_crops/s/core")
	b.ReportMetric(theirs/float64(cores), "torchvision_crops/s/core")
	b.ReportMetric(mean("shards 100k", rss), "peak_MB_100k")
}
