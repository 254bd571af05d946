/* Unit tests: llm/engines/image_cache.c, the vision encoder's outputs kept
 * for images seen again. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "llm/engines/image_cache.h"

static void fill(float *v, size_t n, float base)
{
    for (size_t i = 0; i < n; i++)
        v[i] = base + (float)i;
}

static void ids_name_the_pixels_and_the_size(void **state)
{
    (void)state;
    uint8_t a[2 * 3 * 3], b[2 * 3 * 3];
    memset(a, 7, sizeof a);
    memcpy(b, a, sizeof b);
    char ia[SL_IMAGE_CACHE_ID], ib[SL_IMAGE_CACHE_ID], ic[SL_IMAGE_CACHE_ID];
    assert_true(sl_image_cache_id(a, 2, 3, ia));
    assert_true(sl_image_cache_id(b, 2, 3, ib));
    assert_string_equal(ia, ib);
    /* SHA-256 of eighteen 7s, as `printf '\7%.0s' {1..18} | sha256sum` gives. */
    assert_string_equal(ia, "2x3-15d74f49bd431d569afe29cac7d4cce5f8b84f47b18436fa80be248e220474ca");
    b[17] ^= 1; /* one bit of one pixel */
    assert_true(sl_image_cache_id(b, 2, 3, ib));
    assert_string_not_equal(ia, ib);
    assert_true(sl_image_cache_id(a, 3, 2, ic)); /* the same bytes, another shape */
    assert_string_not_equal(ia, ic);
}

static void a_hit_is_a_copy_of_what_was_put(void **state)
{
    (void)state;
    sl_image_cache *c;
    assert_int_equal(sl_image_cache_new(1 << 20, &c), SL_OK);
    float v[100], w[100];
    fill(v, 100, 1.0f);
    assert_null(sl_image_cache_get(c, "img", 0, 100));
    sl_image_cache_put(c, "img", 0, v, 100);
    fill(v, 100, 99.0f); /* the cache kept its own copy */
    float *got = sl_image_cache_get(c, "img", 0, 100);
    assert_non_null(got);
    fill(w, 100, 1.0f);
    assert_memory_equal(got, w, sizeof w);
    sl_free(got);
    /* Another part, length or id is another entry. */
    assert_null(sl_image_cache_get(c, "img", 1, 100));
    assert_null(sl_image_cache_get(c, "img", 0, 99));
    assert_null(sl_image_cache_get(c, "im", 0, 100));
    assert_null(sl_image_cache_get(c, "", 0, 100));
    uint64_t queries, hits;
    size_t bytes;
    sl_image_cache_counts(c, &queries, &hits, &bytes);
    assert_int_equal(queries, 5); /* "" is no id: not a query */
    assert_int_equal(hits, 1);
    assert_int_equal(bytes, sizeof v);
    sl_image_cache_free(c);
    /* Size 0: no cache, and every call takes it. */
    assert_int_equal(sl_image_cache_new(0, &c), SL_OK);
    assert_null(c);
    sl_image_cache_put(c, "img", 0, v, 100);
    assert_null(sl_image_cache_get(c, "img", 0, 100));
    sl_image_cache_counts(c, &queries, &hits, &bytes);
    assert_int_equal(queries + hits + bytes, 0);
}

static void the_least_recently_used_go_first(void **state)
{
    (void)state;
    sl_image_cache *c;
    enum { N = 256 }; /* 1 KiB an entry, 3 fit */
    assert_int_equal(sl_image_cache_new(3 * N * sizeof(float), &c), SL_OK);
    float v[N];
    fill(v, N, 0.0f);
    sl_image_cache_put(c, "a", 0, v, N);
    sl_image_cache_put(c, "b", 0, v, N);
    sl_image_cache_put(c, "c", 0, v, N);
    sl_free(sl_image_cache_get(c, "a", 0, N)); /* a used again: b is the oldest */
    sl_image_cache_put(c, "d", 0, v, N);
    float *got;
    const char *kept[] = {"a", "c", "d"};
    for (size_t i = 0; i < 3; i++) {
        assert_non_null(got = sl_image_cache_get(c, kept[i], 0, N));
        sl_free(got);
    }
    assert_null(sl_image_cache_get(c, "b", 0, N));
    size_t bytes;
    uint64_t queries, hits;
    sl_image_cache_counts(c, &queries, &hits, &bytes);
    assert_true(bytes <= 3 * N * sizeof(float));
    /* One larger than the whole cache is not kept, and drops nothing. */
    float big[4 * N];
    fill(big, 4 * N, 0.0f);
    sl_image_cache_put(c, "big", 0, big, 4 * N);
    assert_null(sl_image_cache_get(c, "big", 0, 4 * N));
    assert_non_null(got = sl_image_cache_get(c, "d", 0, N));
    sl_free(got);
    /* One twice (two threads encoded it) is kept once. */
    sl_image_cache_put(c, "d", 0, v, N);
    size_t again;
    sl_image_cache_counts(c, &queries, &hits, &again);
    assert_int_equal(again, bytes);
    sl_image_cache_free(c);
}

typedef struct worker {
    sl_image_cache *c;
    int seed, hits;
} worker;

static void *churn(void *arg)
{
    worker *w = arg;
    float v[64];
    char id[32];
    for (int i = 0; i < 2000; i++) {
        /* Each image twice in a row: a thread hits even when it runs
         * alone (40 images cycled through 20 places never would). */
        int k = (i / 2 * 7 + w->seed) % 40;
        snprintf(id, sizeof id, "img%d", k);
        float *got = sl_image_cache_get(w->c, id, 0, 64);
        if (got) {
            fill(v, 64, (float)k);
            if (memcmp(got, v, sizeof v) == 0)
                w->hits++;
            else
                w->hits = -1000000; /* another image's embeddings */
            sl_free(got);
        } else {
            fill(v, 64, (float)k);
            sl_image_cache_put(w->c, id, 0, v, 64);
        }
    }
    return NULL;
}

/* The encoder thread and the engine's share one (TSan runs this). */
static void threads_share_one(void **state)
{
    (void)state;
    sl_image_cache *c;
    assert_int_equal(sl_image_cache_new(20 * 64 * sizeof(float), &c), SL_OK); /* half of them */
    worker w[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){c, i * 13, 0};
        assert_int_equal(pthread_create(&t[i], NULL, churn, &w[i]), 0);
    }
    int hits = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_true(w[i].hits >= 0);
        hits += w[i].hits;
    }
    uint64_t queries, counted;
    size_t bytes;
    sl_image_cache_counts(c, &queries, &counted, &bytes);
    assert_int_equal(queries, 4 * 2000);
    assert_int_equal(counted, (uint64_t)hits);
    assert_true(hits > 0);
    assert_true(bytes <= 20 * 64 * sizeof(float));
    sl_image_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ids_name_the_pixels_and_the_size),
        cmocka_unit_test(a_hit_is_a_copy_of_what_was_put),
        cmocka_unit_test(the_least_recently_used_go_first),
        cmocka_unit_test(threads_share_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
