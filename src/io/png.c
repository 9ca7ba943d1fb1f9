// png.c: PNG writing and reading (png.h) through libpng's simplified API, which reports failures as return values
// instead of longjmp; files are encoded in memory and written with dt_write_file_atomic.
#include "png.h"

#include <math.h>
#include <png.h>
#include <string.h>

#include "../core/common.h"

#define GRID_GAP 2

uint8_t pngio_quantize(float x) {
    float u = x / 2.0f + 0.5f;
    if (!(u >= 0.0f)) u = 0.0f; // also NaN
    if (u > 1.0f) u = 1.0f;
    return (uint8_t)nearbyintf(u * 255.0f); // the default rounding mode: half to even, as numpy's round
}

static void check_size(int height, int width) {
    CHECK(height > 0 && width > 0 && height <= (1 << 16) && width <= (1 << 16), "a caller passed a bad image size",
          "image of %d x %d pixels", height, width);
}

void pngio_write_rgb8(const char *path, const uint8_t *rgb, int height, int width) {
    USER_CHECK(path && path[0], "empty PNG output path");
    check_size(height, width);
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)width;
    img.height = (png_uint_32)height;
    img.format = PNG_FORMAT_RGB;
    png_alloc_size_t size = PNG_IMAGE_PNG_SIZE_MAX(img);
    void *buf = xmalloc(size);
    if (!png_image_write_to_memory(&img, buf, &size, 0, rgb, 0, NULL))
        FATAL("", "libpng could not encode '%s' (%s)", path, img.message);
    dt_write_file_atomic(path, buf, size);
    free(buf);
}

// Float image [3, H, W] into interleaved RGB8 rows of a larger canvas (row stride in pixels).
static void image_to_rgb8(const float *chw, int height, int width, uint8_t *dst, int stride) {
    size_t plane = (size_t)height * (size_t)width;
    for (int y = 0; y < height; y++)
        for (int x = 0; x < width; x++)
            for (int c = 0; c < 3; c++)
                dst[((size_t)y * (size_t)stride + (size_t)x) * 3 + (size_t)c] =
                    pngio_quantize(chw[(size_t)c * plane + (size_t)y * (size_t)width + (size_t)x]);
}

void pngio_write(const char *path, const float *chw, int height, int width) {
    check_size(height, width);
    uint8_t *rgb = xmalloc((size_t)height * (size_t)width * 3);
    image_to_rgb8(chw, height, width, rgb, width);
    pngio_write_rgb8(path, rgb, height, width);
    free(rgb);
}

void pngio_write_grid(const char *path, const float *images, int n, int height, int width, int cols) {
    CHECK(n > 0, "", "grid of %d images", n);
    check_size(height, width);
    if (cols <= 0)
        while (cols * cols < n) cols++;
    if (cols > n) cols = n;
    int rows = (n + cols - 1) / cols;
    int gh = rows * height + (rows - 1) * GRID_GAP, gw = cols * width + (cols - 1) * GRID_GAP;
    check_size(gh, gw);
    uint8_t *rgb = xmalloc((size_t)gh * (size_t)gw * 3);
    memset(rgb, 255, (size_t)gh * (size_t)gw * 3);
    size_t image_floats = (size_t)3 * (size_t)height * (size_t)width;
    for (int i = 0; i < n; i++) {
        int y0 = (i / cols) * (height + GRID_GAP), x0 = (i % cols) * (width + GRID_GAP);
        uint8_t *cell = rgb + ((size_t)y0 * (size_t)gw + (size_t)x0) * 3;
        image_to_rgb8(images + (size_t)i * image_floats, height, width, cell, gw);
    }
    pngio_write_rgb8(path, rgb, gh, gw);
    free(rgb);
}

float *pngio_read(const char *path, int *height, int *width) {
    size_t len;
    char *file = dt_read_file(path, &len);
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_memory(&img, file, len)) {
        free(file);
        dt_user_error("'%s' is not a readable PNG (%s)", path, img.message);
    }
    if (img.format != PNG_FORMAT_RGB) {
        png_image_free(&img);
        free(file);
        dt_user_error("'%s' is not an 8-bit RGB PNG without alpha", path);
    }
    int h = (int)img.height, w = (int)img.width;
    if (h <= 0 || w <= 0 || h > (1 << 16) || w > (1 << 16)) {
        png_image_free(&img);
        free(file);
        dt_user_error("'%s': image of %u x %u pixels is too large", path, img.height, img.width);
    }
    uint8_t *rgb = xmalloc(PNG_IMAGE_SIZE(img));
    if (!png_image_finish_read(&img, NULL, rgb, 0, NULL)) {
        free(file);
        dt_user_error("'%s': corrupt PNG (%s)", path, img.message);
    }
    free(file);
    size_t plane = (size_t)h * (size_t)w;
    float *chw = xmalloc(sizeof(float) * plane * 3);
    for (size_t p = 0; p < plane; p++)
        for (int c = 0; c < 3; c++) chw[(size_t)c * plane + p] = (float)rgb[p * 3 + (size_t)c] / 255.0f * 2.0f - 1.0f;
    free(rgb);
    *height = h;
    *width = w;
    return chw;
}
