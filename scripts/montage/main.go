// Command montage lays out images in rows, one row per folder (its PNGs
// in name order, leaving out runner reconstruct's grid.png), for the
// README's figures:
//
//	go run ./scripts/montage -out fig.png crops/ runA/ runB/
package main

import (
	"flag"
	"fmt"
	"image"
	"os"
	"path/filepath"

	"github.com/disintegration/imaging"

	"github.com/deepsim/deepsim/runner"
)

func main() {
	out := flag.String("out", "montage.png", "PNG to write")
	n := flag.Int("n", 8, "images per row")
	flag.Parse()
	if err := run(*out, *n, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "montage:", err)
		os.Exit(1)
	}
}

func run(out string, n int, dirs []string) error {
	if len(dirs) == 0 {
		return fmt.Errorf("no folders given")
	}
	var rows [][]*image.NRGBA
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.png"))
		if err != nil {
			return err
		}
		var row []*image.NRGBA
		for _, f := range files {
			if filepath.Base(f) == runner.GridFile || len(row) == n {
				continue
			}
			img, err := imaging.Open(f)
			if err != nil {
				return err
			}
			row = append(row, imaging.Clone(img))
		}
		rows = append(rows, row)
	}
	return imaging.Save(runner.Mosaic(rows, 2, 2), out)
}
