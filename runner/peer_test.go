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
	"github.com/deepsim/deepsim/pipeline"
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

// startPeer starts peer.py's step mode; form are its formulation's flags
// (--form, --layout, --bf16).
func startPeer(b *testing.B, ckpt, batches string, threads int, lambdaAdv float64, form ...string) *peer {
	b.Helper()
	args := append([]string{peerScript, "step", ckpt, "../pretrained/exemplar.pt", batches,
		strconv.Itoa(threads), "--lambda-adv", strconv.FormatFloat(lambdaAdv, 'g', -1, 64)}, form...)
	cmd := exec.Command("/usr/bin/python3", args...)
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
	images := benchData(b, cfg)
	model := benchModel(b, cfg, nil)
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
	s := stream(ctx, images, cfg)
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
	// What peer.py builds: the paper's up-convolutions, the Exemplar-CNN.
	cfg.Upsample = UpsampleDeconv
	cfg.Comparator, cfg.ComparatorSize = "exemplar:conv2", 0
	cfg.Threads, cfg.Batch = threads, batch
	return cfg
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// peerForms are the formulations of the step BenchmarkPeer times in
// PyTorch eager (scripts/bench_peer/peer.py): the one users write, and the
// fastest known, in both layouts and in bf16.
var peerForms = []struct {
	name string
	args []string
	bf16 bool
}{
	{"ConvTranspose2d, NCHW (as users write it)", []string{"--form", "transposed"}, false},
	{"2x2 sub-pixel, NCHW", []string{"--form", "subpixel"}, false},
	{"2x2 sub-pixel, channels-last", []string{"--form", "subpixel", "--layout", "cl"}, false},
	{"2x2 sub-pixel, NCHW, bf16", []string{"--form", "subpixel", "--bf16"}, true},
	{"2x2 sub-pixel, channels-last, bf16", []string{"--form", "subpixel", "--layout", "cl", "--bf16"}, true},
}

// peerOutput runs peer.py in a mode that prints one line.
func peerOutput(b *testing.B, args ...string) []string {
	b.Helper()
	out, err := exec.Command("/usr/bin/python3", append([]string{peerScript}, args...)...).Output()
	if err != nil {
		b.Fatalf("peer.py %s: %v", args[0], err)
	}
	return strings.Fields(string(out))
}

// BenchmarkPeer times deepsim's training step against the same step in
// PyTorch eager (scripts/bench_peer/peer.py) in each of its formulations
// (peerForms), alternating step by step in one run, from the same weights
// on the same batches, at 2 threads, batch 16. It first checks that the
// two compute the same function: without the adversarial term (whose
// dropout draws differ between the two), their losses agree to 1e-4
// relative over 10 steps. Then it sets deepsim's step against the
// machine's limit: the step's FLOPs, counted as PyTorch dispatches them,
// over deepsim's time, against the fastest 3x3 convolution measured here.
func BenchmarkPeer(b *testing.B) {
	core, _ := graphs.BLAS()
	b.Logf("OpenBLAS kernel: %q; OPENBLAS_CORETYPE=%q; CPU: %s", core, os.Getenv("OPENBLAS_CORETYPE"), cpuModel())
	// The convolution peak first, while nothing else here holds a thread
	// pool: measured after the contenders, it read 239 GFLOP/s where alone
	// it reads 430-448.
	const threads, batch, warm, steps = 2, 16, 3, 20
	pk := peerOutput(b, "peak", strconv.Itoa(threads))
	peak, _ := strconv.ParseFloat(pk[0], 64)

	// Agreement, from the same weights on the same batches, at one thread:
	// each side then sums in a fixed order. (With more, the order varies
	// from step to step, and Adam, which scales every gradient to the
	// learning rate, grows such rounding by about ten a step.) The peer of
	// the same formulation and layout must agree to 1e-4; the one users
	// write, whose kernels round differently, is reported.
	cfg := peerConfig(1, 16)
	cfg.Weights.Set(TermAdv, 0)
	graphs.SetThreads(cfg.Threads)
	model, data, ckpt, batches := peerSetup(b, cfg, 10)
	same := []string{"--form", "subpixel", "--layout", map[string]string{LayoutChannelsLast: "cl", LayoutNCHW: "nchw"}[cfg.Layout]}
	peers := []*peer{startPeer(b, ckpt, batches, cfg.Threads, 0, same...), startPeer(b, ckpt, batches, cfg.Threads, 0)}
	var worst [2]float64
	for i, x := range data {
		l, err := model.TrainStep(graphs.Step{Batch: x, N: cfg.Batch})
		if err != nil {
			b.Fatal(err)
		}
		for j, p := range peers {
			_, ref := p.step(b)
			for k, v := range map[string][2]float64{"loss_feat": {l.Get("loss_feat"), ref[0]}, "loss_img": {l.Get("loss_img"), ref[2]}} {
				rel := math.Abs(v[0]-v[1]) / math.Abs(v[1])
				worst[j] = math.Max(worst[j], rel)
				if j == 0 && rel > 1e-4 {
					b.Fatalf("step %d: %s %.7g in deepsim, %.7g in PyTorch (%s): the two differ", i+1, k, v[0], v[1], strings.Join(same, " "))
				}
			}
		}
	}
	b.Logf("agreement over 10 steps from the same weights: losses within %.1e relative of the peer in deepsim's formulation (%s), %.1e of the ConvTranspose2d peer",
		worst[0], strings.Join(same, " "), worst[1])
	b.ReportMetric(worst[0], "agreement_rel")

	// Step times at 2 threads, batch 16, every loss term on, alternating:
	// one step of each contender in turn.
	bf16 := hasBF16(cpuFlags())
	type contender struct {
		name  string
		step  func() time.Duration
		bf16  bool
		ours  bool
		times []time.Duration
	}
	var all []*contender
	precisions := []string{PrecisionFloat32}
	if bf16 {
		precisions = append(precisions, PrecisionBF16)
	}
	graphs.SetThreads(threads)
	var ckpt0, batches0 string
	var ours *contender // float32 in the default layout
	for _, precision := range precisions {
		for _, layout := range []string{LayoutChannelsLast, LayoutNCHW} {
			cfg := peerConfig(threads, batch)
			cfg.Precision, cfg.Layout = precision, layout
			model, data, ckpt, batches := peerSetup(b, cfg, 4)
			ckpt0, batches0 = ckpt, batches
			i := 0
			c := &contender{name: "deepsim, " + precision + ", " + layout, ours: true, bf16: precision == PrecisionBF16, step: func() time.Duration {
				start := time.Now()
				if _, err := model.TrainStep(graphs.Step{Batch: data[i%len(data)], N: batch}); err != nil {
					b.Fatal(err)
				}
				i++
				return time.Since(start)
			}}
			if precision == PrecisionFloat32 && layout == DefaultLayout {
				ours = c
			}
			all = append(all, c)
		}
	}
	oursBF16 := all[len(all)-2] // bf16 in channels-last, when the CPU has it
	adv := peerConfig(threads, batch).Weights.Of(TermAdv)
	for _, f := range peerForms {
		if f.bf16 && !bf16 {
			continue
		}
		p := startPeer(b, ckpt0, batches0, threads, adv, f.args...)
		all = append(all, &contender{name: "PyTorch eager, " + f.name, bf16: f.bf16, step: func() time.Duration {
			t, _ := p.step(b)
			return t
		}})
	}
	for i := range warm + steps {
		for _, c := range all {
			if t := c.step(); i >= warm {
				c.times = append(c.times, t)
			}
		}
	}

	// The fastest peer of each precision, and the one users write.
	med := func(c *contender) float64 { return median(c.times).Seconds() }
	var rows []string
	fastest := map[bool]*contender{}
	for _, c := range all {
		rows = append(rows, fmt.Sprintf("| %s | %.3f s |", c.name, med(c)))
		if !c.ours && (fastest[c.bf16] == nil || med(c) < med(fastest[c.bf16])) {
			fastest[c.bf16] = c
		}
	}
	b.Logf("step times, medians of %d alternating steps, %d threads, batch %d:\n| step | s/step |\n|---|---|\n%s",
		steps, threads, batch, strings.Join(rows, "\n"))
	users := all[2*len(precisions)]
	b.Logf("%s against the fastest float32 peer (%s): x%.2f; against %s: x%.2f",
		ours.name, fastest[false].name, med(ours)/med(fastest[false]), users.name, med(ours)/med(users))
	b.ReportMetric(med(ours)/med(fastest[false]), "ratio_fastest")
	b.ReportMetric(med(ours)/med(users), "ratio_transposed")
	if bf16 {
		b.Logf("%s against the fastest bf16 peer (%s): x%.2f", oursBF16.name, fastest[true].name, med(oursBF16)/med(fastest[true]))
	}

	// The machine's limit: the step's FLOPs (the 2x2 form's, which are
	// deepsim's) over its time, against the fastest 3x3 convolution here.
	f := peerOutput(b, "flops", ckpt0, "../pretrained/exemplar.pt", batches0, "--form", "subpixel",
		"--lambda-adv", strconv.FormatFloat(adv, 'g', -1, 64))
	flops, _ := strconv.ParseFloat(f[0], 64)
	achieved := flops / med(ours) / 1e9
	b.Logf("the step: %.1f GFLOP; deepsim %.0f GFLOP/s, the fastest 3x3 convolution here %.0f GFLOP/s (%s): %.0f%% of it",
		flops/1e9, achieved, peak, strings.Join(pk[1:], " "), 100*achieved/peak)
	b.ReportMetric(100*achieved/peak, "pct_of_conv_peak")
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
	paths, err := pipeline.Find(defaultPhotos...)
	if err != nil {
		b.Fatal(err)
	}
	for i, p := range paths {
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
		len(paths), threads, batch, ours, theirs, ours/theirs)
	b.ReportMetric(ours, "deepsim_images/s")
	b.ReportMetric(theirs, "pytorch_images/s")
}
