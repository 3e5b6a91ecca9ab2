package runner

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/deepsim/deepsim/internal/atomicfile"
	"github.com/deepsim/deepsim/pipeline"
)

// DataReport is what runner data check finds in a dataset.
type DataReport struct {
	Images int   `json:"images"`
	Shards int   `json:"shards"`
	Bytes  int64 `json:"bytes"`
	// Quantiles (min, 10%, median, 90%, max) of the width and height of
	// the images whose header reads, and of every item's bytes.
	Width     [5]int    `json:"width"`
	Height    [5]int    `json:"height"`
	ItemBytes [5]int64  `json:"item_bytes"`
	Bad       []DataBad `json:"bad"`
	Seconds   float64   `json:"seconds"`
}

// DataBad is one item that cannot be used, and why.
type DataBad struct {
	Item   string `json:"item"`
	Reason string `json:"reason"`
}

// CheckData lists the sources and decodes every image (JPEG at 1/8
// scale, which still reads all its data), on every core.
func CheckData(ctx context.Context, specs []string, log *slog.Logger) (*DataReport, error) {
	start := time.Now()
	src, err := pipeline.List(specs, func(s pipeline.Skipped) {
		log.Warn("shard read in part", "shard", s.Path, "reason", s.Err.Error())
	})
	if err != nil {
		return nil, err
	}
	n := src.Len()
	rep := &DataReport{Images: n, Shards: pipeline.Shards(src)}
	widths, heights, sizes := make([]int, n), make([]int, n), make([]int64, n)
	l := pipeline.NewLoader(src, pipeline.LoaderOptions{}) // no cache: each image is read once
	defer l.Close()
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	for range runtime.NumCPU() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				w, h, size, err := l.Check(i)
				widths[i], heights[i], sizes[i] = w, h, size
				if err != nil {
					mu.Lock()
					rep.Bad = append(rep.Bad, DataBad{Item: src.Name(i), Reason: err.Error()})
					mu.Unlock()
				}
				if (i+1)%10000 == 0 {
					log.Info("checked", "images", i+1, "of", n)
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	slices.SortFunc(rep.Bad, func(a, b DataBad) int { return strings.Compare(a.Item, b.Item) })
	for _, s := range sizes {
		rep.Bytes += s
	}
	// The sizes of the images whose header reads: a file that is no image
	// has none.
	var ws, hs []int
	for i := range widths {
		if widths[i] > 0 && heights[i] > 0 {
			ws, hs = append(ws, widths[i]), append(hs, heights[i])
		}
	}
	rep.Width, rep.Height, rep.ItemBytes = quantiles(ws), quantiles(hs), quantiles(sizes)
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

func quantiles[T int | int64](v []T) [5]T {
	var q [5]T
	if len(v) == 0 {
		return q
	}
	s := slices.Clone(v)
	slices.Sort(s)
	for k, f := range []float64{0, 0.1, 0.5, 0.9, 1} {
		q[k] = s[int(f*float64(len(s)-1)+0.5)]
	}
	return q
}

// String is the report as runner data check prints it.
func (r *DataReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "images      %d\nshards      %d\nbytes       %d (%.1f MB)\n", r.Images, r.Shards, r.Bytes, float64(r.Bytes)/1e6)
	fmt.Fprintf(&b, "             min     10%%   median     90%%     max\n")
	fmt.Fprintf(&b, "width   %8d%8d%8d%8d%8d\n", r.Width[0], r.Width[1], r.Width[2], r.Width[3], r.Width[4])
	fmt.Fprintf(&b, "height  %8d%8d%8d%8d%8d\n", r.Height[0], r.Height[1], r.Height[2], r.Height[3], r.Height[4])
	fmt.Fprintf(&b, "kB      %8.0f%8.0f%8.0f%8.0f%8.0f\n", kb(r.ItemBytes[0]), kb(r.ItemBytes[1]), kb(r.ItemBytes[2]), kb(r.ItemBytes[3]), kb(r.ItemBytes[4]))
	fmt.Fprintf(&b, "bad         %d (%.2f%%)\n", len(r.Bad), 100*float64(len(r.Bad))/float64(max(1, r.Images)))
	for _, bad := range r.Bad {
		fmt.Fprintf(&b, "  %s: %s\n", bad.Item, bad.Reason)
	}
	fmt.Fprintf(&b, "checked in %.1f s\n", r.Seconds)
	return b.String()
}

func kb(v int64) float64 { return float64(v) / 1e3 }

// ShardOptions controls WriteShards.
type ShardOptions struct {
	Data     []string
	Out      string
	PerShard int
	Log      *slog.Logger
}

// WriteShards copies the images of opt.Data, in their listed order, into
// WebDataset tar shards OUT/shard-000000.tar, ...: one sample per image,
// keyed by its index, its member the image's bytes unchanged. Each shard
// appears whole or not at all (atomicfile). It returns the brace pattern that names
// them, for --data.
func WriteShards(ctx context.Context, opt ShardOptions) (string, error) {
	if opt.PerShard < 1 {
		return "", fmt.Errorf("%d images per shard: must be at least 1", opt.PerShard)
	}
	for _, d := range opt.Data {
		if within(opt.Out, d) || within(d, opt.Out) {
			return "", fmt.Errorf("the output %s and the source %s overlap", opt.Out, d)
		}
	}
	src, err := pipeline.List(opt.Data, func(s pipeline.Skipped) {
		opt.Log.Warn("shard read in part", "shard", s.Path, "reason", s.Err.Error())
	})
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(opt.Out, 0o755); err != nil {
		return "", err
	}
	n := src.Len()
	shards := (n + opt.PerShard - 1) / opt.PerShard
	for s := range shards {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		lo, hi := s*opt.PerShard, min(n, (s+1)*opt.PerShard)
		if err := writeShard(filepath.Join(opt.Out, fmt.Sprintf("shard-%06d.tar", s)), src, lo, hi, opt.Log); err != nil {
			return "", err
		}
		opt.Log.Info("shard written", "shard", s, "of", shards, "images", hi-lo)
	}
	return filepath.Join(opt.Out, fmt.Sprintf("shard-{%06d..%06d}.tar", 0, shards-1)), nil
}

// writeShard writes items [lo, hi) to path atomically. An item that
// cannot be read is logged and left out.
func writeShard(path string, src pipeline.Source, lo, hi int, log *slog.Logger) error {
	return atomicfile.Write(path, func(w io.Writer) error {
		tw := tar.NewWriter(w)
		for i := lo; i < hi; i++ {
			b, err := src.Read(i)
			if err != nil {
				log.Warn("left out of the shards", "item", src.Name(i), "reason", err.Error())
				continue
			}
			ext := strings.ToLower(filepath.Ext(src.Name(i)))
			if ext == ".jpeg" {
				ext = ".jpg"
			}
			hdr := &tar.Header{Name: fmt.Sprintf("%09d%s", i, ext), Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if _, err := tw.Write(b); err != nil {
				return err
			}
		}
		return tw.Close()
	})
}
