package pipeline

import (
	"bytes"
	"fmt"
	"image"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/disintegration/imaging"

	"github.com/deepsim/deepsim/internal/turbojpeg"
)

// LoaderOptions controls a Loader.
type LoaderOptions struct {
	Size     int     // crop side in pixels
	MinScale float64 // see CropOptions
	// MaxSide: crops are drawn as if each image's short side were brought
	// into [Size, MaxSide], the distribution of earlier versions, which
	// kept images that way. 0 means no upper bound.
	MaxSide int
	// CacheBytes bounds the decoded images kept for reuse; 0 keeps none.
	CacheBytes int64
	// MaxPixels refuses headers that declare more (DefaultMaxPixels when 0).
	MaxPixels int
	// Warn hears of each bad item once. It may be nil.
	Warn func(Skipped)
}

// Loader cuts crops from a Source on demand. A JPEG is decoded at the
// smallest DCT scale that still gives the crop its pixels (libjpeg-turbo);
// other formats are decoded by Go and brought to the crop policy's size.
// Either way a crop's pixels depend only on the item's bytes and the crop
// drawn, never on what the cache holds, so every process and every resumed
// run cuts the same crop. Safe for concurrent use.
type Loader struct {
	src      Source
	opt      LoaderOptions
	meta     []atomic.Uint64 // per item: known, JPEG, width, height (packMeta)
	cache    *cache
	decoders chan *turbojpeg.Decoder
	logged   sync.Map // items already warned about
	drawn    atomic.Int64
	bad      atomic.Int64
	decodes  atomic.Int64
}

// NewLoader returns a loader over src. Close it when done.
func NewLoader(src Source, opt LoaderOptions) *Loader {
	if opt.MaxPixels <= 0 {
		opt.MaxPixels = DefaultMaxPixels
	}
	return &Loader{src: src, opt: opt, meta: make([]atomic.Uint64, src.Len()),
		cache: newCache(opt.CacheBytes, src.Len()), decoders: make(chan *turbojpeg.Decoder, 32)}
}

// Close frees the cache and the decoders. Crops may still be cut after,
// but nothing is cached.
func (l *Loader) Close() {
	l.cache.close()
	for {
		select {
		case d := <-l.decoders:
			d.Close()
		default:
			return
		}
	}
}

// Source is what the loader reads.
func (l *Loader) Source() Source { return l.src }

// Counts are what the loader has done so far.
type Counts struct {
	Drawn   int64 // crops asked for
	Bad     int64 // of them, from an item that could not be used
	Decodes int64 // images decoded (cache misses)
	Cached  int64 // bytes of decoded images kept
}

// Counts returns the loader's counts.
func (l *Loader) Counts() Counts {
	return Counts{Drawn: l.drawn.Load(), Bad: l.bad.Load(), Decodes: l.decodes.Load(), Cached: l.cache.bytes()}
}

// Rows builds rows [lo, hi) of batch index in a stream of batches of n
// crops under seed: row j is stream position index*n+j, the item Order
// puts there, cropped with randomness drawn from (seed, position) alone.
// So a batch is the same whoever builds it, and a process builds only its
// own rows.
func (l *Loader) Rows(seed uint64, index int64, n, lo, hi int, flip bool) Batch {
	size := l.opt.Size
	plane := 3 * size * size
	b := Batch{Index: index, N: hi - lo, Size: size, Data: make([]float32, (hi-lo)*plane), Offset: lo, Global: n}
	order := NewOrder(l.src.Len(), seed)
	for j := lo; j < hi; j++ {
		p := index*int64(n) + int64(j)
		item, _ := order.At(p)
		crop := l.Crop(item, seed, p, flip)
		ToCHW(crop, crop.Bounds(), b.Data[(j-lo)*plane:(j-lo+1)*plane])
	}
	return b
}

// maxSubstitutes is how many following items are tried in place of a bad
// one before a grey crop stands in.
const maxSubstitutes = 8

// Crop is the crop at stream position p, of item i: a bad item is
// replaced by the next good one, the same on every run, and warned about
// once.
func (l *Loader) Crop(i int, seed uint64, p int64, flip bool) *image.NRGBA {
	l.drawn.Add(1)
	n := l.src.Len()
	for attempt := range maxSubstitutes {
		item := (i + attempt) % n
		rng := rand.New(rand.NewPCG(seed, uint64(p)<<4|uint64(attempt)))
		img, err := l.cropItem(item, rng, flip)
		if err == nil {
			return img
		}
		if attempt == 0 {
			l.bad.Add(1)
		}
		if _, seen := l.logged.LoadOrStore(item, true); !seen && l.opt.Warn != nil {
			l.opt.Warn(Skipped{Path: l.src.Name(item), Err: err})
		}
	}
	grey := image.NewNRGBA(image.Rect(0, 0, l.opt.Size, l.opt.Size))
	for k := range grey.Pix {
		grey.Pix[k] = 128
	}
	return grey
}

// meta packing: bit 63 known, bit 62 JPEG, then 31 bits each of width and
// height.
func packMeta(w, h int, jpeg bool) uint64 {
	m := uint64(1)<<63 | uint64(w)<<31 | uint64(h)
	if jpeg {
		m |= 1 << 62
	}
	return m
}

func unpackMeta(m uint64) (w, h int, jpeg, known bool) {
	return int(m >> 31 & (1<<31 - 1)), int(m & (1<<31 - 1)), m&(1<<62) != 0, m&(1<<63) != 0
}

// header reads item i's size and kind, from the bytes when they have
// been read (b != nil), else from the item.
func (l *Loader) header(i int, b []byte) (w, h int, jpeg bool, data []byte, err error) {
	w, h, jpeg, known := unpackMeta(l.meta[i].Load())
	if known {
		return w, h, jpeg, b, nil
	}
	if b == nil {
		if b, err = l.src.Read(i); err != nil {
			return 0, 0, false, nil, err
		}
	}
	jpeg = len(b) > 2 && b[0] == 0xff && b[1] == 0xd8
	format := "JPEG"
	if jpeg {
		d, derr := l.decoder()
		if derr != nil {
			return 0, 0, false, nil, derr
		}
		w, h, err = d.Header(b)
		l.release(d)
	}
	if !jpeg || err != nil {
		jpeg = false
		cfg, f, cerr := image.DecodeConfig(bytes.NewReader(b))
		if cerr != nil {
			return 0, 0, false, nil, fmt.Errorf("not a readable JPEG or PNG: %w", cerr)
		}
		w, h, format = cfg.Width, cfg.Height, f
	}
	if w <= 0 || h <= 0 || int64(w)*int64(h) > int64(l.opt.MaxPixels) {
		return 0, 0, false, nil, fmt.Errorf("%w: %s header declares %dx%d (limit %d pixels)", ErrTooLarge, format, w, h, l.opt.MaxPixels)
	}
	l.meta[i].Store(packMeta(w, h, jpeg))
	return w, h, jpeg, b, nil
}

// cropItem draws a crop of item i and cuts it.
func (l *Loader) cropItem(i int, rng *rand.Rand, flip bool) (*image.NRGBA, error) {
	w, h, jpeg, b, err := l.header(i, nil)
	if err != nil {
		return nil, err
	}
	opt := DecodeOptions{MinSide: l.opt.Size, MaxSide: l.opt.MaxSide, MaxPixels: l.opt.MaxPixels}
	tw, th := targetSize(w, h, opt)
	r := DrawCrop(rng, tw, th, CropOptions{Size: l.opt.Size, MinScale: l.opt.MinScale})
	flipped := flip && rng.IntN(2) == 1
	var img *image.NRGBA
	if jpeg {
		// The crop in the file's pixels, and the DCT scale that leaves it
		// at least Size pixels a side.
		fx, fy := float64(w)/float64(tw), float64(h)/float64(th)
		side := math.Min(float64(r.Dx())*fx, float64(r.Dy())*fy)
		scale := 1
		for _, s := range turbojpeg.Scales {
			if side/float64(s) >= float64(l.opt.Size) {
				scale = s
				break
			}
		}
		sw, sh := turbojpeg.ScaledSize(w, h, scale)
		gx, gy := float64(sw)/float64(tw), float64(sh)/float64(th)
		// At least one pixel, inside the decoded image.
		x0 := min(int(float64(r.Min.X)*gx+0.5), sw-1)
		y0 := min(int(float64(r.Min.Y)*gy+0.5), sh-1)
		x1 := max(x0+1, int(float64(r.Max.X)*gx+0.5))
		y1 := max(y0+1, int(float64(r.Max.Y)*gy+0.5))
		rs := image.Rect(x0, y0, x1, y1).Intersect(image.Rect(0, 0, sw, sh))
		img, err = l.cut(i, scale, b, rs, int64(4*sw*sh),
			func(b []byte) (*image.NRGBA, error) { return l.decodeJPEG(b, scale, w, h) },
			func(b []byte) (*image.NRGBA, error) { return turbojpeg.DecodeRegion(b, scale, rs) })
	} else {
		img, err = l.cut(i, 0, b, r, int64(4*tw*th),
			func(b []byte) (*image.NRGBA, error) { return decodeFrom(bytes.NewReader(b), opt) }, nil)
	}
	if err != nil {
		return nil, err
	}
	if img.Bounds().Dx() != l.opt.Size || img.Bounds().Dy() != l.opt.Size {
		img = imaging.Resize(img, l.opt.Size, l.opt.Size, imaging.Linear)
	}
	if flipped {
		img = imaging.FlipH(img)
	}
	return img, nil
}

// cut cuts r from item i decoded at scale (0: Go's decoder at the crop
// policy's size, of wholeBytes): from the cache; else by decoding the
// whole image into the cache when it admits it; else by decoding r alone
// where region can. Each way gives the same pixels, so what the cache
// holds changes nothing but speed.
func (l *Loader) cut(i, scale int, b []byte, r image.Rectangle, wholeBytes int64,
	whole, region func([]byte) (*image.NRGBA, error)) (*image.NRGBA, error) {
	key := uint64(i)<<4 | uint64(scale)
	if img, ok := l.cache.crop(key, r); ok {
		return img, nil
	}
	if b == nil {
		var err error
		if b, err = l.src.Read(i); err != nil {
			return nil, err
		}
	}
	l.decodes.Add(1)
	keep := l.cache.admits(wholeBytes)
	if !keep && region != nil {
		// A region fails exactly where a whole decode by libjpeg-turbo
		// fails; the whole path then tries Go's decoder.
		if img, err := region(b); err == nil {
			return img, nil
		}
	}
	img, err := whole(b)
	if err != nil {
		return nil, err
	}
	if keep {
		l.cache.put(key, img)
	}
	return imaging.Crop(img, r), nil
}

// decodeJPEG decodes at 1/scale with libjpeg-turbo. What it cannot decode
// (CMYK, or data it warns about) gets Go's decoder, brought to the same
// size: the choice depends on the bytes alone, so it is the same
// everywhere.
func (l *Loader) decodeJPEG(b []byte, scale, w, h int) (*image.NRGBA, error) {
	d, err := l.decoder()
	if err != nil {
		return nil, err
	}
	img, terr := d.Decode(b, scale)
	l.release(d)
	if terr == nil {
		return img, nil
	}
	full, err := decodeFrom(bytes.NewReader(b), DecodeOptions{MaxPixels: l.opt.MaxPixels})
	if err != nil {
		return nil, fmt.Errorf("%v; Go's decoder: %w", terr, err)
	}
	if scale == 1 {
		return full, nil
	}
	sw, sh := turbojpeg.ScaledSize(w, h, scale)
	return imaging.Resize(full, sw, sh, imaging.Box), nil
}

func (l *Loader) decoder() (*turbojpeg.Decoder, error) {
	select {
	case d := <-l.decoders:
		return d, nil
	default:
		return turbojpeg.NewDecoder()
	}
}

func (l *Loader) release(d *turbojpeg.Decoder) {
	select {
	case l.decoders <- d:
	default:
		d.Close()
	}
}

// Image is item i decoded whole, its short side brought into [MinSide,
// MaxSide] of opt: for tasks that need whole images (Exemplar-CNN).
func (l *Loader) Image(i int, opt DecodeOptions) (*image.NRGBA, error) {
	b, err := l.src.Read(i)
	if err != nil {
		return nil, err
	}
	return decodeFrom(bytes.NewReader(b), opt)
}

// Check reads item i and decodes it whole (a JPEG at 1/8 scale, which
// still reads all of its data): its size in pixels and in bytes, or why it
// cannot be used.
func (l *Loader) Check(i int) (w, h int, size int64, err error) {
	b, err := l.src.Read(i)
	if err != nil {
		return 0, 0, 0, err
	}
	size = int64(len(b))
	w, h, jpeg, b, err := l.header(i, b)
	if err != nil {
		return 0, 0, size, err
	}
	if jpeg {
		_, err = l.decodeJPEG(b, 8, w, h)
	} else {
		_, err = decodeFrom(bytes.NewReader(b), DecodeOptions{MaxPixels: l.opt.MaxPixels})
	}
	return w, h, size, err
}
