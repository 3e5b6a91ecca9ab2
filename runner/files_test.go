package runner

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string // "" for valid
	}{
		{"defaults", func(*Config) {}, ""},
		{"se baseline", func(c *Config) { c.LambdaFeat, c.LambdaAdv = 0, 0 }, ""},
		{"no data", func(c *Config) { c.Data = nil }, "--data"},
		{"size 48", func(c *Config) { c.Size = 48 }, "power of two"},
		{"size 8", func(c *Config) { c.Size = 8 }, "power of two"},
		{"unknown task", func(c *Config) { c.Task = "gan" }, "not available"},
		{"feature loss without comparator", func(c *Config) { c.Comparator = "" }, "needs a --comparator"},
		{"comparator task at 32 px", func(c *Config) {
			c.Task, c.Classes, c.HeldoutPerClass, c.EvalEvery, c.Size = TaskComparator, 10, 1, 1, 32
		}, "64 px"},
		{"all weights zero", func(c *Config) { c.LambdaFeat, c.LambdaAdv, c.LambdaImg = 0, 0, 0 }, "nothing to train"},
		{"negative weight", func(c *Config) { c.LambdaAdv = -1 }, "negative"},
		{"zero batch", func(c *Config) { c.Batch = 0 }, "--batch"},
		{"vae", func(c *Config) { c.Task, c.KLWeight, c.KLWarmup = TaskVAE, 1e-3, 500 }, ""},
		{"kl weight on an autoencoder", func(c *Config) { c.KLWeight = 1e-3 }, "--task vae"},
		{"negative kl warm-up", func(c *Config) { c.Task, c.KLWarmup = TaskVAE, -1 }, "negative"},
		{"unknown upsampling", func(c *Config) { c.Upsample = "bilinear" }, "--upsample"},
		{"zero latent", func(c *Config) { c.CodeChannels = 0 }, "--latent"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Defaults()
			cfg.Data = []string{"photos"}
			tc.edit(&cfg)
			err := cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want mention of %q", err, tc.want)
			}
		})
	}
}
