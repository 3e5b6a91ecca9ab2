package runner

import (
	"context"
	"fmt"
	"image"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/deepsim/deepsim/internal/atomicfile"
	"github.com/deepsim/deepsim/pretrained"
)

// Ablation output files.
const (
	AblationTable = "ablation.md"
	AblationImage = "ablation.png"
)

// Combination is one set of loss terms the ablation trains: the terms it
// names keep the base configuration's weights, every other term is off.
type Combination struct {
	Name, Slug string
	Terms      []string
}

// Combinations are the paper's loss combinations, over the base loss (by
// default the autoencoder's: the adversarial term weighed adaptively
// after D's warm-up).
var Combinations = []Combination{
	{"image only (SE)", "image", []string{TermImg}},
	{"feature only", "feature", []string{TermFeat}},
	{"feature + image", "feature-image", []string{TermFeat, TermImg}},
	{"feature + adversarial", "feature-adversarial", []string{TermFeat, TermAdv}},
	{"feature + adversarial + image", "all", []string{TermFeat, TermAdv, TermImg}},
}

// apply is base with only the combination's terms on.
func (c Combination) apply(base Config) Config {
	var w Weights
	for _, t := range c.Terms {
		w.Set(t, base.Weights.Of(t))
	}
	base.Weights = w
	return base
}

// AblateOptions controls Ablate.
type AblateOptions struct {
	Base    Config // everything but the loss weights; Data and Steps set
	Heldout []string
	Out     string
	N       int // eval crops
	Store   pretrained.Store
	Log     *slog.Logger
}

// AblationRow is one combination's evaluation.
type AblationRow struct {
	Combination
	Eval *EvalResult
}

// Ablate trains every combination with identical seeds and data into
// OUT/<slug>, evaluates each on the held-out images, and writes
// OUT/ablation.md and OUT/ablation.png. Runs that exist are resumed, so an
// interrupted ablation continues where it stopped.
func Ablate(ctx context.Context, opt AblateOptions) ([]AblationRow, error) {
	log := opt.Log
	if log == nil {
		log = slog.Default()
	}
	if len(opt.Heldout) == 0 {
		return nil, fmt.Errorf("ablate needs held-out images to evaluate on")
	}
	if err := os.MkdirAll(opt.Out, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockRun(opt.Out)
	if err != nil {
		return nil, err
	}
	defer unlock()
	var rows []AblationRow
	for _, c := range Combinations {
		cfg := c.apply(opt.Base)
		run := filepath.Join(opt.Out, c.Slug)
		_, err := os.Stat(filepath.Join(run, CheckpointFile))
		resume := err == nil
		if resume {
			// Only an interrupted ablation of the same settings continues.
			saved, err := LoadConfig(run)
			if err == nil {
				err = CheckResume(saved, cfg)
			}
			if err != nil {
				return rows, fmt.Errorf("%s: %s holds a run of other settings: %w", c.Name, run, err)
			}
		}
		log.Info("ablation", "combination", c.Name, "run", run)
		if _, err := Train(ctx, cfg, TrainOptions{Out: run, Resume: resume, Store: opt.Store, Log: log}); err != nil {
			return rows, fmt.Errorf("%s: %w", c.Name, err)
		}
		res, err := Evaluate(ctx, EvalOptions{Run: run, Data: opt.Heldout, N: opt.N, Seed: 1, Store: opt.Store, Log: log})
		if err != nil {
			return rows, fmt.Errorf("%s: %w", c.Name, err)
		}
		rows = append(rows, AblationRow{c, res})
	}
	if err := atomicfile.WriteFile(filepath.Join(opt.Out, AblationTable), []byte(ablationTable(opt, rows))); err != nil {
		return rows, err
	}
	sheet, err := ablationSheet(ctx, opt, log)
	if err != nil {
		return rows, err
	}
	b, err := encodePNG(sheet)
	if err != nil {
		return rows, err
	}
	return rows, atomicfile.WriteFile(filepath.Join(opt.Out, AblationImage), b)
}

func ablationTable(opt AblateOptions, rows []AblationRow) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Ablation\n\n%d steps, batch %d, %d px, seed %d, comparator %s; evaluated on %d seeded crops of %s.\n\n",
		opt.Base.Steps, opt.Base.Batch, opt.Base.Size, opt.Base.Seed, opt.Base.ComparatorSpec(), opt.N, strings.Join(opt.Heldout, ", "))
	b.WriteString("| combination |")
	for _, t := range LossTerms {
		b.WriteString(" λ " + t.Name + " |")
	}
	b.WriteString(" PSNR | SSIM | image error % | feature error % | independent feature error % | sharpness ratio |\n|---|")
	b.WriteString(strings.Repeat("---|", len(LossTerms)+6) + "\n")
	for _, r := range rows {
		e, w := r.Eval, r.apply(opt.Base).Weights
		fmt.Fprintf(&b, "| %s |", r.Name)
		for _, v := range w {
			fmt.Fprintf(&b, " %g |", v)
		}
		fmt.Fprintf(&b, " %.2f | %.3f | %.2f | %.2f | %.2f | %.3f |\n",
			e.PSNR, e.SSIM, e.ImageErrorPct, e.FeatureErrorPct, e.FeatureErrorIndependentPct, e.SharpnessRatio)
	}
	if len(rows) > 0 {
		fmt.Fprintf(&b, "\nIndependent judge: %s. %s: rows are the held-out crops, then one row per combination in the table's order.\n",
			rows[0].Eval.Judge, AblationImage)
	}
	return b.String()
}

// ablationSheet reconstructs the same 8 held-out crops with every
// combination: originals first, then one row per combination.
func ablationSheet(ctx context.Context, opt AblateOptions, log *slog.Logger) (*image.NRGBA, error) {
	data, err := openData(opt.Base, opt.Heldout, log, nil)
	if err != nil {
		return nil, err
	}
	defer data.Close()
	size := opt.Base.Size
	crops := fixedCrops(data, reportCrops, 1)
	rows := [][]*image.NRGBA{images(crops.Data, crops.N, size)}
	for _, c := range Combinations {
		model, _, err := OpenModel(filepath.Join(opt.Out, c.Slug), opt.Store)
		if err != nil {
			return nil, err
		}
		y, err := model.Reconstruct(crops.Data, crops.N, size, size)
		model.Close()
		if err != nil {
			return nil, err
		}
		rows = append(rows, images(y, crops.N, size))
	}
	return Mosaic(rows, 2, 0), nil
}
