/* image/image.c — every libvips call in sluice lives here.
 *
 * Decode path: header-only open to check the pixel count (a decompression
 * bomb fails before any pixel is allocated), then vips_thumbnail_buffer,
 * which shrinks on load (JPEG DCT scaling, WebP/HEIF scaled decode) and
 * applies EXIF orientation, then flatten alpha, convert to 8-bit sRGB and
 * keep three bands. Untrusted loaders (ImageMagick, PDF, SVG, ...) are
 * blocked process-wide at first use. */
#include <errno.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <vips/vips.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "sluice/image.h"

struct sl_image {
    int width, height;
    int source_width, source_height;
    uint8_t *pixels;      /* width*height*3; from g_malloc or sl_malloc */
    bool pixels_from_vips;
};

static pthread_once_t vips_once = PTHREAD_ONCE_INIT;
static int vips_ready;

static void init_vips(void)
{
    if (VIPS_INIT("sluice") != 0) {
        sl_log(SL_LOG_ERROR, "libvips failed to start: %s", vips_error_buffer());
        return;
    }
    vips_block_untrusted_set(TRUE);
    /* Each image is decoded once; the operation cache would only hold
     * memory. */
    vips_cache_set_max(0);
    vips_ready = 1;
}

sl_image_params sl_image_default_params(void)
{
    return (sl_image_params){
        .max_edge = 512,
        .max_input_pixels = 100000000ULL,
        .background = {255, 255, 255},
    };
}

/* Takes the libvips error text (one line, trimmed) for a message. */
static sl_status vips_failure(sl_status status, const char *name, const char *what)
{
    char cause[512];
    snprintf(cause, sizeof cause, "%s", vips_error_buffer());
    vips_error_clear();
    size_t n = strlen(cause);
    while (n && (cause[n - 1] == '\n' || cause[n - 1] == ' '))
        cause[--n] = '\0';
    for (char *c = cause; *c; c++)
        if (*c == '\n')
            *c = ';';
    return sl_fail(status, "%s: %s%s%s", name, what, cause[0] ? ": " : "", cause);
}

/* Replaces *img with the output of a libvips step that wrote *next and
 * returned rc; on failure frees *img. `next` is read here, after the step's
 * call has been evaluated as an argument. */
static int step(VipsImage **img, int rc, VipsImage **next)
{
    g_object_unref(*img);
    *img = rc == 0 ? *next : NULL;
    *next = NULL;
    return rc;
}

sl_status sl_image_decode(const void *data, size_t len, const char *name,
                          const sl_image_params *params, sl_image **out)
{
    *out = NULL;
    sl_image_params defaults = sl_image_default_params();
    if (!params)
        params = &defaults;
    pthread_once(&vips_once, init_vips);
    if (!vips_ready)
        return sl_fail(SL_ERR_DECODE, "%s: libvips is not available", name);
    if (len == 0)
        return sl_fail(SL_ERR_DECODE, "%s: empty file (0 bytes)", name);
    if (!vips_foreign_find_load_buffer(data, len)) {
        vips_error_clear();
        return sl_fail(SL_ERR_DECODE, "%s: not an image in a supported format (%zu bytes)",
                       name, len);
    }

    VipsImage *header = vips_image_new_from_buffer(data, len, "", "access",
                                                   VIPS_ACCESS_SEQUENTIAL, NULL);
    if (!header)
        return vips_failure(SL_ERR_DECODE, name, "cannot read the image header");
    int src_w = header->Xsize, src_h = header->Ysize;
    g_object_unref(header);
    if ((uint64_t)src_w * (uint64_t)src_h > params->max_input_pixels)
        return sl_fail(SL_ERR_DECODE, "%s: %dx%d pixels exceeds the limit of %llu pixels", name,
                       src_w, src_h, (unsigned long long)params->max_input_pixels);

    int target = params->max_edge > 0 ? params->max_edge : VIPS_MAX_COORD;
    VipsImage *img = NULL;
    if (vips_thumbnail_buffer((void *)data, len, &img, target, "height", target, "size",
                              VIPS_SIZE_DOWN, "option_string", "fail_on=truncated", NULL) != 0)
        return vips_failure(SL_ERR_DECODE, name, "cannot decode");

    VipsImage *next = NULL;
    if (vips_image_hasalpha(img)) {
        VipsArrayDouble *bg = vips_array_double_newv(3, (double)params->background[0],
                                                     (double)params->background[1],
                                                     (double)params->background[2]);
        int rc = vips_flatten(img, &next, "background", bg, NULL);
        vips_area_unref(VIPS_AREA(bg));
        if (step(&img, rc, &next))
            return vips_failure(SL_ERR_DECODE, name, "cannot flatten alpha");
    }
    if (vips_image_guess_interpretation(img) != VIPS_INTERPRETATION_sRGB &&
        step(&img, vips_colourspace(img, &next, VIPS_INTERPRETATION_sRGB, NULL), &next))
        return vips_failure(SL_ERR_DECODE, name, "cannot convert to sRGB");
    if (img->BandFmt != VIPS_FORMAT_UCHAR &&
        step(&img, vips_cast_uchar(img, &next, NULL), &next))
        return vips_failure(SL_ERR_DECODE, name, "cannot convert to 8 bits");
    if (img->Bands > 3 && step(&img, vips_extract_band(img, &next, 0, "n", 3, NULL), &next))
        return vips_failure(SL_ERR_DECODE, name, "cannot select RGB bands");
    if (img->Bands != 3) {
        int bands = img->Bands;
        g_object_unref(img);
        return sl_fail(SL_ERR_DECODE, "%s: %d bands after conversion to sRGB, expected 3",
                       name, bands);
    }

    sl_image *im = sl_calloc(1, sizeof *im);
    if (!im) {
        g_object_unref(img);
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory", name);
    }
    size_t n_bytes = 0;
    im->pixels = vips_image_write_to_memory(img, &n_bytes);
    im->pixels_from_vips = true;
    im->width = img->Xsize;
    im->height = img->Ysize;
    g_object_unref(img);
    if (!im->pixels) {
        sl_free(im);
        return vips_failure(SL_ERR_DECODE, name, "cannot decode pixels");
    }
    im->source_width = src_w;
    im->source_height = src_h;
    *out = im;
    return SL_OK;
}

sl_status sl_image_load_file(const char *path, const sl_image_params *params, sl_image **out)
{
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return sl_fail(errno == ENOENT ? SL_ERR_NOT_FOUND : SL_ERR_IO, "%s: cannot open: %s",
                       path, strerror(errno));
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    sl_status st = SL_OK;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 1 << 16;
            uint8_t *grown = sl_realloc(buf, ncap);
            if (!grown) {
                st = sl_fail(SL_ERR_NOMEM, "%s: out of memory reading the file", path);
                break;
            }
            buf = grown;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - len, fp);
        len += got;
        if (got == 0) {
            if (ferror(fp))
                st = sl_fail(SL_ERR_IO, "%s: read error: %s", path, strerror(errno));
            break;
        }
    }
    fclose(fp);
    if (st == SL_OK)
        st = sl_image_decode(buf, len, path, params, out);
    sl_free(buf);
    return st;
}

sl_status sl_image_from_rgb(int width, int height, const uint8_t *rgb, sl_image **out)
{
    *out = NULL;
    if (width <= 0 || height <= 0 || !rgb)
        return sl_fail(SL_ERR_INVALID_ARG, "image %dx%d: size must be positive", width, height);
    size_t n = (size_t)width * (size_t)height * 3;
    sl_image *im = sl_calloc(1, sizeof *im);
    uint8_t *px = im ? sl_malloc(n) : NULL;
    if (!px) {
        sl_free(im);
        return sl_fail(SL_ERR_NOMEM, "image %dx%d: out of memory", width, height);
    }
    memcpy(px, rgb, n);
    *im = (sl_image){width, height, width, height, px, false};
    *out = im;
    return SL_OK;
}

int sl_image_width(const sl_image *image) { return image->width; }
int sl_image_height(const sl_image *image) { return image->height; }
const uint8_t *sl_image_pixels(const sl_image *image) { return image->pixels; }
int sl_image_source_width(const sl_image *image) { return image->source_width; }
int sl_image_source_height(const sl_image *image) { return image->source_height; }

size_t sl_image_bytes(const sl_image *image)
{
    return sizeof *image + (size_t)image->width * (size_t)image->height * 3;
}

sl_status sl_image_encode_jpeg(const sl_image *image, int max_edge, int quality,
                               uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    if (quality < 1 || quality > 100)
        return sl_fail(SL_ERR_INVALID_ARG, "JPEG quality must be 1..100, got %d", quality);
    pthread_once(&vips_once, init_vips);
    if (!vips_ready)
        return sl_fail(SL_ERR_DECODE, "JPEG encode: libvips is not available");
    VipsImage *img = vips_image_new_from_memory(image->pixels,
                                                (size_t)image->width * image->height * 3,
                                                image->width, image->height, 3,
                                                VIPS_FORMAT_UCHAR);
    if (!img)
        return vips_failure(SL_ERR_DECODE, "JPEG encode", "cannot wrap the pixels");
    int edge = image->width > image->height ? image->width : image->height;
    VipsImage *next = NULL;
    if (max_edge > 0 && edge > max_edge &&
        step(&img, vips_resize(img, &next, (double)max_edge / edge, NULL), &next))
        return vips_failure(SL_ERR_DECODE, "JPEG encode", "cannot shrink");
    void *buf = NULL;
    size_t n = 0;
    int rc = vips_jpegsave_buffer(img, &buf, &n, "Q", quality, "strip", TRUE, NULL);
    g_object_unref(img);
    if (rc != 0)
        return vips_failure(SL_ERR_DECODE, "JPEG encode", "cannot encode");
    *out = buf;
    *len = n;
    return SL_OK;
}

void sl_image_buffer_free(uint8_t *buffer) { g_free(buffer); }

void sl_image_free(sl_image *image)
{
    if (!image)
        return;
    if (image->pixels_from_vips)
        g_free(image->pixels);
    else
        sl_free(image->pixels);
    sl_free(image);
}
