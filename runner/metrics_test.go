package runner

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/deepsim/deepsim/graphs"
)

func TestTruncateMetrics(t *testing.T) {
	line := func(step string) string {
		return `{"step":` + step + `,"loss_feat":1,"loss_adv":0,"loss_img":1,"loss_discr":0,"images_per_sec":1}` + "\n"
	}
	tests := []struct {
		name, in, want string
		step           int64
	}{
		{"nothing to drop", line("1") + line("2"), line("1") + line("2"), 2},
		{"lines past the checkpoint", line("1") + line("2") + line("3"), line("1"), 1},
		{"partial last line", line("1") + `{"step":2,"loss`, line("1"), 5},
		{"garbage line", line("1") + "xx\n" + line("2"), line("1") + line("2"), 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, MetricsFile)
			if err := os.WriteFile(path, []byte(tc.in), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := truncateMetrics(dir, tc.step); err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(path)
			if string(got) != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	if err := truncateMetrics(t.TempDir(), 3); err != nil {
		t.Fatalf("no metrics file: %v", err)
	}
}

// A metrics line keeps today's layout: the four DeePSiM terms always, then
// the timing and balancing flags, then the task's terms in logged order.
func TestMetricsLayout(t *testing.T) {
	term := func(name string, v float64) graphs.Term { return graphs.Term{Name: name, Value: v} }
	tests := []struct {
		name string
		m    Metrics
		want string
	}{
		{"autoencoder", Metrics{Step: 3, Terms: []graphs.Term{term("loss_feat", 0.5), term("loss_adv", 0.25),
			term("loss_img", 1), term("loss_discr", 1.5)}, ImagesPerSec: 20, UpdatedG: true, UpdatedD: true},
			`{"step":3,"loss_feat":0.5,"loss_adv":0.25,"loss_img":1,"loss_match":0,"loss_prior_adv":0,"loss_discr":1.5,"images_per_sec":20,"updated_g":true,"updated_d":true}`},
		{"vae", Metrics{Step: 1, Terms: []graphs.Term{term("loss_feat", 0), term("loss_adv", 0), term("loss_img", 2),
			term("loss_discr", 0), term("kl", 30), term("kl_weight", 1e-6)}, ImagesPerSec: 1.5, UpdatedG: true},
			`{"step":1,"loss_feat":0,"loss_adv":0,"loss_img":2,"loss_match":0,"loss_prior_adv":0,"loss_discr":0,"images_per_sec":1.5,"updated_g":true,"updated_d":false,"kl":30,"kl_weight":0.000001}`},
		{"comparator: no DeePSiM terms, logged as 0; an accuracy of 0 is kept", Metrics{Step: 6, Terms: []graphs.Term{
			term("loss_class", 1.25), term("train_acc", 0), term("surrogate_acc", 0.125)}, ImagesPerSec: 7, UpdatedG: true},
			`{"step":6,"loss_feat":0,"loss_adv":0,"loss_img":0,"loss_match":0,"loss_prior_adv":0,"loss_discr":0,"images_per_sec":7,"updated_g":true,"updated_d":false,"loss_class":1.25,"train_acc":0,"surrogate_acc":0.125}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := json.Marshal(tc.m)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tc.want {
				t.Fatalf("got  %s\nwant %s", b, tc.want)
			}
			var back Metrics
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			again, _ := json.Marshal(back)
			if string(again) != tc.want {
				t.Fatalf("round trip: %s", again)
			}
		})
	}
	if _, err := json.Marshal(Metrics{Terms: []graphs.Term{term("loss_img", math.NaN())}}); err == nil {
		t.Fatal("a NaN term was written")
	}
}
