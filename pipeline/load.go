package pipeline

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc64"
	"image"
	"runtime"
	"sync"
)

// Skipped names a file the pipeline could not use, and why.
type Skipped struct {
	Path string
	Err  error
}

// Set is a list of decoded images, in the order of the files they came from.
type Set struct {
	Images  []*image.NRGBA
	Paths   []string
	Skipped []Skipped
}

// LoadOptions controls Load.
type LoadOptions struct {
	Decode  DecodeOptions
	Workers int // runtime.NumCPU() when 0
	// Warn is called once for each file that is skipped, from one goroutine
	// at a time. It may be nil.
	Warn func(Skipped)
}

// Load decodes the files on a pool of workers. A file that cannot be used is
// skipped, reported once through opt.Warn and listed in Set.Skipped; it never
// stops the load. The result is in file order whatever the scheduling, so
// it is reproducible.
func Load(ctx context.Context, paths []string, opt LoadOptions) (*Set, error) {
	workers := opt.Workers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	imgs := make([]*image.NRGBA, len(paths))
	errs := make([]error, len(paths))
	next := make(chan int)
	var wg sync.WaitGroup
	var warnMu sync.Mutex
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				imgs[i], errs[i] = Decode(paths[i], opt.Decode)
				if errs[i] != nil && opt.Warn != nil {
					warnMu.Lock()
					opt.Warn(Skipped{Path: paths[i], Err: errs[i]})
					warnMu.Unlock()
				}
			}
		}()
	}
feed:
	for i := range paths {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load images: %w", err)
	}
	s := &Set{}
	for i, p := range paths {
		if errs[i] != nil {
			s.Skipped = append(s.Skipped, Skipped{Path: p, Err: errs[i]})
			continue
		}
		s.Images = append(s.Images, imgs[i])
		s.Paths = append(s.Paths, p)
	}
	if len(s.Images) == 0 {
		return s, fmt.Errorf("load images: none of %d files could be used", len(paths))
	}
	return s, nil
}

// Fingerprint hashes the images' sizes and pixels, in order: processes
// that loaded the same files get the same value.
func (s *Set) Fingerprint() uint64 {
	h := crc64.New(crc64.MakeTable(crc64.ECMA))
	var dims [16]byte
	for _, img := range s.Images {
		b := img.Bounds()
		binary.LittleEndian.PutUint64(dims[:8], uint64(b.Dx()))
		binary.LittleEndian.PutUint64(dims[8:], uint64(b.Dy()))
		h.Write(dims[:])
		for y := b.Min.Y; y < b.Max.Y; y++ {
			i := img.PixOffset(b.Min.X, y)
			h.Write(img.Pix[i : i+4*b.Dx()])
		}
	}
	return h.Sum64()
}
