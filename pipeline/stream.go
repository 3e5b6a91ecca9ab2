package pipeline

import "context"

// Skipped names an item the pipeline could not use, and why.
type Skipped struct {
	Path string
	Err  error
}

// Batch is n crops as float32 NCHW in [-1,1].
type Batch struct {
	Index int64 // position in the stream; equal indices give equal batches
	// The batch is rows [Offset, Offset+N) of a batch of Global rows (0:
	// N): a process of a group builds only its own.
	Offset, Global int
	N              int
	Size           int
	Data           []float32
	Labels         []int64 // class of each crop, for classification tasks
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
