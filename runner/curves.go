package runner

import (
	"bytes"
	"fmt"
	"html/template"
	"image/color"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/deepsim/deepsim/internal/atomicfile"
)

// curveMeasures are the held-back curve's measures, each a chart.
var curveMeasures = []struct {
	key  string
	of   func(HeldoutPoint) float64
	note string
}{
	{"perceptual_distance", func(p HeldoutPoint) float64 { return p.PerceptualDistance }, "lower is closer"},
	{"sharpness_ratio", func(p HeldoutPoint) float64 { return p.SharpnessRatio }, "1 is the originals'"},
	{"psnr", func(p HeldoutPoint) float64 { return p.PSNR }, "dB"},
	{"ssim", func(p HeldoutPoint) float64 { return p.SSIM }, ""},
	{"grid_ratio", func(p HeldoutPoint) float64 { return p.GridRatio }, "1: no grid"},
}

// curve is one run's held-back curve, under a label.
type curve struct {
	label  string
	points []HeldoutPoint
}

var curveColors = []color.RGBA{{200, 60, 40, 255}, {40, 90, 200, 255}, {40, 150, 60, 255}, {150, 60, 170, 255}, {220, 140, 20, 255}}

// chart is one PNG of curveCharts: a measure against step or minutes.
type chart struct {
	measure, x string
	png        []byte
}

// curveCharts draws each measure of the curves against the step and
// against minutes of training: one PNG per chart, with its title.
func curveCharts(curves []curve) ([]reportImage, error) {
	charts, err := drawCurves(curves)
	return chartImages(charts), err
}

// chartImages are the charts as the pages embed them.
func chartImages(charts []chart) []reportImage {
	var out []reportImage
	for _, c := range charts {
		out = append(out, reportImage{c.measure + " against " + c.x, dataURL(c.png)})
	}
	return out
}

func drawCurves(curves []curve) ([]chart, error) {
	var out []chart
	for _, x := range []string{"step", "minutes"} {
		for _, m := range curveMeasures {
			p := plot.New()
			p.Title.Text = m.key
			if m.note != "" {
				p.Title.Text += " (" + m.note + ")"
			}
			p.X.Label.Text = x
			p.Legend.Top = true
			for i, c := range curves {
				var pts plotter.XYs
				for _, pt := range c.points {
					xv := float64(pt.Step)
					if x == "minutes" {
						xv = pt.Minutes
					}
					pts = append(pts, plotter.XY{X: xv, Y: m.of(pt)})
				}
				if len(pts) == 0 {
					continue
				}
				line, marks, err := plotter.NewLinePoints(pts)
				if err != nil {
					return nil, err
				}
				line.Color, marks.Color = curveColors[i%len(curveColors)], curveColors[i%len(curveColors)]
				p.Add(line, marks)
				if len(curves) > 1 {
					p.Legend.Add(c.label, line)
				}
			}
			w, err := p.WriterTo(4*vg.Inch, 2.5*vg.Inch, "png")
			if err != nil {
				return nil, err
			}
			var b bytes.Buffer
			if _, err := w.WriteTo(&b); err != nil {
				return nil, err
			}
			out = append(out, chart{m.key, x, b.Bytes()})
		}
	}
	return out, nil
}

// CompareRuns writes one self-contained page, out, with the held-back
// curves of the runs (their heldout.jsonl) on one chart per measure,
// against steps and against minutes: DeePSiM beside SE, say. With a
// pngPrefix it also writes each chart as PREFIX-MEASURE-X.png, for docs.
func CompareRuns(runs []string, out, pngPrefix string) error {
	if len(runs) == 0 {
		return fmt.Errorf("compare: no runs")
	}
	var curves []curve
	var judge string
	for _, r := range runs {
		pts, err := ReadHeldout(r)
		if err != nil {
			return fmt.Errorf("%s has no held-back curve (train with held-out images and an evaluation interval): %w", r, err)
		}
		if len(pts) > 0 {
			if judge != "" && pts[0].Judge != judge {
				return fmt.Errorf("%s was judged by %s, another run by %s: their curves do not compare", r, pts[0].Judge, judge)
			}
			judge = pts[0].Judge
		}
		curves = append(curves, curve{label: filepath.Base(filepath.Clean(r)), points: pts})
	}
	drawn, err := drawCurves(curves)
	if err != nil {
		return err
	}
	if pngPrefix != "" {
		for _, c := range drawn {
			if err := atomicfile.WriteFile(fmt.Sprintf("%s-%s-%s.png", pngPrefix, c.measure, c.x), c.png); err != nil {
				return err
			}
		}
	}
	charts := chartImages(drawn)
	var page bytes.Buffer
	if err := comparePage.Execute(&page, map[string]any{"Runs": runs, "Judge": judge, "Charts": charts}); err != nil {
		return err
	}
	return atomicfile.WriteFile(out, page.Bytes())
}

var comparePage = template.Must(template.New("compare").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>deepsim runs compared</title>
<style>
body { font-family: sans-serif; margin: 2em; background: #fafafa; color: #222 }
.plots img { margin: 0 1em 1em 0; border: 1px solid #ddd }
</style></head>
<body>
<h1>Held-back curves</h1>
<p>Runs: {{range .Runs}}<code>{{.}}</code> {{end}}; perceptual distance under {{.Judge}}.</p>
<div class="plots">{{range .Charts}}<img class="curve" alt="{{.Label}}" src="{{.Src}}">{{end}}</div>
<script>
window.addEventListener("load", function () {
  var ok = Array.prototype.filter.call(document.querySelectorAll("img.curve"),
    function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-curves-rendered", ok);
});
</script>
</body></html>
`))
