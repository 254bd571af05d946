/* Unit tests: ledger/idset.c — a repeated id is found with where it was
 * first read, across transaction batches, for many ids; the cost per id is
 * printed (SLUICE_IDSET_IDS=1000000 for the figure in docs/inputs.md); an
 * id SQLite cannot bind is an error, never an id taken for new. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <sqlite3.h>

#include "core/error.h"
#include "ledger/idset.h"
#include "test_long_id.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void repeats_are_found_with_the_first_place(void **state)
{
    sl_idset *s;
    assert_int_equal(sl_idset_open(&s), SL_OK);
    bool seen;
    int64_t in = -7, at = -7;
    assert_int_equal(sl_idset_add(s, "a", 0, 2, &seen, &in, &at), SL_OK);
    assert_false(seen);
    assert_int_equal(sl_idset_add(s, "b", 1, -1, &seen, &in, &at), SL_OK);
    assert_false(seen);
    assert_int_equal(sl_idset_add(s, "a", 3, 9, &seen, &in, &at), SL_OK);
    assert_true(seen);
    assert_int_equal(in, 0);
    assert_int_equal(at, 2);
    /* The first place is kept, however often the id comes back. */
    assert_int_equal(sl_idset_add(s, "a", 4, 4, &seen, &in, &at), SL_OK);
    assert_true(seen && in == 0 && at == 2);
    assert_int_equal(sl_idset_add(s, "b", 5, 5, &seen, &in, &at), SL_OK);
    assert_true(seen && in == 1 && at == -1);
    /* Ids are compared as bytes: these differ. */
    assert_int_equal(sl_idset_add(s, "A", 0, 0, &seen, &in, &at), SL_OK);
    assert_false(seen);
    assert_int_equal(sl_idset_count(s), 3);
    sl_idset_free(s);
    sl_idset_free(NULL);
}

/* An id SQLite refuses to bind (one byte past its string limit): before,
 * the refused binding was NULL, so an add failed as a NOT NULL breach of
 * the table and a lookup found nothing (an id taken for new, SL_OK); both
 * now fail naming the id's size and the limit. */
static void an_id_sqlite_cannot_take_is_an_error(void **state)
{
    int limit = tu_sqlite_limit();
    size_t mapped, n = (size_t)limit + 1;
    char *id = tu_long_id(n, &mapped);
    assert_int_equal(strlen(id), n);
    sl_idset *s;
    assert_int_equal(sl_idset_open(&s), SL_OK);
    char want[96];
    snprintf(want, sizeof want, "(%zu bytes): string or blob too big; an id may be at most %d",
             n, limit);
    bool seen = true, has = true;
    int64_t in, at;
    assert_int_equal(sl_idset_add(s, id, 0, 0, &seen, &in, &at), SL_ERR_IO);
    if (!strstr(sl_last_error(), want))
        fail_msg("add: '%s'", sl_last_error());
    assert_false(seen);
    assert_int_equal(sl_idset_has(s, id, &has), SL_ERR_IO);
    if (!strstr(sl_last_error(), want))
        fail_msg("has: '%s'", sl_last_error());
    assert_false(has);
    /* the set goes on: a short id after it */
    assert_int_equal(sl_idset_add(s, "a", 1, 2, &seen, &in, &at), SL_OK);
    assert_int_equal(sl_idset_has(s, "a", &has), SL_OK);
    assert_true(has);
    assert_int_equal(sl_idset_count(s), 1);
    sl_idset_free(s);
    munmap(id, mapped);
}

static void many_ids_over_many_batches(void **state)
{
    const char *env = getenv("SLUICE_IDSET_IDS");
    long n = env ? atol(env) : 100000;
    sl_idset *s;
    assert_int_equal(sl_idset_open(&s), SL_OK);
    char id[64];
    bool seen;
    int64_t in, at;
    double t0 = now_s();
    for (long i = 0; i < n; i++) {
        /* Not in key order, as real ids are not. */
        snprintf(id, sizeof id, "shard-%04ld.tar/%08lx", i % 1000, (unsigned long)i * 2654435761u);
        assert_int_equal(sl_idset_add(s, id, i % 1000, i, &seen, &in, &at), SL_OK);
        if (seen)
            fail_msg("'%s' seen twice", id);
    }
    double dt = now_s() - t0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("idset: %ld ids in %.2f s (%.2f us each), peak RSS %ld MB\n", n, dt, dt / n * 1e6,
           ru.ru_maxrss / 1024);
    /* Every one of them is found again, with its place. */
    for (long i = 0; i < n; i += n / 97 + 1) {
        snprintf(id, sizeof id, "shard-%04ld.tar/%08lx", i % 1000, (unsigned long)i * 2654435761u);
        assert_int_equal(sl_idset_add(s, id, 0, 0, &seen, &in, &at), SL_OK);
        assert_true(seen);
        assert_int_equal(in, i % 1000);
        assert_int_equal(at, i);
    }
    assert_int_equal(sl_idset_count(s), n);
    sl_idset_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(repeats_are_found_with_the_first_place),
        cmocka_unit_test(many_ids_over_many_batches),
        /* last: its mappings count in the peak RSS printed above (not in
         * memory used: one 1 MiB chunk) */
        cmocka_unit_test(an_id_sqlite_cannot_take_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
