package runner

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/deepsim/deepsim/graphs"
)

// Metrics is one line of metrics.jsonl: the step, what the step measured
// and what the task logged beside it.
//
// A line is written in a fixed layout: step, the DeePSiM loss terms
// (coreTerms, 0 when the run does not compute one), images_per_sec,
// updated_g, updated_d, then the other terms in the order they were logged
// (for the VAE kl and kl_weight; for the comparator task loss_class,
// train_acc and, at evaluation steps, surrogate_acc).
type Metrics struct {
	Step  int64
	Terms []graphs.Term
	// Images per second since the previous line, data loading included.
	ImagesPerSec float64
	// Whether the balancing rule let G and D learn on this step, so that a
	// GAN that stalls or runs away can be seen in the log.
	UpdatedG, UpdatedD bool
}

// coreTerms are in every metrics line, whatever the task: the loss terms
// (LossTerms), then the discriminator's loss.
func coreTerms() []string {
	var names []string
	for _, t := range LossTerms {
		names = append(names, t.Metric())
	}
	return append(names, "loss_discr")
}

// Get returns the named value, 0 when the line has none.
func (m Metrics) Get(name string) float64 {
	v, _ := m.Lookup(name)
	return v
}

// Lookup returns the named value and whether the line has it.
func (m Metrics) Lookup(name string) (float64, bool) {
	for _, t := range m.Terms {
		if t.Name == name {
			return t.Value, true
		}
	}
	return 0, false
}

// MarshalJSON writes the line in its fixed layout.
func (m Metrics) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"step":` + strconv.FormatInt(m.Step, 10))
	var err error
	field := func(key string, v any) {
		raw, e := json.Marshal(v)
		if e != nil && err == nil {
			err = fmt.Errorf("metrics %s: %w", key, e)
		}
		b.WriteString(`,"` + key + `":`)
		b.Write(raw)
	}
	core := map[string]bool{}
	for _, k := range coreTerms() {
		core[k] = true
		field(k, m.Get(k))
	}
	field("images_per_sec", m.ImagesPerSec)
	field("updated_g", m.UpdatedG)
	field("updated_d", m.UpdatedD)
	for _, t := range m.Terms {
		if !core[t.Name] {
			field(t.Name, t.Value)
		}
	}
	b.WriteByte('}')
	return b.Bytes(), err
}

// UnmarshalJSON reads a line, keeping its values in the order written.
func (m *Metrics) UnmarshalJSON(data []byte) error {
	*m = Metrics{}
	d := json.NewDecoder(bytes.NewReader(data))
	if tok, err := d.Token(); err != nil || tok != json.Delim('{') {
		return errors.New("metrics line is not a JSON object")
	}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		var v any
		if err := d.Decode(&v); err != nil {
			return err
		}
		switch x := v.(type) {
		case bool:
			switch key {
			case "updated_g":
				m.UpdatedG = x
			case "updated_d":
				m.UpdatedD = x
			}
		case float64:
			switch key {
			case "step":
				m.Step = int64(x)
			case "images_per_sec":
				m.ImagesPerSec = x
			default:
				m.Terms = append(m.Terms, graphs.Term{Name: key, Value: x})
			}
		}
	}
	_, err := d.Token()
	return err
}

// ReadMetrics reads a metrics.jsonl file.
func ReadMetrics(path string) ([]Metrics, error) { return readLines[Metrics](path) }

// truncateMetrics drops the lines after step, which a run logged after its
// last checkpoint and before it died: a resumed run logs them again. A
// partial last line (a crash mid-write) is dropped too.
func truncateMetrics(dir string, step int64) error {
	_, err := keepUpTo(filepath.Join(dir, MetricsFile), step, func(m Metrics) int64 { return m.Step })
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
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
