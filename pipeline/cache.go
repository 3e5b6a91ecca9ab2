package pipeline

import (
	"image"
	"sync"
	"syscall"
)

// cache keeps decoded images up to a byte budget. It admits until full and
// then evicts nothing: under uniformly random access no policy does better
// than holding a fixed share, and this one never churns. It admits only
// while the whole set would fit, at the mean size of the images missed so
// far: of a set many times the budget it would hold a small share, worth
// less than the whole decodes that fill it, where a miss otherwise decodes
// only its crop's region.
//
// The pixels live outside Go's heap, in chunks mapped from the kernel: the
// collector would otherwise let the heap grow to twice what the cache holds
// before collecting, so a process's memory would swing with the collector's
// timing rather than follow the budget.
type cache struct {
	mu          sync.RWMutex
	max         int64
	used        int64
	items       int     // in the set
	missed      float64 // misses so far, and their images' bytes
	missedBytes float64
	m           map[uint64]cached
	chunks      [][]byte // mapped; unmapped by close
	free        []byte   // the unused rest of the last chunk
	closed      bool
}

// cached is an image of w x h RGBA pixels.
type cached struct {
	pix  []byte
	w, h int
}

// cacheChunk is the size mapped at a time; larger images get their own.
const cacheChunk = 64 << 20

func newCache(max int64, items int) *cache {
	return &cache{max: max, items: items, m: map[uint64]cached{}}
}

// admits counts a miss of an image of size bytes, and reports whether the
// image would be admitted.
func (c *cache) admits(size int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.missed++
	c.missedBytes += float64(size)
	return !c.closed && c.used+size <= c.max && float64(c.items)*c.missedBytes/c.missed <= float64(c.max)
}

// crop copies r of the image under key, if the cache holds it.
func (c *cache) crop(key uint64, r image.Rectangle) (*image.NRGBA, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.m[key]
	if !ok {
		return nil, false
	}
	r = r.Intersect(image.Rect(0, 0, e.w, e.h))
	out := image.NewNRGBA(image.Rect(0, 0, r.Dx(), r.Dy()))
	for y := r.Min.Y; y < r.Max.Y; y++ {
		copy(out.Pix[(y-r.Min.Y)*out.Stride:], e.pix[(y*e.w+r.Min.X)*4:(y*e.w+r.Max.X)*4])
	}
	return out, true
}

// put copies img into the cache if there is room and its rows are
// contiguous from (0, 0). When the kernel refuses memory, the cache stops
// admitting: it is an optimisation, never a reason to fail.
func (c *cache) put(key uint64, img *image.NRGBA) {
	b := img.Bounds()
	size := len(img.Pix)
	if b.Min != (image.Point{}) || img.Stride != 4*b.Dx() || size != img.Stride*b.Dy() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[key]; ok || c.closed || c.used+int64(size) > c.max {
		return
	}
	if size > len(c.free) {
		chunk, err := syscall.Mmap(-1, 0, max(size, min(cacheChunk, int(c.max))), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANON)
		if err != nil {
			c.max = c.used
			return
		}
		c.chunks = append(c.chunks, chunk)
		c.free = chunk
	}
	pix := c.free[:size:size]
	c.free = c.free[size:]
	copy(pix, img.Pix)
	c.m[key] = cached{pix: pix, w: b.Dx(), h: b.Dy()}
	c.used += int64(size)
}

func (c *cache) bytes() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.used
}

// close unmaps the cache's memory; it admits nothing after.
func (c *cache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, chunk := range c.chunks {
		syscall.Munmap(chunk) // only fails for a bad address
	}
	c.chunks, c.free, c.m, c.closed = nil, nil, nil, true
}
