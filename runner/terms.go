package runner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
)

// LossTerm is one weighted term of the generators' DeePSiM loss (every
// task but the comparator's). Everything else about a term follows from
// its name: the config.json key lambda_NAME (and the CLI's flag), the
// weight the engine looks up as NAME, and the metrics key loss_NAME under
// which the step logs the term before weighting.
type LossTerm struct {
	Name    string
	Default float64 // the weight of a new run
	Help    string
}

// LossTerms is the table of loss terms. A new term is a row here and its
// computation in graphs/model.hpp.
var LossTerms = [...]LossTerm{
	{TermFeat, 1, "weight of the feature (perceptual) loss"},
	{TermAdv, 0.01, "weight of the adversarial loss"},
	{TermImg, 1, "weight of the pixel loss"},
	{TermMatch, 0, "weight of D's feature matching: the L1 distance between D's activations on the crop and on G's output (pix2pixHD); needs the adversarial term"},
	{TermPriorAdv, 0, "VAE: weight of the adversarial term on decoded draws from the prior, which D also sees as fakes (VAE/GAN, Larsen et al.); needs the adversarial term"},
}

// The terms that code outside the table names.
const (
	TermFeat = "feat" // the comparator's feature distance: needs a comparator
	TermAdv  = "adv"  // -log D(G(x)): needs a discriminator
	TermImg  = "img"  // the squared error on pixels
	// TermMatch is D's feature matching: needs a discriminator, which the
	// adversarial term brings.
	TermMatch = "match"
	// TermPriorAdv is -log D(G(z)) on draws z from a VAE's prior: needs a
	// discriminator.
	TermPriorAdv = "prior_adv"
)

// Key is the term's weight's config.json key.
func (t LossTerm) Key() string { return "lambda_" + t.Name }

// Metric is the metrics.jsonl key of the term's value.
func (t LossTerm) Metric() string { return "loss_" + t.Name }

// Weights are a run's loss weights, in the order of LossTerms.
type Weights [len(LossTerms)]float64

// defaultWeights are the table's defaults.
func defaultWeights() Weights {
	var w Weights
	for i, t := range LossTerms {
		w[i] = t.Default
	}
	return w
}

func termIndex(name string) int {
	for i, t := range LossTerms {
		if t.Name == name {
			return i
		}
	}
	panic(fmt.Sprintf("runner: no loss term %q", name))
}

// Of is the named term's weight.
func (w Weights) Of(name string) float64 { return w[termIndex(name)] }

// Set sets the named term's weight.
func (w *Weights) Set(name string, v float64) { w[termIndex(name)] = v }

// byName are the weights by the names the engine looks them up under.
func (w Weights) byName() map[string]float64 {
	m := make(map[string]float64, len(w))
	for i, t := range LossTerms {
		m[t.Name] = w[i]
	}
	return m
}

// MarshalJSON writes a config's fields in their declared order, as
// encoding/json would, with the loss weights as lambda_NAME keys where
// Weights stands: config.json keeps the layout it had before the table.
func (c Config) MarshalJSON() ([]byte, error) {
	type plain Config // without these methods
	v := reflect.ValueOf(plain(c))
	var b bytes.Buffer
	b.WriteByte('{')
	put := func(key string, val any) error {
		raw, err := json.Marshal(val)
		if err != nil {
			return fmt.Errorf("config %s: %w", key, err)
		}
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:", key)
		b.Write(raw)
		return nil
	}
	for i := 0; i < v.NumField(); i++ {
		f, val := v.Type().Field(i), v.Field(i)
		if f.Type == reflect.TypeOf(Weights{}) {
			for j, t := range LossTerms {
				if err := put(t.Key(), c.Weights[j]); err != nil {
					return nil, err
				}
			}
			continue
		}
		key, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
		if key == "-" || opts == "omitempty" && empty(val) {
			continue
		}
		if err := put(key, val.Interface()); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// empty is encoding/json's test for omitempty.
func empty(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Slice, reflect.Map, reflect.String, reflect.Array:
		return v.Len() == 0
	case reflect.Bool, reflect.Int, reflect.Int64, reflect.Float64, reflect.Pointer, reflect.Interface:
		return v.IsZero()
	}
	return false
}

// UnmarshalJSON reads what MarshalJSON writes. Keys it lacks keep their
// values (ParseConfig starts from the task's defaults).
func (c *Config) UnmarshalJSON(b []byte) error {
	type plain Config
	if err := json.Unmarshal(b, (*plain)(c)); err != nil {
		return err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	for i, t := range LossTerms {
		if r, ok := raw[t.Key()]; ok {
			if err := json.Unmarshal(r, &c.Weights[i]); err != nil {
				return fmt.Errorf("%s: %w", t.Key(), err)
			}
		}
	}
	return nil
}
