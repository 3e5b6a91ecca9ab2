package runner

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/internal/npy"
)

// peerScript is deepsim's step in PyTorch eager (make bench-peer installs
// Debian's python3-torch, -torchvision and -pil for it).
const peerScript = "../scripts/bench_peer/peer.py"

// peer is a running peer.py in step mode.
type peer struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startPeer(b *testing.B, ckpt, batches string, threads int, lambdaAdv float64) *peer {
	b.Helper()
	cmd := exec.Command("/usr/bin/python3", peerScript, "step", ckpt, "../pretrained/exemplar.pt", batches,
		strconv.Itoa(threads), "--lambda-adv", strconv.FormatFloat(lambdaAdv, 'g', -1, 64))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("start the PyTorch peer (make bench-peer installs python3-torch): %v", err)
	}
	p := &peer{cmd: cmd, in: in, out: bufio.NewScanner(out)}
	b.Cleanup(func() { in.Close(); cmd.Wait() })
	return p
}

// step runs one peer step and returns its own time and its losses
// (feat, adv, img, discr).
func (p *peer) step(b *testing.B) (time.Duration, [4]float64) {
	b.Helper()
	if _, err := io.WriteString(p.in, "step\n"); err != nil {
		b.Fatal(err)
	}
	if !p.out.Scan() {
		b.Fatalf("the PyTorch peer stopped: %v", p.out.Err())
	}
	f := strings.Fields(p.out.Text())
	var v [5]float64
	for i := range v {
		v[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return time.Duration(v[0] * float64(time.Second)), [4]float64{v[1], v[2], v[3], v[4]}
}

// peerSetup builds deepsim's model for cfg, saves its initial weights and
// the batches both sides train on.
func peerSetup(b *testing.B, cfg Config, batches int) (*graphs.Model, [][]float32, string, string) {
	b.Helper()
	set := benchSet(b, cfg)
	model := benchModel(b, cfg)
	dir := b.TempDir()
	state, err := model.Save(0)
	if err != nil {
		b.Fatal(err)
	}
	ckpt := filepath.Join(dir, "initial.pt")
	if err := os.WriteFile(ckpt, state, 0o644); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := stream(ctx, set, cfg)
	var data [][]float32
	var all []float32
	for range batches {
		batch := <-s
		data = append(data, batch.Data)
		all = append(all, batch.Data...)
	}
	var buf bytes.Buffer
	if err := npy.Write(&buf, []int{batches, cfg.Batch, 3, cfg.Size, cfg.Size}, all); err != nil {
		b.Fatal(err)
	}
	file := filepath.Join(dir, "batches.npy")
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		b.Fatal(err)
	}
	return model, data, ckpt, file
}

func peerConfig(threads, batch int) Config {
	cfg := Defaults()
	cfg.Comparator, cfg.ComparatorSize = "exemplar:conv2", 0 // what peer.py builds
	cfg.Threads, cfg.Batch = threads, batch
	return cfg
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// BenchmarkPeer times deepsim's training step against the same step in
// PyTorch eager (scripts/bench_peer/peer.py), alternating step by step in
// one run, from the same weights on the same batches, at 1 and 2 threads
// and batch 16 and 32. It first checks that the two compute the same
// function: without the adversarial term (whose dropout draws differ
// between the two), their losses agree to 1e-4 relative over 10 steps,
// though deepsim computes its up-convolutions differently (graphs: UpConv).
func BenchmarkPeer(b *testing.B) {
	core, _ := graphs.BLAS()
	b.Logf("OpenBLAS kernel: %q; OPENBLAS_CORETYPE=%q", core, os.Getenv("OPENBLAS_CORETYPE"))

	// Agreement, from the same weights on the same batches, at one thread:
	// each side then sums in a fixed order. (With more, the order varies
	// from step to step, and Adam, which scales every gradient to the
	// learning rate, grows such rounding by about ten a step.)
	cfg := peerConfig(1, 16)
	cfg.Weights.Set(TermAdv, 0)
	graphs.SetThreads(cfg.Threads)
	model, data, ckpt, batches := peerSetup(b, cfg, 10)
	p := startPeer(b, ckpt, batches, cfg.Threads, 0)
	worst := 0.0
	for i, x := range data {
		l, err := model.TrainStep(graphs.Step{Batch: x, N: cfg.Batch})
		if err != nil {
			b.Fatal(err)
		}
		_, ref := p.step(b)
		b.Logf("step %d: feat %.9g / %.9g, img %.9g / %.9g", i+1, l.Get("loss_feat"), ref[0], l.Get("loss_img"), ref[2])
		for k, v := range map[string][2]float64{"loss_feat": {l.Get("loss_feat"), ref[0]}, "loss_img": {l.Get("loss_img"), ref[2]}} {
			rel := math.Abs(v[0]-v[1]) / math.Abs(v[1])
			worst = math.Max(worst, rel)
			if rel > 1e-4 {
				b.Fatalf("step %d: %s %.7g in deepsim, %.7g in PyTorch: the two differ", i+1, k, v[0], v[1])
			}
		}
	}
	b.Logf("agreement: 10 steps from the same weights, losses within %.1e relative", worst)
	b.ReportMetric(worst, "agreement_rel")

	// Step times, alternating, with every loss term on.
	const warm, steps = 2, 20
	type setting struct {
		threads, batch int
		precision      string
	}
	var settings []setting
	for _, threads := range []int{1, 2} {
		for _, batch := range []int{16, 32} {
			settings = append(settings, setting{threads, batch, PrecisionFloat32})
		}
	}
	// bf16 autocast against PyTorch in float32, as a user would run each.
	if hasBF16(cpuFlags()) {
		settings = append(settings, setting{2, 16, PrecisionBF16})
	}
	var rows []string
	for _, st := range settings {
		threads, batch := st.threads, st.batch
		cfg := peerConfig(threads, batch)
		cfg.Precision = st.precision
		graphs.SetThreads(threads)
		model, data, ckpt, batches := peerSetup(b, cfg, 4)
		p := startPeer(b, ckpt, batches, threads, cfg.Weights.Of(TermAdv))
		var ours, theirs []time.Duration
		for i := range warm + steps {
			start := time.Now()
			if _, err := model.TrainStep(graphs.Step{Batch: data[i%len(data)], N: batch}); err != nil {
				b.Fatal(err)
			}
			t := time.Since(start)
			pt, _ := p.step(b)
			if i >= warm {
				ours, theirs = append(ours, t), append(theirs, pt)
			}
		}
		o, t := median(ours), median(theirs)
		ratio := float64(o) / float64(t)
		rows = append(rows, fmt.Sprintf("| %d | %d | %s | %.3f s | %.3f s | %.2f |", threads, batch, st.precision, o.Seconds(), t.Seconds(), ratio))
		b.ReportMetric(ratio, fmt.Sprintf("ratio_t%d_b%d_%s", threads, batch, st.precision))
	}
	b.Logf("step times, medians of %d alternating steps:\n| threads | batch | deepsim precision | deepsim | PyTorch (float32) | ratio |\n|---|---|---|---|---|---|\n%s",
		steps, strings.Join(rows, "\n"))
}

// BenchmarkPeerEndToEnd compares runner train's images per second, data
// included, with the standard PyTorch recipe on the same photos, threads
// and batch: ImageFolder-style PIL decoding, RandomResizedCrop and flip,
// a DataLoader with 2 workers (scripts/bench_peer/peer.py e2e).
func BenchmarkPeerEndToEnd(b *testing.B) {
	const threads, batch, steps = 2, 16, 40
	cfg := peerConfig(threads, batch)
	cfg.Data, cfg.Steps, cfg.LogEvery, cfg.CheckpointEvery = defaultPhotos, steps, 1, steps
	run := filepath.Join(b.TempDir(), "run")
	if _, err := Train(context.Background(), cfg, TrainOptions{Out: run, Log: discardLog(), Progress: io.Discard}); err != nil {
		b.Fatal(err)
	}
	m, err := ReadMetrics(filepath.Join(run, MetricsFile))
	if err != nil {
		b.Fatal(err)
	}
	var ours float64
	for _, l := range m[3:] { // as the peer, after three steps
		ours += l.ImagesPerSec / float64(len(m)-3)
	}
	// ImageFolder wants class folders: one, of links to the photos.
	folder := filepath.Join(b.TempDir(), "photos", "all")
	os.MkdirAll(folder, 0o755)
	set, err := loadImages(context.Background(), cfg, defaultPhotos, discardLog())
	if err != nil {
		b.Fatal(err)
	}
	for i, p := range set.Paths {
		os.Symlink(p, filepath.Join(folder, fmt.Sprintf("%03d%s", i, filepath.Ext(p))))
	}
	out, err := exec.Command("/usr/bin/python3", peerScript, "e2e", "../pretrained/exemplar.pt", filepath.Dir(folder),
		strconv.Itoa(threads), strconv.Itoa(batch), strconv.Itoa(steps)).Output()
	if err != nil {
		b.Fatalf("the PyTorch recipe: %v", err)
	}
	theirs, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("end to end on %d photos, %d threads, batch %d: runner train %.1f images/s, the PyTorch recipe %.1f (x%.2f)",
		len(set.Paths), threads, batch, ours, theirs, ours/theirs)
	b.ReportMetric(ours, "deepsim_images/s")
	b.ReportMetric(theirs, "pytorch_images/s")
}
