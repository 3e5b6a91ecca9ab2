// A JPEG decoded for one rectangle through libjpeg's API, which TurboJPEG
// 2.1 lacks: columns outside are cropped (jpeg_crop_scanline), rows above
// are skipped without inverse DCT (jpeg_skip_scanlines).
#include <stddef.h>

// deepsim_jpeg_region decodes the rectangle (x, y, w, h) of the image at
// 1/scale into dst (RGBA, stride bytes a row). It returns 0, or -1 with a
// message in err.
int deepsim_jpeg_region(const unsigned char *jpeg, unsigned long size, int scale, int x, int y, int w,
                        int h, unsigned char *dst, int stride, char *err, size_t errlen);
