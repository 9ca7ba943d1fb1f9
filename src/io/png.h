// png.h: images to and from PNG files. Sample grids and reward plots are what a user looks at to judge a run, so
// images are converted exactly as diffusers does (a drtune sample and a diffusers sample of the same tensor are the
// same file content), and every write is atomic so a crash never leaves a half-written image.
#pragma once
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// One channel value of a decoded image in [-1, 1] to 8 bits, as diffusers' postprocess and numpy_to_pil:
// u = clamp(x / 2 + 0.5, 0, 1) in fp32, then round(u * 255) half to even (NaN gives 0).
uint8_t pngio_quantize(float x);
// Interleaved RGB8 rows [H, W, 3] to path (atomic: temporary file, fsync, rename). User error when the path cannot
// be written.
void pngio_write_rgb8(const char *path, const uint8_t *rgb, int height, int width);
// A float image [3, H, W] in [-1, 1] to an RGB8 PNG.
void pngio_write(const char *path, const float *chw, int height, int width);
// n float images [n, 3, H, W] in a grid of `cols` columns (<= 0: about square) and as many rows as needed, with
// 2-pixel white gaps between them (and white empty cells).
void pngio_write_grid(const char *path, const float *images, int n, int height, int width, int cols);
// Reads an 8-bit RGB PNG as a float image [3, H, W] (malloc'd) with x = v / 255 * 2 - 1, the inverse of
// pngio_quantize: writing it again gives the same pixels. User error when the file is not an 8-bit RGB PNG.
float *pngio_read(const char *path, int *height, int *width);

#ifdef __cplusplus
}
#endif
