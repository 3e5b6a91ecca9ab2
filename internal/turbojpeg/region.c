#include "region.h"

#include <setjmp.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include <jpeglib.h>

// Errors, and warnings as TurboJPEG's STOPONWARNING treats them, leave by
// longjmp with libjpeg's message.
struct region_error {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  char msg[JMSG_LENGTH_MAX];
};

static void region_error_exit(j_common_ptr cinfo) {
  struct region_error *e = (struct region_error *)cinfo->err;
  (*cinfo->err->format_message)(cinfo, e->msg);
  longjmp(e->jump, 1);
}

static void region_emit_message(j_common_ptr cinfo, int level) {
  if (level < 0) region_error_exit(cinfo);
}

// As TurboJPEG's LIMITSCANS: progressive files with absurd scan counts
// would otherwise cost minutes of CPU.
static void region_progress(j_common_ptr cinfo) {
  j_decompress_ptr dinfo = (j_decompress_ptr)cinfo;
  if (dinfo->input_scan_number > 500) {
    struct region_error *e = (struct region_error *)cinfo->err;
    snprintf(e->msg, sizeof e->msg, "progressive JPEG image has more than 500 scans");
    longjmp(e->jump, 1);
  }
}

static int imax(int a, int b) { return a > b ? a : b; }
static int imin(int a, int b) { return a < b ? a : b; }

int deepsim_jpeg_region(const unsigned char *jpeg, unsigned long size, int scale, int x, int y, int w,
                        int h, unsigned char *dst, int stride, char *err, size_t errlen) {
  struct jpeg_decompress_struct cinfo;
  struct region_error jerr;
  struct jpeg_progress_mgr progress;
  // Volatile: read after a longjmp.
  JSAMPLE *volatile band = NULL;

  memset(&cinfo, 0, sizeof cinfo);
  cinfo.err = jpeg_std_error(&jerr.pub);
  jerr.pub.error_exit = region_error_exit;
  jerr.pub.emit_message = region_emit_message;
  jerr.msg[0] = 0;
  if (setjmp(jerr.jump)) {
    snprintf(err, errlen, "%s", jerr.msg);
    jpeg_destroy_decompress(&cinfo);
    free(band);
    return -1;
  }
  jpeg_create_decompress(&cinfo);
  progress.progress_monitor = region_progress;
  cinfo.progress = &progress;
  jpeg_mem_src(&cinfo, jpeg, size);
  jpeg_read_header(&cinfo, TRUE);
  cinfo.scale_num = 1;
  cinfo.scale_denom = scale;
  cinfo.out_color_space = JCS_EXT_RGBA;
  jpeg_start_decompress(&cinfo);
  int W = cinfo.output_width, H = cinfo.output_height;
  if (x < 0 || y < 0 || w <= 0 || h <= 0 || x + w > W || y + h > H) {
    snprintf(jerr.msg, sizeof jerr.msg, "region %dx%d at (%d,%d) outside the %dx%d image", w, h, x, y, W, H);
    longjmp(jerr.jump, 1);
  }
  // Two iMCUs of margin on the sides the library may treat as edges:
  // the rows and columns kept are then decoded as in a whole decode.
  int mx = 2 * cinfo.max_h_samp_factor * cinfo.min_DCT_scaled_size;
  int my = 2 * cinfo.max_v_samp_factor * cinfo.min_DCT_scaled_size;
  JDIMENSION bx = imax(0, x - mx), bw = imin(W, x + w + mx) - bx;
  jpeg_crop_scanline(&cinfo, &bx, &bw);  // widened to iMCU boundaries
  band = malloc((size_t)bw * 4);
  if (band == NULL) {
    snprintf(jerr.msg, sizeof jerr.msg, "out of memory");
    longjmp(jerr.jump, 1);
  }
  int top = imax(0, y - my);
  if (top > 0) jpeg_skip_scanlines(&cinfo, top);
  JSAMPROW row = band;
  while ((int)cinfo.output_scanline < y + h) {
    int line = cinfo.output_scanline;
    jpeg_read_scanlines(&cinfo, &row, 1);
    if (line >= y) memcpy(dst + (size_t)(line - y) * stride, band + (size_t)(x - bx) * 4, (size_t)w * 4);
  }
  // The rest is entropy-decoded but not transformed, so that damage
  // anywhere in the file fails here as it fails a whole decode. Skipping
  // to the very end would not read it; the last row is read instead.
  int rest = H - cinfo.output_scanline;
  if (rest > 1) jpeg_skip_scanlines(&cinfo, rest - 1);
  if (rest > 0) jpeg_read_scanlines(&cinfo, &row, 1);
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  free(band);
  return 0;
}
