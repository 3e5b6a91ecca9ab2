package runner

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/disintegration/imaging"
)

// rendered opens a page in headless Chromium (make deps installs it) and
// returns the counts its script writes once every image has loaded, by
// the kind of image (the attribute data-KIND-rendered).
func rendered(t *testing.T, page string) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "chromium", "--headless", "--no-sandbox", "--disable-gpu",
		"--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
		"--disable-sync", "--user-data-dir="+t.TempDir(), "--virtual-time-budget=10000",
		"--dump-dom", "file://"+page).Output()
	if err != nil {
		t.Fatalf("headless chromium: %v (make deps installs Debian's chromium)", err)
	}
	ms := regexp.MustCompile(`data-(\w+)-rendered="(\d+)"`).FindAllSubmatch(out, -1)
	if ms == nil {
		t.Fatal("the page set no data-*-rendered: its script did not run")
	}
	counts := map[string]int{}
	for _, m := range ms {
		counts[string(m[1])], _ = strconv.Atoi(string(m[2]))
	}
	return counts
}

// renderedCounts are the run report's counts.
func renderedCounts(t *testing.T, page string) (plots, curves, recons, samples int) {
	t.Helper()
	c := rendered(t, page)
	for _, k := range []string{"plots", "curves", "recons", "samples"} {
		if _, ok := c[k]; !ok {
			t.Fatalf("the report set no data-%s-rendered", k)
		}
	}
	return c["plots"], c["curves"], c["recons"], c["samples"]
}

func TestReportRendersInChromium(t *testing.T) {
	data := photos(t, 3)
	held := photos(t, 2)
	cfg := smallConfig(data)
	cfg.Heldout = []string{held}
	cfg.Steps, cfg.CheckpointEvery = 4, 2
	run := filepath.Join(t.TempDir(), "run")
	mustTrain(t, cfg, TrainOptions{Out: run})
	for _, f := range []string{ReportFile, EvalFile, "report/step-0000002.png", "report/step-0000004.png"} {
		if _, err := os.Stat(filepath.Join(run, f)); err != nil {
			t.Fatal(err)
		}
	}
	plots, curves, recons, samples := renderedCounts(t, filepath.Join(run, ReportFile))
	if plots != 4 {
		t.Errorf("%d loss plots rendered, want 4 (feat, adv, img, discr)", plots)
	}
	if want := 2 * len(curveMeasures); curves != want {
		t.Errorf("%d held-back charts rendered, want %d (each measure against steps and minutes)", curves, want)
	}
	if recons != 3 {
		t.Errorf("%d reconstruction rows rendered, want 3 (inputs, steps 2 and 4)", recons)
	}
	if samples != 0 {
		t.Errorf("an autoencoder's report shows %d sample rows", samples)
	}
}

func TestVAEReportShowsKLAndSamples(t *testing.T) {
	cfg := smallConfig(photos(t, 3))
	cfg.Task, cfg.KLWeight, cfg.KLWarmup = TaskVAE, 1e-3, 2
	cfg.Steps, cfg.CheckpointEvery = 4, 2
	run := filepath.Join(t.TempDir(), "run")
	mustTrain(t, cfg, TrainOptions{Out: run})
	plots, curves, recons, samples := renderedCounts(t, filepath.Join(run, ReportFile))
	if plots != 5 || recons != 3 || samples != 2 || curves != 0 {
		t.Fatalf("rendered %d plots (want 5 with kl), %d reconstruction rows (want 3), %d sample rows (want 2), %d held-back charts (want 0: no held-back images)", plots, recons, samples, curves)
	}
}

// runner report puts several runs' held-back curves on one page, and
// refuses a run without a curve or one judged by another network.
func TestCompareRuns(t *testing.T) {
	data := photos(t, 3)
	dir := t.TempDir()
	train := func(name string, mutate func(*Config)) string {
		cfg := smallConfig(data)
		cfg.Heldout, cfg.Steps, cfg.EvalEvery = []string{data}, 4, 2
		mutate(&cfg)
		run := filepath.Join(dir, name)
		mustTrain(t, cfg, TrainOptions{Out: run})
		return run
	}
	se := train("se", func(c *Config) { c.Weights = Weights{}; c.Weights.Set(TermImg, 1) })
	ds := train("deepsim", func(*Config) {})
	page := filepath.Join(dir, "compare.html")
	if err := CompareRuns([]string{se, ds}, page, filepath.Join(dir, "curves")); err != nil {
		t.Fatal(err)
	}
	if curves := rendered(t, page)["curves"]; curves != 2*len(curveMeasures) {
		t.Fatalf("%d charts rendered, want %d", curves, 2*len(curveMeasures))
	}
	for _, m := range curveMeasures {
		if _, err := imaging.Open(filepath.Join(dir, "curves-"+m.key+"-minutes.png")); err != nil {
			t.Fatalf("chart of %s against minutes: %v", m.key, err)
		}
	}
	none := train("none", func(c *Config) { c.EvalEvery = 0 })
	if err := CompareRuns([]string{se, none}, page, ""); err == nil || !strings.Contains(err.Error(), "no held-back curve") {
		t.Fatalf("a run without a curve: %v", err)
	}
	other := train("other", func(c *Config) { c.Comparator = "vgg16-random:conv3_3" })
	if err := CompareRuns([]string{se, other}, page, ""); err == nil || !strings.Contains(err.Error(), "do not compare") {
		t.Fatalf("runs judged by different networks: %v", err)
	}
}
