package runner

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/deepsim/deepsim/internal/atomicfile"
	"io/fs"
	"os"
	"path/filepath"
)

// Metrics is one line of metrics.jsonl. Every loss term is always present;
// a term that is switched off is 0.
type Metrics struct {
	Step         int64   `json:"step"`
	LossFeat     float64 `json:"loss_feat"`
	LossAdv      float64 `json:"loss_adv"`
	LossImg      float64 `json:"loss_img"`
	LossDiscr    float64 `json:"loss_discr"`
	ImagesPerSec float64 `json:"images_per_sec"`
	// Whether the balancing rule let G and D learn on this step, so that a
	// GAN that stalls or runs away can be seen in the log.
	UpdatedG bool `json:"updated_g"`
	UpdatedD bool `json:"updated_d"`
	// VAE: the KL divergence of the posterior from N(0, I) in nats per
	// image, and the weight it had on this step (it warms up).
	KL       *float64 `json:"kl,omitempty"`
	KLWeight *float64 `json:"kl_weight,omitempty"`
	// Comparator task: the surrogate-class cross-entropy and accuracy on the
	// batch, and on the held-out transformations at evaluation steps.
	LossClass  float64  `json:"loss_class,omitempty"`
	TrainAcc   float64  `json:"train_acc,omitempty"`
	HeldoutAcc *float64 `json:"surrogate_acc,omitempty"`
}

// ReadMetrics reads a metrics.jsonl file.
func ReadMetrics(path string) ([]Metrics, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []Metrics
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var m Metrics
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return out, fmt.Errorf("%s:%d: %w", path, n, err)
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

// truncateMetrics drops the lines after step, which a run logged after its
// last checkpoint and before it died: a resumed run logs them again. A
// partial last line (a crash mid-write) is dropped too.
func truncateMetrics(dir string, step int64) error {
	path := filepath.Join(dir, MetricsFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var keep bytes.Buffer
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		var m Metrics
		if len(line) == 0 || line[len(line)-1] != '\n' || json.Unmarshal(line, &m) != nil || m.Step > step {
			continue
		}
		keep.Write(line)
	}
	if keep.Len() == len(b) {
		return nil
	}
	return atomicfile.WriteFile(path, keep.Bytes())
}

// metricsLog appends lines to metrics.jsonl.
type metricsLog struct {
	f *os.File
}

func openMetrics(dir string) (*metricsLog, error) {
	f, err := os.OpenFile(filepath.Join(dir, MetricsFile), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open metrics: %w", err)
	}
	return &metricsLog{f: f}, nil
}

// Append writes one line with a single write call, so a crash leaves at
// most one partial line, which truncateMetrics removes.
func (l *metricsLog) Append(m Metrics) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if _, err := l.f.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("append metrics: %w", err)
	}
	return nil
}

func (l *metricsLog) Close() error { return l.f.Close() }
