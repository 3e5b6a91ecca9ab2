package pipeline

import (
	"context"
	"math/rand/v2"
)

// Batch is n crops as float32 NCHW in [-1,1].
type Batch struct {
	Index int64 // position in the stream; equal indices give equal batches
	N     int
	Size  int
	Data  []float32
}

// StreamOptions controls Stream.
type StreamOptions struct {
	Crop    CropOptions
	Batch   int
	Seed    uint64
	Workers int // goroutines building batches; at least 1
	Depth   int // batches each worker may have ready; at least 1
}

// MakeBatch builds the batch at position index. It depends only on the set,
// the options and index, so a stream resumed at a step repeats nothing and
// differs in nothing from the stream that was interrupted.
func MakeBatch(set *Set, opt StreamOptions, index int64) Batch {
	rng := rand.New(rand.NewPCG(opt.Seed, uint64(index)))
	size := opt.Crop.Size
	plane := 3 * size * size
	b := Batch{Index: index, N: opt.Batch, Size: size, Data: make([]float32, opt.Batch*plane)}
	for i := range opt.Batch {
		img := set.Images[rng.IntN(len(set.Images))]
		crop := RandomCrop(rng, img, opt.Crop)
		ToCHW(crop, crop.Bounds(), b.Data[i*plane:(i+1)*plane])
	}
	return b
}

// Stream delivers the batches from position start on, in order, built ahead
// of time by opt.Workers goroutines into a bounded queue. It stops when ctx
// is cancelled; the channel is then closed.
func Stream(ctx context.Context, set *Set, opt StreamOptions, start int64) <-chan Batch {
	workers := max(1, opt.Workers)
	depth := max(1, opt.Depth)
	// Worker w builds batches start+w, start+w+workers, ...; reading the
	// workers' queues in turn restores the order.
	queues := make([]chan Batch, workers)
	for w := range queues {
		queues[w] = make(chan Batch, depth)
		go func(w int, q chan<- Batch) {
			defer close(q)
			for i := start + int64(w); ; i += int64(workers) {
				select {
				case q <- MakeBatch(set, opt, i):
				case <-ctx.Done():
					return
				}
			}
		}(w, queues[w])
	}
	out := make(chan Batch)
	go func() {
		defer close(out)
		for i := 0; ; i = (i + 1) % workers {
			b, ok := <-queues[i]
			if !ok {
				return
			}
			select {
			case out <- b:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
