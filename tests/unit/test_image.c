/* Unit tests: image/image.c — decode, orient, flatten, convert, shrink, and
 * the errors for bad input. Test images are made here with libvips. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <cmocka.h>
#include <vips/vips.h>
#include <vips/vector.h>

#include "sluice/image.h"
#include "test_util.h"

typedef struct blob {
    void *data;
    size_t len;
} blob;

/* A w x h image whose left half is red and right half blue, saved in
 * `format` (".png", ".jpg[Q=95]", ...). */
static blob make_image(int w, int h, int bands, const char *format, int orientation)
{
    VipsImage *img = vips_image_new_memory();
    unsigned char *px = g_malloc((size_t)w * h * bands);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            unsigned char *p = px + ((size_t)y * w + x) * bands;
            unsigned char rgba[4] = {x < w / 2 ? 255 : 0, 0, x < w / 2 ? 0 : 255, 255};
            if (bands <= 2)
                p[0] = x < w / 2 ? 200 : 50;
            else
                memcpy(p, rgba, 3);
            if (bands == 4 || bands == 2)
                p[bands - 1] = 0; /* fully transparent */
        }
    g_object_unref(img);
    img = vips_image_new_from_memory_copy(px, (size_t)w * h * bands, w, h, bands, VIPS_FORMAT_UCHAR);
    g_free(px);
    if (bands <= 2)
        img->Type = VIPS_INTERPRETATION_B_W;
    if (orientation)
        vips_image_set_int(img, "orientation", orientation);
    blob b = {0};
    if (vips_image_write_to_buffer(img, format, &b.data, &b.len, NULL) != 0)
        fail_msg("cannot make test image: %s", vips_error_buffer());
    g_object_unref(img);
    return b;
}

static const uint8_t *pixel(const sl_image *im, int x, int y)
{
    return sl_image_pixels(im) + ((size_t)y * sl_image_width(im) + x) * 3;
}

static void decodes_png_keeping_size_and_colours(void **state)
{
    blob b = make_image(40, 20, 3, ".png", 0);
    sl_image *im;
    assert_int_equal(sl_image_decode(b.data, b.len, "t.png", NULL, &im), SL_OK);
    assert_int_equal(sl_image_width(im), 40);
    assert_int_equal(sl_image_height(im), 20);
    assert_int_equal(pixel(im, 2, 5)[0], 255);
    assert_int_equal(pixel(im, 2, 5)[2], 0);
    assert_int_equal(pixel(im, 37, 5)[2], 255);
    assert_int_equal(sl_image_bytes(im) >= 40 * 20 * 3, 1);
    sl_image_free(im);
    g_free(b.data);
}

static void shrinks_to_max_edge(void **state)
{
    blob b = make_image(1000, 500, 3, ".jpg[Q=90]", 0);
    sl_image_params p = sl_image_default_params();
    p.max_edge = 200;
    sl_image *im;
    assert_int_equal(sl_image_decode(b.data, b.len, "big.jpg", &p, &im), SL_OK);
    assert_int_equal(sl_image_width(im), 200);
    assert_int_equal(sl_image_height(im), 100);
    assert_int_equal(sl_image_source_width(im), 1000);
    assert_int_equal(sl_image_source_height(im), 500);
    /* Colours survive the shrink (JPEG: within a tolerance of 40). */
    assert_true(pixel(im, 10, 50)[0] > 215 && pixel(im, 10, 50)[2] < 40);
    assert_true(pixel(im, 190, 50)[2] > 215 && pixel(im, 190, 50)[0] < 40);
    sl_image_free(im);

    /* Never enlarged. */
    p.max_edge = 5000;
    assert_int_equal(sl_image_decode(b.data, b.len, "big.jpg", &p, &im), SL_OK);
    assert_int_equal(sl_image_width(im), 1000);
    sl_image_free(im);
    g_free(b.data);
}

static void applies_exif_orientation(void **state)
{
    /* Stored 60x20; orientation 6 means "rotate 90 clockwise to display". */
    blob b = make_image(60, 20, 3, ".jpg[Q=95]", 6);
    sl_image *im;
    assert_int_equal(sl_image_decode(b.data, b.len, "rot.jpg", NULL, &im), SL_OK);
    assert_int_equal(sl_image_width(im), 20);
    assert_int_equal(sl_image_height(im), 60);
    /* The red left half is now on top. */
    assert_true(pixel(im, 10, 5)[0] > 200 && pixel(im, 10, 5)[2] < 60);
    assert_true(pixel(im, 10, 55)[2] > 200 && pixel(im, 10, 55)[0] < 60);
    sl_image_free(im);
    g_free(b.data);
}

static void flattens_alpha_onto_background(void **state)
{
    blob b = make_image(8, 8, 4, ".png", 0);
    sl_image_params p = sl_image_default_params();
    p.background[0] = 10;
    p.background[1] = 20;
    p.background[2] = 30;
    sl_image *im;
    assert_int_equal(sl_image_decode(b.data, b.len, "a.png", &p, &im), SL_OK);
    assert_int_equal(pixel(im, 1, 1)[0], 10);
    assert_int_equal(pixel(im, 1, 1)[1], 20);
    assert_int_equal(pixel(im, 1, 1)[2], 30);
    sl_image_free(im);
    g_free(b.data);
}

static void grayscale_becomes_rgb(void **state)
{
    blob b = make_image(10, 10, 1, ".png", 0);
    sl_image *im;
    assert_int_equal(sl_image_decode(b.data, b.len, "g.png", NULL, &im), SL_OK);
    const uint8_t *p = pixel(im, 1, 1);
    assert_int_equal(p[0], 200);
    assert_int_equal(p[1], 200);
    assert_int_equal(p[2], 200);
    sl_image_free(im);
    g_free(b.data);
}

static void bad_inputs_fail_with_named_errors(void **state)
{
    sl_image *im = (void *)1;
    assert_int_equal(sl_image_decode("", 0, "zero.jpg", NULL, &im), SL_ERR_DECODE);
    assert_null(im);
    assert_non_null(strstr(sl_last_error(), "zero.jpg"));
    assert_non_null(strstr(sl_last_error(), "empty"));

    const char junk[] = "this is not an image at all";
    assert_int_equal(sl_image_decode(junk, sizeof junk, "junk.png", NULL, &im), SL_ERR_DECODE);
    assert_non_null(strstr(sl_last_error(), "junk.png"));

    blob b = make_image(300, 200, 3, ".jpg[Q=90]", 0);
    assert_int_equal(sl_image_decode(b.data, b.len / 2, "half.jpg", NULL, &im), SL_ERR_DECODE);
    assert_null(im);
    assert_non_null(strstr(sl_last_error(), "half.jpg"));

    sl_image_params p = sl_image_default_params();
    p.max_input_pixels = 300 * 200 - 1;
    assert_int_equal(sl_image_decode(b.data, b.len, "many.jpg", &p, &im), SL_ERR_TOO_LARGE);
    assert_non_null(strstr(sl_last_error(), "300x200"));
    g_free(b.data);

    assert_int_equal(sl_image_load_file("/nonexistent/x.jpg", NULL, &im), SL_ERR_NOT_FOUND);
    assert_non_null(strstr(sl_last_error(), "/nonexistent/x.jpg"));
}

/* Saves `img` (consumed) in `format`. */
static blob save(VipsImage *img, const char *format)
{
    blob b = {0};
    if (vips_image_write_to_buffer(img, format, &b.data, &b.len, NULL) != 0)
        fail_msg("cannot make test image %s: %s", format, vips_error_buffer());
    g_object_unref(img);
    return b;
}

/* Red left half, blue right half, as a libvips image in sRGB. */
static VipsImage *red_blue(int w, int h)
{
    blob png = make_image(w, h, 3, ".png", 0);
    VipsImage *img = vips_image_new_from_buffer(png.data, png.len, "", NULL);
    VipsImage *copy = vips_image_copy_memory(img);
    g_object_unref(img);
    g_free(png.data);
    return copy;
}

static void assert_red_blue(const sl_image *im, int tolerance)
{
    int w = sl_image_width(im), h = sl_image_height(im);
    const uint8_t *l = pixel(im, w / 8, h / 2), *r = pixel(im, w - 1 - w / 8, h / 2);
    assert_in_range(l[0], 255 - tolerance, 255);
    assert_in_range(l[1], 0, tolerance);
    assert_in_range(l[2], 0, tolerance);
    assert_in_range(r[0], 0, tolerance);
    assert_in_range(r[1], 0, tolerance);
    assert_in_range(r[2], 255 - tolerance, 255);
}

static void cmyk_jpeg_becomes_srgb(void **state)
{
    /* With its ICC profile, and without one (libvips' fallback CMYK). */
    for (int with_profile = 1; with_profile >= 0; with_profile--) {
        VipsImage *cmyk;
        if (vips_icc_transform(red_blue(40, 20), &cmyk, "cmyk", "input_profile", "srgb",
                               "embedded", FALSE, NULL) != 0)
            fail_msg("%s", vips_error_buffer());
        assert_int_equal(cmyk->Bands, 4);
        if (!with_profile)
            vips_image_remove(cmyk, VIPS_META_ICC_NAME);
        blob b = save(cmyk, ".jpg[Q=95]");
        sl_image *im;
        assert_int_equal(sl_image_decode(b.data, b.len, "cmyk.jpg", NULL, &im), SL_OK);
        assert_int_equal(sl_image_width(im), 40);
        /* Red and blue through a print gamut come back duller: hue checks. */
        const uint8_t *l = pixel(im, 4, 10), *r = pixel(im, 35, 10);
        assert_true(l[0] > 180 && l[1] < 90 && l[2] < 90);
        assert_true(r[2] > 100 && r[0] < 60 && r[2] > r[1] + 40);
        sl_image_free(im);
        g_free(b.data);
    }
}

static void embedded_icc_profile_is_applied(void **state)
{
    /* sRGB red/blue stored as Display P3 numbers with the P3 profile: read
     * as sRGB without the profile, red would be about (234, 51, 35). */
    VipsImage *p3;
    if (vips_icc_transform(red_blue(40, 20), &p3, "p3", "input_profile", "srgb", "embedded",
                           FALSE, "intent", VIPS_INTENT_RELATIVE, NULL) != 0)
        fail_msg("%s", vips_error_buffer());
    const char *formats[] = {".jpg[Q=98]", ".png"};
    for (int i = 0; i < 2; i++) {
        g_object_ref(p3);
        blob b = save(p3, formats[i]);
        sl_image *im;
        assert_int_equal(sl_image_decode(b.data, b.len, formats[i], NULL, &im), SL_OK);
        assert_red_blue(im, 12);
        sl_image_free(im);
        g_free(b.data);
    }
    g_object_unref(p3);
}

static void sixteen_bit_png_becomes_8_bit(void **state)
{
    VipsImage *rgb16, *gray16;
    VipsImage *img = red_blue(40, 20);
    if (vips_colourspace(img, &rgb16, VIPS_INTERPRETATION_RGB16, NULL) != 0)
        fail_msg("%s", vips_error_buffer());
    g_object_unref(img);
    assert_int_equal(rgb16->BandFmt, VIPS_FORMAT_USHORT);
    blob b = save(rgb16, ".png");
    sl_image *im;
    assert_int_equal(sl_image_decode(b.data, b.len, "rgb16.png", NULL, &im), SL_OK);
    assert_red_blue(im, 1);
    sl_image_free(im);
    g_free(b.data);

    /* 16-bit grey: left half 200/255 of full scale. */
    blob gray8 = make_image(40, 20, 1, ".png", 0);
    img = vips_image_new_from_buffer(gray8.data, gray8.len, "", NULL);
    if (vips_colourspace(img, &gray16, VIPS_INTERPRETATION_GREY16, NULL) != 0)
        fail_msg("%s", vips_error_buffer());
    g_object_unref(img);
    b = save(gray16, ".png");
    g_free(gray8.data);
    assert_int_equal(sl_image_decode(b.data, b.len, "gray16.png", NULL, &im), SL_OK);
    const uint8_t *p = pixel(im, 2, 2);
    assert_in_range(p[0], 199, 201);
    assert_int_equal(p[0], p[1]);
    assert_int_equal(p[1], p[2]);
    assert_in_range(pixel(im, 38, 2)[0], 49, 51);
    sl_image_free(im);
    g_free(b.data);
}

static void palette_png_and_gray_jpeg_become_rgb(void **state)
{
    blob b = save(red_blue(40, 20), ".png[palette,colours=4]");
    assert_int_equal(((uint8_t *)b.data)[25], 3); /* IHDR colour type 3: indexed */
    sl_image *im;
    assert_int_equal(sl_image_decode(b.data, b.len, "pal.png", NULL, &im), SL_OK);
    assert_red_blue(im, 8);
    sl_image_free(im);
    g_free(b.data);

    b = make_image(40, 20, 1, ".jpg[Q=95]", 0);
    assert_int_equal(sl_image_decode(b.data, b.len, "gray.jpg", NULL, &im), SL_OK);
    assert_in_range(pixel(im, 2, 2)[0], 195, 205);
    assert_int_equal(pixel(im, 2, 2)[0], pixel(im, 2, 2)[2]);
    assert_in_range(pixel(im, 38, 2)[1], 45, 55);
    sl_image_free(im);
    g_free(b.data);
}

/* Three 30x20 frames, red then green then blue, as one animation. */
static blob animation(const char *format)
{
    VipsImage *frames[3];
    for (int i = 0; i < 3; i++) {
        double rgb[3] = {i == 0 ? 255 : 0, i == 1 ? 255 : 0, i == 2 ? 255 : 0};
        VipsImage *black, *lin;
        vips_black(&black, 30, 20, "bands", 3, NULL);
        vips_linear(black, &lin, (double[]){1, 1, 1}, rgb, 3, "uchar", TRUE, NULL);
        g_object_unref(black);
        frames[i] = lin;
    }
    VipsImage *strip;
    if (vips_arrayjoin(frames, &strip, 3, "across", 1, NULL) != 0)
        fail_msg("%s", vips_error_buffer());
    for (int i = 0; i < 3; i++)
        g_object_unref(frames[i]);
    VipsImage *copy;
    vips_copy(strip, &copy, "interpretation", VIPS_INTERPRETATION_sRGB, NULL);
    g_object_unref(strip);
    vips_image_set_int(copy, "page-height", 20);
    vips_image_set_int(copy, "n-pages", 3);
    vips_image_set_array_int(copy, "delay", (int[]){100, 100, 100}, 3);
    return save(copy, format);
}

static void animation_gives_its_first_frame(void **state)
{
    const char *formats[] = {".gif", ".webp[lossless]"};
    for (int i = 0; i < 2; i++) {
        blob b = animation(formats[i]);
        /* The file really holds three frames. */
        VipsImage *all = vips_image_new_from_buffer(b.data, b.len, "n=-1", NULL);
        assert_non_null(all);
        assert_int_equal(all->Ysize, 60);
        g_object_unref(all);
        sl_image *im;
        assert_int_equal(sl_image_decode(b.data, b.len, formats[i], NULL, &im), SL_OK);
        assert_int_equal(sl_image_width(im), 30);
        assert_int_equal(sl_image_height(im), 20);
        const uint8_t *p = pixel(im, 15, 10);
        assert_true(p[0] > 240 && p[1] < 15 && p[2] < 15);
        sl_image_free(im);
        g_free(b.data);
    }
}

static long max_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void decompression_bomb_is_refused_from_the_header(void **state)
{
    /* 30000 x 30000 grey: 900 MB decoded, about 4 MB as a PNG. */
    VipsImage *big;
    vips_black(&big, 30000, 30000, NULL);
    blob b = {0};
    if (vips_pngsave_buffer(big, &b.data, &b.len, "compression", 1, "filter",
                            VIPS_FOREIGN_PNG_FILTER_NONE, NULL) != 0)
        fail_msg("%s", vips_error_buffer());
    g_object_unref(big);
    assert_true(b.len < 8u << 20);
    long before = max_rss_kb();
    sl_image *im = (void *)1;
    assert_int_equal(sl_image_decode(b.data, b.len, "bomb.png", NULL, &im), SL_ERR_TOO_LARGE);
    assert_null(im);
    assert_non_null(strstr(sl_last_error(), "bomb.png"));
    assert_non_null(strstr(sl_last_error(), "30000x30000"));
    assert_non_null(strstr(sl_last_error(), "100000000"));
    /* Nothing near the 900 MB of pixels was touched. */
    assert_true(max_rss_kb() - before < 64 * 1024);
    g_free(b.data);

    /* The same check on the JPEG path, from a real JPEG header. */
    blob j = make_image(300, 200, 3, ".jpg", 0);
    sl_image_params p = sl_image_default_params();
    p.max_input_pixels = 300 * 200 - 1;
    assert_int_equal(sl_image_decode(j.data, j.len, "big.jpg", &p, &im), SL_ERR_TOO_LARGE);
    assert_non_null(strstr(sl_last_error(), "300x200 pixels exceeds the limit of 59999"));
    p.max_input_pixels = 300 * 200;
    assert_int_equal(sl_image_decode(j.data, j.len, "big.jpg", &p, &im), SL_OK);
    sl_image_free(im);
    g_free(j.data);
}

/* Writes b to a new file from the template `path` (its last 4 characters a
 * suffix), which it fills in. */
static void write_temp(const blob *b, char *path)
{
    int fd = mkstemps(path, 4);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b->data, b->len), (ssize_t)b->len);
    close(fd);
}

static void content_decides_the_format_not_the_name(void **state)
{
    blob b = make_image(40, 20, 3, ".png", 0);
    char path[] = "/tmp/sluice-test-image-XXXXXX.jpg";
    write_temp(&b, path);
    sl_image *im;
    assert_int_equal(sl_image_load_file(path, NULL, &im), SL_OK);
    assert_red_blue(im, 0);
    sl_image_free(im);
    unlink(path);
    g_free(b.data);
}

/* The file's size is checked against max_file_bytes before a byte is read
 * (it had no limit: a caller read any file whole); the message names the
 * path and the limit. */
static void load_file_refuses_a_file_over_max_file_bytes(void **state)
{
    blob b = make_image(40, 20, 3, ".png", 0);
    char path[] = "/tmp/sluice-test-image-XXXXXX.png";
    write_temp(&b, path);
    sl_image *im = NULL;
    sl_image_params p = sl_image_default_params();
    assert_int_equal(p.max_file_bytes, 256u << 20);
    p.max_file_bytes = b.len - 1;
    assert_int_equal(sl_image_load_file(path, &p, &im), SL_ERR_TOO_LARGE);
    assert_null(im);
    char want[64];
    snprintf(want, sizeof want, "over the limit of %zu bytes", b.len - 1);
    assert_non_null(strstr(sl_last_error(), path));
    assert_non_null(strstr(sl_last_error(), want));
    p.max_file_bytes = b.len;
    assert_int_equal(sl_image_load_file(path, &p, &im), SL_OK);
    sl_image_free(im);
    unlink(path);
    g_free(b.data);
}

static void unlisted_formats_are_refused(void **state)
{
    static const char svg[] = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" "
                              "height=\"10\"><rect width=\"10\" height=\"10\"/></svg>";
    sl_image *im = (void *)1;
    assert_int_equal(sl_image_decode(svg, sizeof svg - 1, "x.svg", NULL, &im), SL_ERR_DECODE);
    assert_null(im);
    assert_non_null(strstr(sl_last_error(), "x.svg"));
    assert_non_null(strstr(sl_last_error(), "x.svg: not an image sluice can read (SVG)"));
    assert_null(strstr(sl_last_error(), "VipsForeign"));

    /* TIFF and HEIF (here AVIF) are on the list: they decode. */
    const char *formats[] = {".tif", ".avif[lossless]"};
    for (int i = 0; i < 2; i++) {
        blob b = save(red_blue(40, 20), formats[i]);
        assert_int_equal(sl_image_decode(b.data, b.len, formats[i], NULL, &im), SL_OK);
        assert_red_blue(im, 8);
        sl_image_free(im);
        g_free(b.data);
    }
}

/* A strip fails from its header, on both paths, saying its size and the
 * ratio; max_aspect_ratio 0 lets it through. */
static void a_strip_past_max_aspect_ratio_is_refused(void **state)
{
    const char *formats[] = {".png", ".jpg"};
    for (int i = 0; i < 2; i++) {
        blob b = make_image(1000, 2, 3, formats[i], 0);
        sl_image *im = NULL;
        assert_int_equal(sl_image_decode(b.data, b.len, "strip", NULL, &im), SL_ERR_DECODE);
        assert_null(im);
        assert_non_null(strstr(sl_last_error(), "strip: 1000x2 px: aspect ratio over 200:1"));
        sl_image_params p = sl_image_default_params();
        p.max_aspect_ratio = 0;
        assert_int_equal(sl_image_decode(b.data, b.len, "strip", &p, &im), SL_OK);
        sl_image_free(im);
        g_free(b.data);
    }
}

static void jpeg_orientation_with_shrink(void **state)
{
    /* 1000x500 turned 180 degrees (3) and 90 counter-clockwise (8), shrunk
     * to 200 on the longer edge. */
    blob b = make_image(1000, 500, 3, ".jpg[Q=90]", 3);
    sl_image_params p = sl_image_default_params();
    p.max_edge = 200;
    sl_image *im;
    assert_int_equal(sl_image_decode(b.data, b.len, "r3.jpg", &p, &im), SL_OK);
    assert_int_equal(sl_image_width(im), 200);
    assert_int_equal(sl_image_height(im), 100);
    /* Red was on the left; it is now on the right. */
    assert_true(pixel(im, 190, 50)[0] > 200 && pixel(im, 190, 50)[2] < 60);
    assert_true(pixel(im, 10, 50)[2] > 200 && pixel(im, 10, 50)[0] < 60);
    sl_image_free(im);
    g_free(b.data);

    b = make_image(1000, 500, 3, ".jpg[Q=90]", 8);
    assert_int_equal(sl_image_decode(b.data, b.len, "r8.jpg", &p, &im), SL_OK);
    assert_int_equal(sl_image_width(im), 100);
    assert_int_equal(sl_image_height(im), 200);
    assert_int_equal(sl_image_source_width(im), 1000);
    /* Orientation 8: the left (red) half ends at the bottom. */
    assert_true(pixel(im, 50, 190)[0] > 200 && pixel(im, 50, 190)[2] < 60);
    assert_true(pixel(im, 50, 10)[2] > 200 && pixel(im, 50, 10)[0] < 60);
    sl_image_free(im);
    g_free(b.data);
}

static void twelve_megapixel_jpeg_shrinks_to_512(void **state)
{
    blob b = make_image(4000, 3000, 3, ".jpg[Q=85]", 0);
    sl_image *im;
    assert_int_equal(sl_image_decode(b.data, b.len, "12mp.jpg", NULL, &im), SL_OK);
    assert_int_equal(sl_image_width(im), 512);
    assert_int_equal(sl_image_height(im), 384);
    assert_int_equal(sl_image_source_width(im), 4000);
    assert_red_blue(im, 40);
    sl_image_free(im);
    g_free(b.data);
}

static void truncated_png_fails(void **state)
{
    blob b = make_image(300, 200, 3, ".png", 0);
    sl_image *im = (void *)1;
    assert_int_equal(sl_image_decode(b.data, b.len / 2, "half.png", NULL, &im), SL_ERR_DECODE);
    assert_null(im);
    assert_non_null(strstr(sl_last_error(), "half.png: damaged or cut short"));
    /* libvips' detail follows; a line it starts with a loader class is put
     * as the format (planted here: this libvips names none for a cut PNG). */
    vips_error("VipsForeignLoadPngBuffer", "%s", "planted cause");
    assert_int_equal(sl_image_decode(b.data, b.len / 2, "half.png", NULL, &im), SL_ERR_DECODE);
    assert_non_null(strstr(sl_last_error(), "PNG: planted cause"));
    assert_null(strstr(sl_last_error(), "VipsForeign"));
    g_free(b.data);
}

static void from_rgb_copies(void **state)
{
    uint8_t px[2 * 1 * 3] = {1, 2, 3, 4, 5, 6};
    sl_image *im;
    assert_int_equal(sl_image_from_rgb(2, 1, px, &im), SL_OK);
    px[0] = 99;
    assert_int_equal(sl_image_pixels(im)[0], 1);
    assert_int_equal(sl_image_pixels(im)[5], 6);
    sl_image_free(im);
    assert_int_equal(sl_image_from_rgb(0, 1, px, &im), SL_ERR_INVALID_ARG);
    assert_non_null(strstr(sl_last_error(), "size must be positive"));
    /* A size that is fine with no pixels: the message says what is wrong,
     * not the size. */
    assert_int_equal(sl_image_from_rgb(2, 1, NULL, &im), SL_ERR_INVALID_ARG);
    assert_null(im);
    assert_non_null(strstr(sl_last_error(), "rgb is NULL"));
    assert_null(strstr(sl_last_error(), "size must be positive"));
}

static void encodes_jpeg_shrunk_and_decodable(void **state)
{
    blob b = make_image(400, 200, 3, ".png", 0);
    sl_image *im, *back;
    assert_int_equal(sl_image_decode(b.data, b.len, "t.png", NULL, &im), SL_OK);
    g_free(b.data);
    uint8_t *jpeg;
    size_t len;
    assert_int_equal(sl_image_encode_jpeg(im, 100, 90, &jpeg, &len), SL_OK);
    assert_true(len > 2 && jpeg[0] == 0xFF && jpeg[1] == 0xD8);
    assert_int_equal(sl_image_decode(jpeg, len, "t.jpg", NULL, &back), SL_OK);
    assert_int_equal(sl_image_width(back), 100);
    assert_int_equal(sl_image_height(back), 50);
    /* Colours survive: red on the left, blue on the right. */
    assert_true(pixel(back, 10, 25)[0] > 200 && pixel(back, 10, 25)[2] < 60);
    assert_true(pixel(back, 90, 25)[2] > 200 && pixel(back, 90, 25)[0] < 60);
    sl_image_buffer_free(jpeg);
    sl_image_free(back);

    /* 0 keeps the size. */
    assert_int_equal(sl_image_encode_jpeg(im, 0, 75, &jpeg, &len), SL_OK);
    assert_int_equal(sl_image_decode(jpeg, len, "t.jpg", NULL, &back), SL_OK);
    assert_int_equal(sl_image_width(back), 400);
    sl_image_buffer_free(jpeg);
    sl_image_free(back);

    assert_int_equal(sl_image_encode_jpeg(im, 0, 0, &jpeg, &len), SL_ERR_INVALID_ARG);
    assert_null(jpeg);
    sl_image_free(im);
}

/* Decode workers run in parallel: every decode from several threads at once
 * gives the pixels a lone decode gives. Each input takes a path that resizes
 * in libvips (JPEG: libjpeg then a resize and rotation; PNG: thumbnail). */
enum { PAR_INPUTS = 3, PAR_THREADS = 4, PAR_ROUNDS = 15 };

typedef struct par_case {
    blob in[PAR_INPUTS];
    sl_image *want[PAR_INPUTS];
    int mismatches;
} par_case;

static size_t pixel_bytes(const sl_image *im)
{
    return (size_t)sl_image_width(im) * (size_t)sl_image_height(im) * 3;
}

static void *decode_rounds(void *arg)
{
    par_case *c = arg;
    for (int r = 0; r < PAR_ROUNDS; r++)
        for (int i = 0; i < PAR_INPUTS; i++) {
            sl_image *im;
            const sl_image *want = c->want[i];
            if (sl_image_decode(c->in[i].data, c->in[i].len, "par", NULL, &im) != SL_OK) {
                __atomic_add_fetch(&c->mismatches, 1, __ATOMIC_RELAXED);
                continue;
            }
            if (sl_image_width(im) != sl_image_width(want) ||
                sl_image_height(im) != sl_image_height(want) ||
                memcmp(sl_image_pixels(im), sl_image_pixels(want), pixel_bytes(im)) != 0)
                __atomic_add_fetch(&c->mismatches, 1, __ATOMIC_RELAXED);
            sl_image_free(im);
        }
    return NULL;
}

static void parallel_decodes_match_a_lone_decode(void **state)
{
    par_case c = {.in = {make_image(1500, 1000, 3, ".jpg[Q=90]", 0),
                         make_image(1500, 1000, 3, ".jpg[Q=90]", 6),
                         make_image(1200, 900, 4, ".png", 0)}};
    for (int i = 0; i < PAR_INPUTS; i++)
        assert_int_equal(sl_image_decode(c.in[i].data, c.in[i].len, "par", NULL, &c.want[i]), SL_OK);
    tu_run_threads(PAR_THREADS, decode_rounds, &c);
    assert_int_equal(c.mismatches, 0);
    /* libvips' ORC path stays off: Debian 12's liborc frees compiled code
     * without its lock, and resizes in parallel threads crashed in it. */
    assert_false(vips_vector_isenabled());
    for (int i = 0; i < PAR_INPUTS; i++) {
        sl_image_free(c.want[i]);
        g_free(c.in[i].data);
    }
}

int main(int argc, char **argv)
{
    if (VIPS_INIT(argv[0]))
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decodes_png_keeping_size_and_colours),
        cmocka_unit_test(shrinks_to_max_edge),
        cmocka_unit_test(applies_exif_orientation),
        cmocka_unit_test(flattens_alpha_onto_background),
        cmocka_unit_test(grayscale_becomes_rgb),
        cmocka_unit_test(bad_inputs_fail_with_named_errors),
        cmocka_unit_test(cmyk_jpeg_becomes_srgb),
        cmocka_unit_test(embedded_icc_profile_is_applied),
        cmocka_unit_test(sixteen_bit_png_becomes_8_bit),
        cmocka_unit_test(palette_png_and_gray_jpeg_become_rgb),
        cmocka_unit_test(animation_gives_its_first_frame),
        cmocka_unit_test(decompression_bomb_is_refused_from_the_header),
        cmocka_unit_test(content_decides_the_format_not_the_name),
        cmocka_unit_test(unlisted_formats_are_refused),
        cmocka_unit_test(jpeg_orientation_with_shrink),
        cmocka_unit_test(twelve_megapixel_jpeg_shrinks_to_512),
        cmocka_unit_test(truncated_png_fails),
        cmocka_unit_test(from_rgb_copies),
        cmocka_unit_test(load_file_refuses_a_file_over_max_file_bytes),
        cmocka_unit_test(a_strip_past_max_aspect_ratio_is_refused),
        cmocka_unit_test(encodes_jpeg_shrunk_and_decodable),
        cmocka_unit_test(parallel_decodes_match_a_lone_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
