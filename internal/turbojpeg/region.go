package turbojpeg

/*
#cgo LDFLAGS: -ljpeg
#include <stdlib.h>
#include "region.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"image"
	"unsafe"
)

// DecodeRegion decodes the rectangle r of b decoded at 1/scale, through
// libjpeg's API (Debian's libjpeg62-turbo-dev): the columns outside r are
// not transformed, nor the rows above it. Its pixels are those of
// Decode(b, scale) inside r, and it fails where Decode fails: the rest of
// the file is still entropy-decoded, so damage anywhere is found.
func DecodeRegion(b []byte, scale int, r image.Rectangle) (*image.NRGBA, error) {
	if len(b) == 0 {
		return nil, errors.New("turbojpeg region: empty data")
	}
	switch scale {
	case 1, 2, 4, 8:
	default:
		return nil, fmt.Errorf("turbojpeg region: scale 1/%d is not one of 1/1, 1/2, 1/4, 1/8", scale)
	}
	if r.Empty() {
		return nil, fmt.Errorf("turbojpeg region: empty rectangle %v", r)
	}
	img := image.NewNRGBA(image.Rect(0, 0, r.Dx(), r.Dy()))
	var msg [256]C.char
	if C.deepsim_jpeg_region((*C.uchar)(unsafe.Pointer(&b[0])), C.ulong(len(b)), C.int(scale),
		C.int(r.Min.X), C.int(r.Min.Y), C.int(r.Dx()), C.int(r.Dy()),
		(*C.uchar)(unsafe.Pointer(&img.Pix[0])), C.int(img.Stride), &msg[0], C.size_t(len(msg))) != 0 {
		return nil, fmt.Errorf("turbojpeg region: %s", C.GoString(&msg[0]))
	}
	return img, nil
}
