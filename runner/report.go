package runner

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"github.com/deepsim/deepsim/graphs"
	"github.com/deepsim/deepsim/internal/atomicfile"
	"github.com/deepsim/deepsim/pipeline"
)

// Report files in the run folder: report.html, one self-contained page, and
// report/step-NNNNNNN.png, the reconstructions of the fixed crops at each
// report step (for a VAE also report/samples-NNNNNNN.png, decoded fixed
// prior latents), kept so that a resumed run's report shows the whole
// history.
const (
	ReportFile = "report.html"
	reportDir  = "report"
	EvalFile   = "eval.json"
)

// reportCrops is how many fixed crops the report reconstructs, and
// reportRows how many checkpoints the page shows at most: evenly spread, the
// last always among them, so a long run's page stays small.
const (
	reportCrops = 8
	reportRows  = 24
)

// spread picks at most n items of s, evenly spaced, ending with the last.
func spread(s []string, n int) []string {
	if len(s) <= n {
		return s
	}
	out := make([]string, n)
	for i := range out {
		out[i] = s[(len(s)-1)*i/(n-1)]
	}
	return out
}

// reporter writes RUN/report.html during training.
type reporter struct {
	dir    string
	cfg    Config
	terms  []string // what the step logs: one plot each
	crops  pipeline.Batch
	source string // where the crops come from, for the page
}

// newReporter fixes the crops the report shows: from cfg.Heldout when
// given, otherwise from the training images (and the page says so).
func newReporter(dir string, cfg Config, train, heldout *pipeline.Loader) *reporter {
	set, source := train, "training images (no held-out folder given)"
	if heldout != nil {
		set, source = heldout, "held-out images: "+strings.Join(cfg.Heldout, ", ")
	}
	return &reporter{dir: dir, cfg: cfg, crops: fixedCrops(set, reportCrops, uint64(cfg.Seed)+1), source: source}
}

// fixedCrops are n seeded, unflipped crops at the loader's size: the same
// inputs for every run that measures or shows them with the same seed.
func fixedCrops(l *pipeline.Loader, n int, seed uint64) pipeline.Batch {
	return l.Rows(seed, 0, n, 0, n, false)
}

// snapshot reconstructs the fixed crops at step and rewrites the page.
func (r *reporter) snapshot(model *graphs.Model, step int64) error {
	size := r.cfg.Size
	y, err := model.Reconstruct(r.crops.Data, r.crops.N, size, size)
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(r.dir, reportDir), 0o755); err != nil {
		return err
	}
	b, err := encodePNG(strip(y, r.crops.N, size))
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(r.dir, reportDir, fmt.Sprintf("step-%07d.png", step)), b); err != nil {
		return err
	}
	if t, err := taskNamed(r.cfg.Task); err == nil && t.samples() {
		// The same latents at every step, so rows compare like with like.
		z := priorLatents(model, size, reportCrops, uint64(r.cfg.Seed))
		s, err := decodeLatents(context.Background(), model, size, z, reportCrops)
		if err != nil {
			return fmt.Errorf("report samples: %w", err)
		}
		if b, err = encodePNG(strip(s, reportCrops, size)); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(r.dir, reportDir, fmt.Sprintf("samples-%07d.png", step)), b); err != nil {
			return err
		}
	}
	return r.write()
}

func encodePNG(img image.Image) ([]byte, error) {
	var b bytes.Buffer
	err := png.Encode(&b, img)
	return b.Bytes(), err
}

type reportImage struct {
	Label string
	Src   template.URL
}

// write renders the page from metrics.jsonl, the saved strips, the config
// and eval.json when there is one.
func (r *reporter) write() error {
	metrics, err := ReadMetrics(filepath.Join(r.dir, MetricsFile))
	if err != nil {
		return err
	}
	var plots []reportImage
	for _, term := range r.terms {
		b, err := lossPlot(metrics, term)
		if err != nil {
			return fmt.Errorf("plot %s: %w", term, err)
		}
		plots = append(plots, reportImage{term, dataURL(b)})
	}
	orig, err := encodePNG(strip(r.crops.Data, r.crops.N, r.cfg.Size))
	if err != nil {
		return err
	}
	steps, err := r.rows("step")
	if err != nil {
		return err
	}
	grids := append([]reportImage{{"input", dataURL(orig)}}, steps...)
	samples, err := r.rows("samples")
	if err != nil {
		return err
	}
	var curves []reportImage
	if pts, err := ReadHeldout(r.dir); err == nil && len(pts) > 0 {
		if curves, err = curveCharts([]curve{{label: r.dir, points: pts}}); err != nil {
			return err
		}
	}
	cfgJSON, _ := json.MarshalIndent(r.cfg, "", "  ")
	evalJSON, _ := os.ReadFile(filepath.Join(r.dir, EvalFile))
	var page bytes.Buffer
	err = reportPage.Execute(&page, map[string]any{
		"Run": r.dir, "Plots": plots, "Curves": curves, "EvalEvery": r.cfg.EvalEvery, "Grids": grids, "Samples": samples, "Source": r.source,
		"Config": string(cfgJSON), "Eval": string(evalJSON),
	})
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(filepath.Join(r.dir, ReportFile), page.Bytes())
}

// rows loads the saved report/PREFIX-NNNNNNN.png strips, at most
// reportRows of them evenly spread, labelled with their step.
func (r *reporter) rows(prefix string) ([]reportImage, error) {
	files, _ := filepath.Glob(filepath.Join(r.dir, reportDir, prefix+"-*.png"))
	sort.Strings(files)
	var out []reportImage
	for _, f := range spread(files, reportRows) {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var step int64
		fmt.Sscanf(filepath.Base(f), prefix+"-%d.png", &step)
		out = append(out, reportImage{fmt.Sprintf("step %d", step), dataURL(b)})
	}
	return out, nil
}

func dataURL(png []byte) template.URL {
	return template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png))
}

// lossPlot draws one term against the step, at most 2000 points.
func lossPlot(ms []Metrics, term string) ([]byte, error) {
	p := plot.New()
	p.Title.Text = term
	p.X.Label.Text = "step"
	every := max(1, len(ms)/2000)
	var pts plotter.XYs
	for i := 0; i < len(ms); i += every {
		pts = append(pts, plotter.XY{X: float64(ms[i].Step), Y: ms[i].Get(term)})
	}
	if len(pts) > 0 {
		line, err := plotter.NewLine(pts)
		if err != nil {
			return nil, err
		}
		line.Color = color.RGBA{200, 60, 40, 255}
		p.Add(line)
	}
	w, err := p.WriterTo(4*vg.Inch, 2.5*vg.Inch, "png")
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	_, err = w.WriteTo(&b)
	return b.Bytes(), err
}

// The page counts the images that decoded into data-* attributes of its
// body, so that a headless browser can tell that it rendered.
var reportPage = template.Must(template.New("report").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>deepsim run {{.Run}}</title>
<style>
body { font-family: sans-serif; margin: 2em; background: #fafafa; color: #222 }
.plots img { margin: 0 1em 1em 0; border: 1px solid #ddd }
.grid td { padding: 2px 8px; vertical-align: middle }
.grid img { image-rendering: pixelated; height: 96px }
pre { background: #eee; padding: 1em; overflow: auto }
</style></head>
<body>
<h1>deepsim run <code>{{.Run}}</code></h1>
<h2>Losses</h2>
<div class="plots">{{range .Plots}}<img class="plot" alt="{{.Label}}" src="{{.Src}}">{{end}}</div>
{{if .Curves}}<h2>Held-back curve</h2>
<p>The fixed held-back crops, evaluated every {{.EvalEvery}} steps (heldout.jsonl).</p>
<div class="plots">{{range .Curves}}<img class="curve" alt="{{.Label}}" src="{{.Src}}">{{end}}</div>{{end}}
<h2>Reconstructions of fixed crops</h2>
<p>Crops from {{.Source}}; one row per report step, inputs first.</p>
<table class="grid">{{range .Grids}}<tr><td>{{.Label}}</td><td><img class="recon" alt="{{.Label}}" src="{{.Src}}"></td></tr>{{end}}</table>
{{if .Samples}}<h2>Samples from the prior</h2>
<p>The same latents, drawn from N(0, I), decoded at each report step.</p>
<table class="grid">{{range .Samples}}<tr><td>{{.Label}}</td><td><img class="sample" alt="{{.Label}}" src="{{.Src}}"></td></tr>{{end}}</table>{{end}}
<h2>Evaluation</h2>
{{if .Eval}}<pre>{{.Eval}}</pre>{{else}}<p>Not evaluated yet: train with held-out images, or run <code>runner eval</code>.</p>{{end}}
<h2>Configuration</h2>
<pre>{{.Config}}</pre>
<script>
window.addEventListener("load", function () {
  var ok = function (sel) {
    return Array.prototype.filter.call(document.querySelectorAll(sel),
      function (i) { return i.complete && i.naturalWidth > 0; }).length;
  };
  document.body.setAttribute("data-plots-rendered", ok("img.plot"));
  document.body.setAttribute("data-curves-rendered", ok("img.curve"));
  document.body.setAttribute("data-recons-rendered", ok("img.recon"));
  document.body.setAttribute("data-samples-rendered", ok("img.sample"));
});
</script>
</body></html>
`))
