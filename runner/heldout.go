package runner

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/internal/measure"
	"github.com/deepsim/deepsim/pipeline"
	"github.com/deepsim/deepsim/pretrained"
)

// HeldoutFile is the held-back curve of a run: a line per evaluation of
// its fixed held-back crops during training (Config.EvalEvery).
const HeldoutFile = "heldout.jsonl"

// HeldoutCrops is how many seeded held-back crops the curve measures.
const HeldoutCrops = 64

// DefaultEvalEvery is a new generative run's interval between held-back
// evaluations, where it has held-back images: at most 5% of training time
// on 2 cores (make bench, BenchmarkTrainHeldout).
const DefaultEvalEvery = 500

// HeldoutPoint is one evaluation on the held-back crops: the measures of
// runner eval that need no feature space of the run's own.
type HeldoutPoint struct {
	Step int64 `json:"step"`
	// Minutes of training since the run began, across resumes.
	Minutes            float64 `json:"minutes"`
	PSNR               float64 `json:"psnr"`
	SSIM               float64 `json:"ssim"`
	SharpnessRatio     float64 `json:"sharpness_ratio"`
	GridRatio          float64 `json:"grid_ratio"`
	PerceptualDistance float64 `json:"perceptual_distance"`
	Judge              string  `json:"judge"`
}

// reconstructionMeasures fills in p's measures of the reconstructions y of
// n crops x, the perceptual distance under judge.
func reconstructionMeasures(p *HeldoutPoint, x, y []float32, n, size int, judge *graphs.Comparator) error {
	plane := 3 * size * size
	p.PSNR, p.SSIM = 0, 0
	for i := range n {
		xi, yi := x[i*plane:(i+1)*plane], y[i*plane:(i+1)*plane]
		p.PSNR += measure.PSNR(xi, yi) / float64(n)
		p.SSIM += measure.SSIM(xi, yi, size) / float64(n)
	}
	p.SharpnessRatio = measure.Sharpness(y, n, size) / measure.Sharpness(x, n, size)
	p.GridRatio = measure.GridRatio(x, y, n, size, gridPeriod)
	d, err := distances(judge, x, y, n, size)
	if err != nil {
		return err
	}
	p.PerceptualDistance = 0
	for _, v := range d {
		p.PerceptualDistance += v / float64(n)
	}
	return nil
}

// heldoutCurve evaluates a training run on its fixed held-back crops and
// appends the points to RUN/heldout.jsonl.
type heldoutCurve struct {
	path   string
	crops  pipeline.Batch
	size   int
	judge  *graphs.Comparator
	name   string
	offset float64   // minutes trained before this process began
	began  time.Time // when this process began training
}

// openHeldoutCurve readies the curve of the run in dir: the crops, the
// judge, and on resume (step > 0) the points up to step, which it keeps.
func openHeldoutCurve(dir string, cfg Config, held *pipeline.Loader, store pretrained.Store, step int64, log *slog.Logger) (*heldoutCurve, error) {
	h := &heldoutCurve{path: filepath.Join(dir, HeldoutFile), crops: fixedCrops(held, HeldoutCrops, 1), size: cfg.Size}
	res := &EvalResult{}
	res.Judge, _ = DefaultJudge(cfg.ComparatorSpec(), store)
	var err error
	if h.judge, err = openJudge(res, cfg.Size, EvalOptions{Store: store}, log); err != nil {
		return nil, fmt.Errorf("held-back curve: %w", err)
	}
	h.name = res.Judge
	if step == 0 {
		err = os.Remove(h.path)
	} else {
		h.offset, err = keepPoints(h.path, step)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		h.judge.Close()
		return nil, err
	}
	h.began = time.Now()
	return h, nil
}

// at evaluates model at step and appends the point.
func (h *heldoutCurve) at(model *graphs.Model, step int64) error {
	p := HeldoutPoint{Step: step, Minutes: h.offset + time.Since(h.began).Minutes(), Judge: h.name}
	y, err := inChunks(h.crops.Data, h.crops.N, 3*h.size*h.size, func(part []float32, n int) ([]float32, error) {
		return model.Reconstruct(part, n, h.size, h.size)
	})
	if err != nil {
		return err
	}
	if err := reconstructionMeasures(&p, h.crops.Data, y, h.crops.N, h.size, h.judge); err != nil {
		return err
	}
	line, err := json.Marshal(p)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(h.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(line, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (h *heldoutCurve) close() { h.judge.Close() }

// keepPoints drops the points after step from the curve at path, as a
// resumed run retrains those steps, and returns the minutes the kept ones
// reached.
func keepPoints(path string, step int64) (float64, error) {
	kept, err := keepUpTo(path, step, func(p HeldoutPoint) int64 { return p.Step })
	if len(kept) == 0 {
		return 0, err
	}
	return kept[len(kept)-1].Minutes, err
}

// ReadHeldout reads a run's held-back curve.
func ReadHeldout(run string) ([]HeldoutPoint, error) {
	return readLines[HeldoutPoint](filepath.Join(run, HeldoutFile))
}
