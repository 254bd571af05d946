/* Unit tests: image/image.c — decode, orient, flatten, convert, shrink, and
 * the errors for bad input. Test images are made here with libvips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>
#include <vips/vips.h>

#include "sluice/image.h"

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
    assert_int_equal(sl_image_decode(b.data, b.len, "many.jpg", &p, &im), SL_ERR_DECODE);
    assert_non_null(strstr(sl_last_error(), "300x200"));
    g_free(b.data);

    assert_int_equal(sl_image_load_file("/nonexistent/x.jpg", NULL, &im), SL_ERR_NOT_FOUND);
    assert_non_null(strstr(sl_last_error(), "/nonexistent/x.jpg"));
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
        cmocka_unit_test(from_rgb_copies),
        cmocka_unit_test(encodes_jpeg_shrunk_and_decodable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
