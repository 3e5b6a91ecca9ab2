package runner

import (
	"encoding/json"
	"testing"
)

// FuzzParseConfig feeds config.json readers anything: they return a
// config or an error, and a config they accept validates or is refused
// by name, never a panic.
func FuzzParseConfig(f *testing.F) {
	good, _ := json.Marshal(smallConfig("photos"))
	f.Add(good)
	f.Add([]byte(`{"task":"vae","size":64,"kl_weight":1e-3}`))
	f.Add([]byte(`{"task":"inversion","target":"alexnet","layer":"fc6","size":-8}`))
	f.Add([]byte(`{"task":"nope"}`))
	f.Add([]byte(`{"lambda_img":1e400}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := ParseConfig(b)
		if err != nil {
			return
		}
		if err := cfg.Validate(); err == nil {
			// What validates must build the engine's view and resume-check
			// against itself.
			_ = cfg.Engine()
			if err := CheckResume(cfg, cfg); err != nil {
				t.Fatalf("a config differs from itself: %v", err)
			}
		}
	})
}
