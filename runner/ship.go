package runner

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/deepsim/deepsim/internal/atomicfile"
	"github.com/deepsim/deepsim/pretrained"
)

// ShipInfoFile says how a weights-only run was made and what it measures;
// its SHA-256 is checked when the weights load.
const ShipInfoFile = "info.json"

// ShipInfo is a shipped run's info.json.
type ShipInfo struct {
	Command string  `json:"command"` // what trained it
	Data    string  `json:"data"`    // on what
	Step    int64   `json:"step"`    // the checkpoint's step
	Minutes float64 `json:"minutes"` // of training, from its held-back curve
	// Heldout is the last point of its held-back curve, at Step.
	Heldout *HeldoutPoint `json:"heldout,omitempty"`
	SHA256  string        `json:"sha256"` // of weights.pt
}

// Ship writes run's inference form into dir: config.json with the moving
// average folded into the weights, weights.pt (E and G alone) and
// info.json, whose Step, Minutes, Heldout and SHA256 it fills in. store
// holds an inversion's target.
func Ship(run, dir string, info ShipInfo, store pretrained.Store) error {
	model, cfg, step, err := openModel(run, store)
	if err != nil {
		return err
	}
	defer model.Close()
	if !cfg.Generative() {
		return fmt.Errorf("%s is a %s run: only generators ship", run, cfg.Task)
	}
	info.Step = step
	weights, err := model.SaveWeights()
	if err != nil {
		return err
	}
	sum := sha256.Sum256(weights)
	info.SHA256 = hex.EncodeToString(sum[:])
	if pts, err := ReadHeldout(run); err == nil {
		for i := range pts {
			if pts[i].Step == info.Step {
				info.Heldout, info.Minutes = &pts[i], pts[i].Minutes
			}
		}
	}
	cfg.EMA = 0
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := SaveConfig(dir, cfg); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, WeightsFile), weights); err != nil {
		return err
	}
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(dir, ShipInfoFile), append(b, '\n'))
}

// checkShipped compares weights with the SHA-256 the run's info.json
// records, where it has one: a shipped run is exactly what was measured.
func checkShipped(files fs.FS, weights []byte, label string) error {
	b, err := fs.ReadFile(files, ShipInfoFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var info ShipInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return fmt.Errorf("%s: %w", ShipInfoFile, err)
	}
	sum := sha256.Sum256(weights)
	if got := hex.EncodeToString(sum[:]); got != info.SHA256 {
		return fmt.Errorf("%s: sha256 %s, but %s records %s", label, got, ShipInfoFile, info.SHA256)
	}
	return nil
}

// ShippedInfo is the info.json of a shipped run (pretrained:NAME).
func ShippedInfo(run string) (ShipInfo, error) {
	var info ShipInfo
	files, shipped, err := pretrained.ShippedRun(run)
	if err != nil {
		return info, err
	}
	if !shipped {
		return info, fmt.Errorf("%s is not a shipped run (%sNAME)", run, pretrained.RunPrefix)
	}
	b, err := fs.ReadFile(files, ShipInfoFile)
	if err != nil {
		return info, err
	}
	return info, json.Unmarshal(b, &info)
}
