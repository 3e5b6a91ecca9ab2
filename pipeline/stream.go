package pipeline

import (
	"context"
	"math/rand/v2"
)

// Batch is n crops as float32 NCHW in [-1,1].
type Batch struct {
	Index  int64 // position in the stream; equal indices give equal batches
	N      int
	Size   int
	Data   []float32
	Labels []int64 // class of each crop, for classification tasks
}

// StreamOptions controls the crops of MakeBatch.
type StreamOptions struct {
	Crop  CropOptions
	Batch int
	Seed  uint64
}

// MakeBatch builds the training batch at position index from random crops.
// It depends only on the set, the options and index.
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

// Stream delivers the batches build(start), build(start+1), ... in order,
// built ahead of time by workers goroutines, each with a queue of depth
// batches. build must depend only on its index, so a stream resumed at a
// step differs in nothing from the stream that was interrupted. Stream stops
// when ctx is cancelled; the channel is then closed.
func Stream(ctx context.Context, build func(index int64) Batch, start int64, workers, depth int) <-chan Batch {
	workers, depth = max(1, workers), max(1, depth)
	// Worker w builds batches start+w, start+w+workers, ...; reading the
	// workers' queues in turn restores the order.
	queues := make([]chan Batch, workers)
	for w := range queues {
		q := make(chan Batch, depth)
		queues[w] = q
		go func() {
			defer close(q)
			for i := start + int64(w); ; i += int64(workers) {
				select {
				case q <- build(i):
				case <-ctx.Done():
					return
				}
			}
		}()
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
