package runner

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// renderedCounts opens a page in headless Chromium (make deps installs it)
// and returns the counts its script writes once every image has loaded.
func renderedCounts(t *testing.T, page string) (plots, recons, samples int) {
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
	get := func(attr string) int {
		m := regexp.MustCompile(attr + `="(\d+)"`).FindSubmatch(out)
		if m == nil {
			t.Fatalf("the page set no %s: its script did not run", attr)
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	return get("data-plots-rendered"), get("data-recons-rendered"), get("data-samples-rendered")
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
	plots, recons, samples := renderedCounts(t, filepath.Join(run, ReportFile))
	if plots != 4 {
		t.Errorf("%d loss plots rendered, want 4 (feat, adv, img, discr)", plots)
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
	plots, recons, samples := renderedCounts(t, filepath.Join(run, ReportFile))
	if plots != 5 || recons != 3 || samples != 2 {
		t.Fatalf("rendered %d plots (want 5 with kl), %d reconstruction rows (want 3), %d sample rows (want 2)", plots, recons, samples)
	}
}
