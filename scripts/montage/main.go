// Command montage lays out images in rows, one row per folder (its PNGs
// in name order, leaving out runner reconstruct's grid.png), for the README's figures:
//
//	go run ./scripts/montage -out fig.png crops/ runA/ runB/
package main

import (
	"flag"
	"fmt"
	"image"
	"image/color"
	"os"
	"path/filepath"

	"github.com/disintegration/imaging"
)

func main() {
	out := flag.String("out", "montage.png", "PNG to write")
	n := flag.Int("n", 8, "images per row")
	gap := flag.Int("gap", 2, "pixels between images")
	flag.Parse()
	if err := run(*out, *n, *gap, flag.Args()); err != nil {
		fmt.Fprintln(os.Stderr, "montage:", err)
		os.Exit(1)
	}
}

func run(out string, n, gap int, dirs []string) error {
	if len(dirs) == 0 {
		return fmt.Errorf("no folders given")
	}
	var rows [][]image.Image
	width, height := 0, 0
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.png"))
		if err != nil {
			return err
		}
		var row []image.Image
		w, h := 0, 0
		for _, f := range files {
			if filepath.Base(f) == "grid.png" || len(row) == n {
				continue // runner reconstruct's own overview
			}
			img, err := imaging.Open(f)
			if err != nil {
				return err
			}
			row = append(row, img)
			w += img.Bounds().Dx() + gap
			h = max(h, img.Bounds().Dy())
		}
		rows = append(rows, row)
		width, height = max(width, w+gap), height+h+gap
	}
	sheet := imaging.New(width, height+gap, color.NRGBA{32, 32, 32, 255})
	y := gap
	for _, row := range rows {
		x, h := gap, 0
		for _, img := range row {
			sheet = imaging.Paste(sheet, img, image.Pt(x, y))
			x += img.Bounds().Dx() + gap
			h = max(h, img.Bounds().Dy())
		}
		y += h + gap
	}
	return imaging.Save(sheet, out)
}
