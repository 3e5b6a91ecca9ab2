package runner

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/disintegration/imaging"

	"github.com/deepsim/deepsim/pretrained"
)

func TestAblateWritesTableAndSheet(t *testing.T) {
	base := smallConfig(photos(t, 2))
	base.Steps, base.Batch, base.CheckpointEvery = 2, 2, 2
	out := t.TempDir()
	rows, err := Ablate(context.Background(), AblateOptions{Base: base, Heldout: []string{photos(t, 2)}, Out: out, N: 4,
		Store: pretrained.Store{Home: t.TempDir()}, Log: discardLog()})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(Combinations) {
		t.Fatalf("%d rows", len(rows))
	}
	// Each combination trained with its own weights.
	for _, r := range rows {
		cfg, err := LoadConfig(filepath.Join(out, r.Slug))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Weights != r.apply(base).Weights || cfg.Seed != base.Seed {
			t.Fatalf("%s trained with %+v", r.Name, cfg)
		}
	}
	// The terms left out are 0, the others keep the base's weights.
	fa := Combinations[3].apply(base).Weights
	if Combinations[3].Slug != "feature-adversarial" || fa.Of(TermImg) != 0 || fa.Of(TermFeat) != base.Weights.Of(TermFeat) ||
		fa.Of(TermAdv) != base.Weights.Of(TermAdv) || fa.Of(TermMatch) != 0 {
		t.Fatalf("feature + adversarial over %+v: %+v", base.Weights, fa)
	}
	table, err := os.ReadFile(filepath.Join(out, AblationTable))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range Combinations {
		if !strings.Contains(string(table), "| "+c.Name+" |") {
			t.Fatalf("table lacks %q:\n%s", c.Name, table)
		}
	}
	sheet, err := imaging.Open(filepath.Join(out, AblationImage))
	if err != nil {
		t.Fatal(err)
	}
	nrows := 1 + len(Combinations)
	if b := sheet.Bounds(); b.Dx() != reportCrops*(base.Size+2)-2 || b.Dy() != nrows*(base.Size+2)-2 {
		t.Fatalf("sheet is %v", b)
	}
}

// An ablation continues only the runs of its own settings.
func TestAblateRefusesOtherSettings(t *testing.T) {
	base := smallConfig(photos(t, 2))
	base.Steps, base.Batch, base.CheckpointEvery = 1, 2, 1
	out := t.TempDir()
	opt := AblateOptions{Base: base, Heldout: []string{photos(t, 2)}, Out: out, N: 4, Store: pretrained.Store{Home: t.TempDir()}, Log: discardLog()}
	if _, err := Ablate(context.Background(), opt); err != nil {
		t.Fatal(err)
	}
	opt.Base.Seed = 9
	if _, err := Ablate(context.Background(), opt); err == nil || !strings.Contains(err.Error(), "other settings") {
		t.Fatalf("err = %v", err)
	}
	opt.Base.Seed, opt.Base.Steps = base.Seed, 2 // more steps: the same ablation, continued
	if _, err := Ablate(context.Background(), opt); err != nil {
		t.Fatal(err)
	}
}
