package runner

import (
	"image"
	"image/color"

	"github.com/disintegration/imaging"

	"github.com/deepsim/deepsim/pipeline"
)

// Mosaic lays rows of images out left to right and top to bottom on a dark
// background, gap pixels between neighbours and margin pixels around the
// whole. A row is as tall as its tallest image. Every picture deepsim
// writes that holds more than one image is a mosaic.
func Mosaic(rows [][]*image.NRGBA, gap, margin int) *image.NRGBA {
	width, height := 0, 0
	for i, row := range rows {
		w, h := 0, 0
		for j, img := range row {
			if j > 0 {
				w += gap
			}
			w += img.Bounds().Dx()
			h = max(h, img.Bounds().Dy())
		}
		if i > 0 {
			height += gap
		}
		width, height = max(width, w), height+h
	}
	sheet := imaging.New(width+2*margin, height+2*margin, color.NRGBA{32, 32, 32, 255})
	y := margin
	for _, row := range rows {
		x, h := margin, 0
		for _, img := range row {
			sheet = imaging.Paste(sheet, img, image.Pt(x, y))
			x += img.Bounds().Dx() + gap
			h = max(h, img.Bounds().Dy())
		}
		y += h + gap
	}
	return sheet
}

// images splits n square NCHW images of size x size in [-1,1] into 8-bit
// images.
func images(x []float32, n, size int) []*image.NRGBA {
	plane := 3 * size * size
	out := make([]*image.NRGBA, n)
	for i := range out {
		out[i] = pipeline.FromCHW(x[i*plane:(i+1)*plane], size, size)
	}
	return out
}

// strip lays n images side by side.
func strip(x []float32, n, size int) *image.NRGBA {
	return Mosaic([][]*image.NRGBA{images(x, n, size)}, 2, 0)
}
