package runner

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/disintegration/imaging"

	"github.com/deepsim/deepsim/internal/testimages"
	"github.com/deepsim/deepsim/pretrained"
)

// AlexNet's conv5 takes images of at least 63 px. A new run whose crops
// are smaller has its networks see them enlarged to that, recorded in its
// config; a side given by flag is never changed, and one too small is
// refused naming the network, its least side and the flag.
func TestNewRunFitsItsNetworks(t *testing.T) {
	store := pretrained.NewStore(t.TempDir())
	inversion := func(targetSize int) Config {
		cfg := inversionConfig("photos", "alexnet-random", "conv5")
		cfg.TargetSize = targetSize
		return cfg
	}
	autoencoder := func(size int) Config {
		cfg := smallConfig("photos")
		cfg.Comparator, cfg.ComparatorSize = "alexnet-random:conv5", size
		return cfg
	}
	crops64 := autoencoder(CropSide)
	crops64.Size = 64
	tests := []struct {
		name       string
		cfg        Config
		given      string // the flag given, if any
		target     int    // the sides wanted
		comparator int
		err        string
	}{
		{"inversion, crops below the target's least side", inversion(0), "", 63, 0, ""},
		{"inversion, --target-size above it", inversion(96), "target-size", 96, 0, ""},
		{"inversion, --target-size below it", inversion(32), "target-size", 0, 0, "target_size 32"},
		{"comparator at the crop size by default", autoencoder(32), "", 0, 63, ""},
		{"--comparator-size below its least side", autoencoder(32), "comparator-size", 0, 0, "comparator_size 32"},
		{"comparator at its own size", autoencoder(0), "", 0, 0, ""},
		{"--comparator-size -1: the crops' side", crops64, "comparator-size", 0, 64, ""},
		{"--comparator-size -1 below its least side: raised", autoencoder(CropSide), "comparator-size", 0, 63, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := Request{Given: func(key string) bool { return key == strings.ReplaceAll(tc.given, "-", "_") }}
			cfg, err := Resolve(tc.cfg, req, store, nil, discardLog())
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "at least 63 px") {
					t.Fatalf("%v, want an error naming %s and 63 px", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.TargetSize != tc.target || cfg.ComparatorSize != tc.comparator {
				t.Fatalf("target side %d, comparator side %d; want %d and %d", cfg.TargetSize, cfg.ComparatorSize, tc.target, tc.comparator)
			}
		})
	}
}

// Images smaller than the comparator takes are compared enlarged to its
// least side, and features of small images come out of a target fitted
// the same way.
func TestSmallImagesFitTheNetwork(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.png"), filepath.Join(dir, "b.png")
	imaging.Save(testimages.Photo(1, 32, 32), a)
	imaging.Save(imaging.Blur(testimages.Photo(1, 32, 32), 1), b)
	log, buf := captureLog()
	store := pretrained.NewStore(t.TempDir())
	p, err := Similarity(context.Background(), SimilarityOptions{A: a, B: b, Comparator: "alexnet-random:conv5", Store: store, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if *p[0].Distance <= 0 || !strings.Contains(buf.String(), "to=63x63") {
		t.Fatalf("distance %v; log:\n%s", *p[0].Distance, buf.String())
	}
	for _, tc := range []struct {
		targetSize int
		err        string
	}{{0, ""}, {32, "target_size 32"}} {
		_, err := Features(context.Background(), FeaturesOptions{Target: "alexnet-random:conv5", Size: 32, TargetSize: tc.targetSize,
			Inputs: []string{a, b}, Out: filepath.Join(t.TempDir(), "f.npy"), Store: store, Log: discardLog()})
		if (tc.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Fatalf("features at --target-size %d: %v, want %q", tc.targetSize, err, tc.err)
		}
	}
}
