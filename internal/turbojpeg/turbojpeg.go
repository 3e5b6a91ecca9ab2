// Package turbojpeg decodes and encodes JPEG through libjpeg-turbo's
// TurboJPEG API (Debian's libturbojpeg0-dev): about twice as fast as Go's
// image/jpeg at full size, and faster still at the reduced sizes its DCT
// scaling decodes to directly. DecodeRegion reaches the same library
// through libjpeg's API for what TurboJPEG 2.1 cannot: one rectangle.
package turbojpeg

/*
#cgo LDFLAGS: -lturbojpeg
#include <stdlib.h>
#include <turbojpeg.h>
*/
import "C"

import (
	"errors"
	"fmt"
	"image"
	"unsafe"
)

// Scales are the DCT scales Decode takes: 1/Scale of each side.
var Scales = []int{8, 4, 2, 1}

// Decoder decodes JPEG images. It is not safe for concurrent use: give each
// goroutine its own, and Close it when done.
type Decoder struct{ h C.tjhandle }

// NewDecoder returns a decoder.
func NewDecoder() (*Decoder, error) {
	h := C.tjInitDecompress()
	if h == nil {
		return nil, fmt.Errorf("turbojpeg: %s", C.GoString(C.tjGetErrorStr2(nil)))
	}
	return &Decoder{h: h}, nil
}

// Close frees the decoder.
func (d *Decoder) Close() {
	if d.h != nil {
		C.tjDestroy(d.h)
		d.h = nil
	}
}

// err is the error of a failed call. TurboJPEG 2.1 leaves a handle whose
// call failed mid-stream in a state that fails the next image too ("two
// SOI markers"), so the handle is replaced.
func (d *Decoder) err(op string) error {
	err := fmt.Errorf("turbojpeg %s: %s", op, C.GoString(C.tjGetErrorStr2(d.h)))
	C.tjDestroy(d.h)
	d.h = C.tjInitDecompress()
	if d.h == nil {
		return fmt.Errorf("%w; and no new decoder: %s", err, C.GoString(C.tjGetErrorStr2(nil)))
	}
	return err
}

// Header returns the image's size from its header, reading no pixels.
func (d *Decoder) Header(b []byte) (w, h int, err error) {
	if d.h == nil {
		return 0, 0, errors.New("turbojpeg: the decoder is closed")
	}
	if len(b) == 0 {
		return 0, 0, errors.New("turbojpeg header: empty data")
	}
	var cw, ch, sub, cs C.int
	if C.tjDecompressHeader3(d.h, (*C.uchar)(unsafe.Pointer(&b[0])), C.ulong(len(b)), &cw, &ch, &sub, &cs) != 0 {
		return 0, 0, d.err("header")
	}
	return int(cw), int(ch), nil
}

// ScaledSize is the size an image of w x h decodes to at 1/scale:
// each side rounded up, as libjpeg does.
func ScaledSize(w, h, scale int) (int, int) {
	return (w + scale - 1) / scale, (h + scale - 1) / scale
}

// Decode decodes b at 1/scale of its size (scale one of Scales) into
// opaque RGBA. A warning (corrupt or truncated data) is an error: the
// image would be partly grey.
func (d *Decoder) Decode(b []byte, scale int) (*image.NRGBA, error) {
	w, h, err := d.Header(b)
	if err != nil {
		return nil, err
	}
	switch scale {
	case 1, 2, 4, 8:
	default:
		return nil, fmt.Errorf("turbojpeg decode: scale 1/%d is not one of 1/1, 1/2, 1/4, 1/8", scale)
	}
	sw, sh := ScaledSize(w, h, scale)
	img := image.NewNRGBA(image.Rect(0, 0, sw, sh))
	// LIMITSCANS refuses progressive files with absurd scan counts, which
	// would otherwise cost minutes of CPU.
	flags := C.TJFLAG_STOPONWARNING | C.TJFLAG_LIMITSCANS
	if C.tjDecompress2(d.h, (*C.uchar)(unsafe.Pointer(&b[0])), C.ulong(len(b)),
		(*C.uchar)(unsafe.Pointer(&img.Pix[0])), C.int(sw), C.int(img.Stride), C.int(sh), C.TJPF_RGBA, C.int(flags)) != 0 {
		return nil, d.err("decode")
	}
	return img, nil
}

// Encode compresses img as a baseline JPEG with 4:2:0 chroma at quality
// (1-100).
func Encode(img *image.NRGBA, quality int) ([]byte, error) {
	return encode(img, quality, C.TJSAMP_420, 0)
}

// flagProgressive asks encode for a progressive file (tests).
const flagProgressive = C.TJFLAG_PROGRESSIVE

// encode compresses with chroma subsampling samp (a TJSAMP) and TJFLAGs.
func encode(img *image.NRGBA, quality, samp, flags int) ([]byte, error) {
	h := C.tjInitCompress()
	if h == nil {
		return nil, fmt.Errorf("turbojpeg: %s", C.GoString(C.tjGetErrorStr2(nil)))
	}
	defer C.tjDestroy(h)
	b := img.Bounds()
	if b.Empty() {
		return nil, errors.New("turbojpeg encode: empty image")
	}
	var out *C.uchar
	var size C.ulong
	pix := img.Pix[img.PixOffset(b.Min.X, b.Min.Y):]
	if C.tjCompress2(h, (*C.uchar)(unsafe.Pointer(&pix[0])), C.int(b.Dx()), C.int(img.Stride), C.int(b.Dy()), C.TJPF_RGBA,
		&out, &size, C.int(samp), C.int(quality), C.int(flags)) != 0 {
		msg := C.GoString(C.tjGetErrorStr2(h))
		if out != nil {
			C.tjFree(out)
		}
		return nil, fmt.Errorf("turbojpeg encode: %s", msg)
	}
	defer C.tjFree(out)
	return C.GoBytes(unsafe.Pointer(out), C.int(size)), nil
}
