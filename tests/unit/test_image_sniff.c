/* Format sniffing from parallel decode workers: bytes that no allowed
 * loader takes are named by the blocked ones (ImageMagick's among them)
 * one worker at a time. The ThreadSanitizer build runs this (label
 * concurrency); ImageMagick is not in tests/tsan.supp, so its sniffer
 * asked from two threads at once is a reported race. */
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/error.h"
#include "sluice/image.h"

enum { WORKERS = 4, ROUNDS = 25 };

/* A 2x2 24-bit BMP: a format only ImageMagick reads, by its "BM" magic. */
static unsigned char bmp[70];

static void make_bmp(void)
{
    static const unsigned char header[54] = {
        'B', 'M', 70, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0, /* file header */
        40, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 1, 0, 24, 0, /* info: 2x2, 24 bits */
        0, 0, 0, 0, 16, 0, 0, 0, 0x13, 0x0b, 0, 0, 0x13, 0x0b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    };
    memcpy(bmp, header, sizeof header);
    memset(bmp + sizeof header, 0x80, sizeof bmp - sizeof header);
}

struct outcome {
    int garbage_refused, bmp_named, jpeg_decoded;
};

static void *worker(void *arg)
{
    struct outcome *seen = arg;
    char garbage[256];
    char jpeg_path[4096];
    snprintf(jpeg_path, sizeof jpeg_path, "%s/variants/chelsea_thumb48.jpg", getenv("SLUICE_SAMPLES"));
    for (int round = 0; round < ROUNDS; round++) {
        for (size_t i = 0; i < sizeof garbage; i++)
            garbage[i] = (char)(i * 37 + (size_t)round * 11 + 5);
        sl_image *im = NULL;
        if (sl_image_decode(garbage, sizeof garbage, "noise.jpg", NULL, &im) == SL_ERR_DECODE &&
            strstr(sl_last_error(), "noise.jpg: not an image sluice can read (format not recognised"))
            seen->garbage_refused++;
        sl_image_free(im);
        im = NULL;
        if (sl_image_decode(bmp, sizeof bmp, "old.bmp", NULL, &im) == SL_ERR_DECODE &&
            strstr(sl_last_error(), "old.bmp: not an image sluice can read (a format only "
                                    "ImageMagick reads"))
            seen->bmp_named++;
        sl_image_free(im);
        im = NULL;
        if (sl_image_load_file(jpeg_path, NULL, &im) == SL_OK && sl_image_width(im) == 48)
            seen->jpeg_decoded++;
        sl_image_free(im);
    }
    return NULL;
}

static void workers_sniff_garbage_and_refused_formats_at_once(void **state)
{
    (void)state;
    make_bmp();
    pthread_t threads[WORKERS];
    struct outcome seen[WORKERS] = {{0}};
    for (int i = 0; i < WORKERS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, worker, &seen[i]), 0);
    for (int i = 0; i < WORKERS; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(seen[i].garbage_refused, ROUNDS);
        assert_int_equal(seen[i].bmp_named, ROUNDS);
        assert_int_equal(seen[i].jpeg_decoded, ROUNDS);
    }
}

int main(void)
{
    assert_int_equal(sl_image_init(), SL_OK);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(workers_sniff_garbage_and_refused_formats_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
