package runner

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/deepsim/deepsim/graphs"
)

// progress shows a bar on a terminal and logs a line every 5% otherwise.
// Both show every term of the metrics line.
type progress struct {
	bar        *progressbar.ProgressBar
	w          io.Writer
	log        *slog.Logger
	every      int64
	start, end int64
}

func newProgress(w io.Writer, log *slog.Logger, start, end int64) *progress {
	if w == nil {
		w = os.Stderr
	}
	p := &progress{w: w, log: log, start: start, end: end, every: max(1, (end-start)/20)}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.bar = progressbar.NewOptions64(end,
			progressbar.OptionSetWriter(w),
			progressbar.OptionShowCount(),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionSetWidth(20),
		)
		p.bar.Set64(start)
	}
	return p
}

// update shows a logged metrics line; measured are the values the task
// measured at this step, which a log always shows.
func (p *progress) update(m Metrics, measured []graphs.Term) {
	if p.bar != nil {
		var desc strings.Builder
		for _, t := range m.Terms {
			fmt.Fprintf(&desc, "%s %.4g ", strings.TrimPrefix(t.Name, "loss_"), t.Value)
		}
		fmt.Fprintf(&desc, " %.1f img/s", m.ImagesPerSec)
		p.bar.Describe(desc.String())
		p.bar.Set64(m.Step)
		return
	}
	if len(measured) > 0 {
		p.log.Info("measured", append([]any{"step", m.Step}, attrs(measured)...)...)
	}
	if (m.Step-p.start)%p.every == 0 || m.Step == p.end {
		args := append([]any{"step", m.Step, "of", p.end}, attrs(m.Terms)...)
		p.log.Info("train", append(args, "images_per_sec", math.Round(m.ImagesPerSec*10)/10)...)
	}
}

func attrs(terms []graphs.Term) []any {
	var out []any
	for _, t := range terms {
		out = append(out, t.Name, t.Value)
	}
	return out
}

// finish ends the bar; it may be called more than once.
func (p *progress) finish() {
	if p.bar != nil {
		p.bar.Exit()
		fmt.Fprintln(p.w)
		p.bar = nil
	}
}
