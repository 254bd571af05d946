/* job/gallery: the live ring keeps the newest rows, newest first; the
 * sample is a fixed-size set that does not depend on the order rows finish
 * in and every row of it was asked for a thumbnail at decode time;
 * failures are counted by stage and class; a reader thread can read while
 * the writer adds (TSan build). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/alloc.h"
#include "job/gallery.h"

static const uint8_t jpeg[] = {0xff, 0xd8, 0xff, 0xd9};

static void add_row(gallery *g, uint64_t index, bool with_thumb)
{
    char id[32], caption[32];
    snprintf(id, sizeof id, "img%llu.jpg", (unsigned long long)index);
    snprintf(caption, sizeof caption, "caption %llu", (unsigned long long)index);
    gallery_row r = {index, id, caption, NULL, NULL, SL_OK,
                     with_thumb ? jpeg : NULL, with_thumb ? sizeof jpeg : 0, 1};
    gallery_add(g, &r);
}

static void live_ring_keeps_the_newest(void **state)
{
    gallery_params p = gallery_default_params();
    p.live_n = 4;
    gallery *g = gallery_new(&p);
    assert_non_null(g);
    for (uint64_t i = 0; i < 10; i++)
        add_row(g, i, i != 8); /* row 8 has no thumbnail: not shown live */
    json_t *live = gallery_live_json(g);
    assert_int_equal(json_array_size(live), 4);
    uint64_t want[] = {9, 7, 6, 5};
    for (size_t k = 0; k < 4; k++) {
        json_t *o = json_array_get(live, k);
        assert_int_equal(json_integer_value(json_object_get(o, "index")), want[k]);
        char cap[32], thumb[32];
        snprintf(cap, sizeof cap, "caption %llu", (unsigned long long)want[k]);
        snprintf(thumb, sizeof thumb, "/thumb/%llu.jpg", (unsigned long long)want[k]);
        assert_string_equal(json_string_value(json_object_get(o, "caption")), cap);
        assert_string_equal(json_string_value(json_object_get(o, "thumb")), thumb);
    }
    json_decref(live);
    uint8_t *out;
    size_t len;
    assert_int_equal(gallery_thumb(g, 9, &out, &len), SL_OK);
    assert_int_equal(len, sizeof jpeg);
    assert_memory_equal(out, jpeg, len);
    sl_free(out);
    /* Row 1 left the ring; it may be in the sample (which holds them all
     * here, 10 < 64), so ask with a sample too small to hold it. */
    gallery_free(g);
    p.sample_n = 1;
    g = gallery_new(&p);
    for (uint64_t i = 0; i < 10; i++)
        add_row(g, i, true);
    const gallery_item *items;
    assert_int_equal(gallery_sample(g, &items), 1);
    uint64_t kept = items[0].index, gone = kept == 0 ? 1 : 0;
    assert_int_equal(gallery_thumb(g, gone, &out, &len), SL_ERR_NOT_FOUND);
    assert_int_equal(gallery_thumb(g, kept, &out, &len), SL_OK);
    sl_free(out);
    gallery_free(g);
}

/* Rows offered in input order and in reverse order give the same sample,
 * of sample_n rows, each of which was wanted for a thumbnail when decoded. */
static void sample_is_order_free_and_thumbnailed(void **state)
{
    enum { N = 1000, K = 16 };
    gallery_params p = gallery_default_params();
    p.sample_n = K;
    p.live_interval_ms = 1 << 30; /* only sample candidates get thumbnails */
    p.seed = 7;
    uint64_t sets[2][K];
    for (int pass = 0; pass < 2; pass++) {
        gallery *g = gallery_new(&p);
        int thumbs = 0;
        for (uint64_t k = 0; k < N; k++) {
            uint64_t i = pass == 0 ? k : N - 1 - k;
            bool want = gallery_wants_thumb(g, i);
            thumbs += want;
            add_row(g, i, want);
        }
        const gallery_item *items;
        assert_int_equal(gallery_sample(g, &items), K);
        for (size_t k = 0; k < K; k++) {
            assert_non_null(items[k].thumb);
            if (k)
                assert_true(items[k - 1].index < items[k].index);
            sets[pass][k] = items[k].index;
        }
        /* Bottom-k: about K (1 + ln(N/K)) candidates, far fewer than N, plus
         * the one live thumbnail the first call takes. */
        assert_true(thumbs < N / 4);
        gallery_free(g);
    }
    assert_memory_equal(sets[0], sets[1], sizeof sets[0]);
}

static void failures_counted_by_stage_and_class(void **state)
{
    gallery *g = gallery_new(NULL);
    gallery_row bad = {1, "a.jpg", NULL, "a.jpg: empty file", "decode", SL_ERR_DECODE, NULL, 0, 0};
    gallery_add(g, &bad);
    bad.index = 2;
    gallery_add(g, &bad);
    gallery_row gone = {3, "b.jpg", NULL, "b.jpg: cannot open", "decode", SL_ERR_NOT_FOUND,
                        NULL, 0, 1};
    gallery_add(g, &gone);
    /* An image of three tasks with --rows-per-task: three failed rows. */
    gallery_row eng = {4, "c.jpg", NULL, "c.jpg: context", "engine", SL_ERR_TOO_LONG, NULL, 0, 3};
    gallery_add(g, &eng);
    add_row(g, 5, true);
    json_t *f = gallery_failures_json(g);
    char *text = json_dumps(f, JSON_COMPACT);
    assert_string_equal(text, "[{\"stage\":\"decode\",\"class\":\"decode\",\"rows\":2},"
                              "{\"stage\":\"decode\",\"class\":\"not_found\",\"rows\":1},"
                              "{\"stage\":\"engine\",\"class\":\"too_large\",\"rows\":3}]");
    free(text);
    json_decref(f);
    const gallery_item *items;
    assert_int_equal(gallery_sample(g, &items), 5);
    assert_string_equal(items[0].error_class, "decode");
    assert_null(items[4].error_class);
    gallery_free(g);
}

static atomic_bool writing;

static void *reader(void *arg)
{
    gallery *g = arg;
    while (atomic_load(&writing)) {
        json_t *live = gallery_live_json(g);
        assert_non_null(live);
        json_t *o = json_array_get(live, 0);
        uint8_t *out;
        size_t len;
        if (o && gallery_thumb(g, (uint64_t)json_integer_value(json_object_get(o, "index")), &out,
                               &len) == SL_OK)
            sl_free(out);
        json_decref(live);
        json_decref(gallery_failures_json(g));
    }
    return NULL;
}

static void readers_while_the_writer_adds(void **state)
{
    gallery_params p = gallery_default_params();
    p.live_n = 8;
    p.sample_n = 8;
    gallery *g = gallery_new(&p);
    atomic_store(&writing, true);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, reader, g), 0);
    for (uint64_t i = 0; i < 5000; i++)
        add_row(g, i, gallery_wants_thumb(g, i) || i % 3 == 0 || i == 4999);
    atomic_store(&writing, false);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    json_t *live = gallery_live_json(g);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(live, 0), "index")), 4999);
    json_decref(live);
    gallery_free(g);
}

/* A 1 MB id and caption (and error) are kept cut, at a character's start,
 * saying how much was left out: each of the live_n + sample_n items copied
 * them whole, so the gallery's memory grew with the data's text. */
static void long_texts_are_kept_cut(void **state)
{
    (void)state;
    gallery *g = gallery_new(&(gallery_params){.live_n = 2, .sample_n = 2, .thumb_edge = 160});
    assert_non_null(g);
    size_t n = 1 << 20;
    char *big = malloc(n + 1);
    assert_non_null(big);
    for (size_t i = 0; i < n; i += 2) /* "é" (two bytes) repeated, so an odd cut splits one */
        memcpy(big + i, "\xc3\xa9", 2);
    big[n] = '\0';
    gallery_row ok = {0, big + 1, big, NULL, NULL, SL_OK, jpeg, sizeof jpeg, 1};
    gallery_add(g, &ok);
    gallery_row bad = {1, "short.jpg", NULL, big, "decode", SL_ERR_DECODE, jpeg, sizeof jpeg, 1};
    gallery_add(g, &bad);
    const gallery_item *items;
    assert_int_equal(gallery_sample(g, &items), 2);
    for (int k = 0; k < 2; k++) {
        const gallery_item *it = &items[k];
        const char *texts[] = {it->index == 0 ? it->id : it->error,
                               it->index == 0 ? it->caption : NULL};
        for (int t = 0; t < 2 && texts[t]; t++) {
            const char *x = texts[t], *more = strstr(x, "\u2026 (");
            assert_non_null(more);
            size_t kept = (size_t)(more - x);
            assert_true(kept <= GALLERY_TEXT_MAX && kept + 3 >= GALLERY_TEXT_MAX);
            size_t from = x == it->id ? 1 : 0; /* the id is big from its second byte */
            assert_true(((unsigned char)big[from + kept] & 0xC0) != 0x80); /* at a start */
            assert_memory_equal(x, big + from, kept);
            char tail[64];
            snprintf(tail, sizeof tail, "\u2026 (%zu bytes more)", n - from - kept);
            assert_string_equal(more, tail);
        }
    }
    json_t *live = gallery_live_json(g);
    assert_int_equal(json_array_size(live), 2);
    assert_true(strlen(json_string_value(json_object_get(json_array_get(live, 1), "caption"))) <
                GALLERY_TEXT_MAX + 64);
    json_decref(live);
    gallery_free(g);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(live_ring_keeps_the_newest),
        cmocka_unit_test(sample_is_order_free_and_thumbnailed),
        cmocka_unit_test(failures_counted_by_stage_and_class),
        cmocka_unit_test(readers_while_the_writer_adds),
        cmocka_unit_test(long_texts_are_kept_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
