/* Unit tests: core/queue.c — bounds, blocking, wake-ups, close, abort,
 * ordered release, flush timeout. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/queue.h"

static sl_row rows[64];

static void init_rows(void)
{
    for (int i = 0; i < 64; i++)
        rows[i] = (sl_row){.seq = (uint64_t)i, .bytes = 100};
}

static void fifo_order_and_close(void **state)
{
    init_rows();
    sl_queue *q = sl_queue_new(8, 0, 1, false);
    sl_row *in[5] = {&rows[0], &rows[1], &rows[2], &rows[3], &rows[4]};
    assert_int_equal(sl_queue_push(q, in, 5, NULL), 5);
    uint64_t n_rows, n_bytes;
    sl_queue_depth(q, &n_rows, &n_bytes);
    assert_int_equal(n_rows, 5);
    assert_int_equal(n_bytes, 500);
    sl_row *out[8];
    bool closed;
    assert_int_equal(sl_queue_pop(q, out, 3, true, 0, NULL, &closed), 3);
    assert_ptr_equal(out[0], &rows[0]);
    assert_ptr_equal(out[2], &rows[2]);
    sl_queue_producer_done(q);
    assert_int_equal(sl_queue_pop(q, out, 8, true, 50, NULL, &closed), 2);
    assert_ptr_equal(out[1], &rows[4]);
    assert_int_equal(sl_queue_pop(q, out, 8, true, 0, NULL, &closed), 0);
    assert_true(closed);
    sl_queue_free(q);
}

typedef struct pusher {
    sl_queue *q;
    sl_row **rows;
    size_t n;
    atomic_int done;
    size_t result;
} pusher;

static void *push_thread(void *arg)
{
    pusher *p = arg;
    p->result = sl_queue_push(p->q, p->rows, p->n, NULL);
    atomic_store(&p->done, 1);
    return NULL;
}

static void push_blocks_when_full_until_a_pop(void **state)
{
    init_rows();
    sl_queue *q = sl_queue_new(2, 0, 1, false);
    sl_row *in[3] = {&rows[0], &rows[1], &rows[2]};
    pusher p = {q, in, 3, 0, 0};
    pthread_t t;
    pthread_create(&t, NULL, push_thread, &p);
    usleep(50000);
    assert_int_equal(atomic_load(&p.done), 0); /* the third row waits */
    sl_row *out[1];
    bool closed;
    assert_int_equal(sl_queue_pop(q, out, 1, true, 0, NULL, &closed), 1);
    pthread_join(t, NULL);
    assert_int_equal(p.result, 3);
    uint64_t n_rows, n_bytes;
    sl_queue_depth(q, &n_rows, &n_bytes);
    assert_int_equal(n_rows, 2);
    sl_queue_free(q);
}

static void byte_bound_blocks_but_admits_into_empty(void **state)
{
    init_rows();
    rows[0].bytes = 1000; /* larger than the whole bound */
    rows[1].bytes = 10;
    sl_queue *q = sl_queue_new(16, 500, 1, false);
    sl_row *first[1] = {&rows[0]};
    assert_int_equal(sl_queue_push(q, first, 1, NULL), 1); /* empty queue: admitted */
    sl_row *second[1] = {&rows[1]};
    pusher p = {q, second, 1, 0, 0};
    pthread_t t;
    pthread_create(&t, NULL, push_thread, &p);
    usleep(50000);
    assert_int_equal(atomic_load(&p.done), 0); /* over the byte bound: waits */
    sl_row *out[1];
    bool closed;
    sl_queue_pop(q, out, 1, true, 0, NULL, &closed);
    pthread_join(t, NULL);
    assert_int_equal(p.result, 1);
    sl_queue_free(q);
}

static void abort_wakes_blocked_push_and_pop(void **state)
{
    init_rows();
    sl_queue *q = sl_queue_new(1, 0, 1, false);
    sl_row *in[2] = {&rows[0], &rows[1]};
    pusher p = {q, in, 2, 0, 9};
    pthread_t t;
    pthread_create(&t, NULL, push_thread, &p);
    /* The abort comes once the first row is in: after a fixed sleep alone it
     * came before a late thread's push, which then took no row at all. */
    uint64_t n_rows = 0, n_bytes;
    for (int ms = 0; n_rows == 0 && ms < 30000; ms++) {
        usleep(1000);
        sl_queue_depth(q, &n_rows, &n_bytes);
    }
    assert_int_equal(n_rows, 1);
    usleep(30000); /* and the pusher waits for room for the second by now, mostly */
    sl_queue_abort(q);
    pthread_join(t, NULL);
    assert_int_equal(p.result, 1); /* the first row went in, the second did not */
    sl_row *out[1];
    bool closed;
    assert_int_equal(sl_queue_pop(q, out, 1, true, 0, NULL, &closed), 0);
    assert_true(closed);
    sl_queue_free(q);
}

static void ordered_releases_in_seq_order(void **state)
{
    init_rows();
    sl_queue *q = sl_queue_new(8, 0, 1, true);
    sl_row *in[3] = {&rows[2], &rows[0], &rows[3]};
    assert_int_equal(sl_queue_push(q, in, 3, NULL), 3);
    sl_row *out[8];
    bool closed;
    assert_int_equal(sl_queue_pop(q, out, 8, true, 0, NULL, &closed), 1); /* only seq 0 */
    assert_ptr_equal(out[0], &rows[0]);
    assert_int_equal(sl_queue_pop(q, out, 8, false, 0, NULL, &closed), 0); /* 1 missing */
    sl_row *one[1] = {&rows[1]};
    assert_int_equal(sl_queue_push(q, one, 1, NULL), 1);
    assert_int_equal(sl_queue_pop(q, out, 8, true, 0, NULL, &closed), 3);
    assert_int_equal(out[0]->seq, 1);
    assert_int_equal(out[1]->seq, 2);
    assert_int_equal(out[2]->seq, 3);
    /* The window: seq 4..11 fit (next is 4), seq 12 would wait. */
    assert_true(sl_queue_wait_window(q, 11, NULL));
    sl_queue_free(q);
}

static void partial_batch_flushes_after_timeout(void **state)
{
    init_rows();
    sl_queue *q = sl_queue_new(16, 0, 1, false);
    sl_row *in[3] = {&rows[0], &rows[1], &rows[2]};
    sl_queue_push(q, in, 3, NULL);
    sl_row *out[10];
    bool closed;
    uint64_t t0 = sl_now_ns();
    size_t n = sl_queue_pop(q, out, 10, true, 30, NULL, &closed);
    uint64_t waited_ms = (sl_now_ns() - t0) / 1000000;
    assert_int_equal(n, 3);
    assert_false(closed);
    assert_true(waited_ms >= 25); /* it waited for company... */
    assert_true(waited_ms < 2000); /* ...then went */
    sl_queue_free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fifo_order_and_close),
        cmocka_unit_test(push_blocks_when_full_until_a_pop),
        cmocka_unit_test(byte_bound_blocks_but_admits_into_empty),
        cmocka_unit_test(abort_wakes_blocked_push_and_pop),
        cmocka_unit_test(ordered_releases_in_seq_order),
        cmocka_unit_test(partial_batch_flushes_after_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
