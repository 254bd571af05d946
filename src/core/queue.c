/* core/queue.c — mutex + condition variables around a ring of row pointers.
 * FIFO mode: ring[head .. head+count). Ordered mode: a row with seq s sits
 * in ring[s % capacity]; rows leave from next_seq upwards. The copies of an
 * input (sl_row_emit) share its seq: they wait in its slot, chained by copy
 * number, and the slot leaves once the whole group is there. */
#include <pthread.h>
#include <time.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/queue.h"

struct sl_queue {
    pthread_mutex_t mu;
    pthread_cond_t not_empty, not_full;
    sl_row **ring;
    size_t cap, head, count;
    uint64_t bytes, max_bytes;
    int producers;
    bool ordered, aborted;
    bool sink;                /* the last stage's queue: rows arrive in their groups here */
    uint64_t next_seq;
    void (*free_row)(sl_row *row, void *user);
    void *free_user;
};

uint64_t sl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

sl_queue *sl_queue_new(size_t capacity, uint64_t max_bytes, int producers, bool ordered)
{
    sl_queue *q = sl_calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->ring = sl_calloc(capacity ? capacity : 1, sizeof *q->ring);
    if (!q->ring) {
        sl_free(q);
        return NULL;
    }
    q->cap = capacity ? capacity : 1;
    q->max_bytes = max_bytes ? max_bytes : UINT64_MAX;
    q->producers = producers;
    q->ordered = ordered;
    pthread_mutex_init(&q->mu, NULL);
    sl_cond_init_monotonic(&q->not_empty);
    sl_cond_init_monotonic(&q->not_full);
    return q;
}

void sl_queue_set_sink(sl_queue *q) { q->sink = true; }

void sl_queue_set_row_free(sl_queue *q, void (*free_row)(sl_row *row, void *user), void *user)
{
    q->free_row = free_row;
    q->free_user = user;
}

void sl_queue_free(sl_queue *q)
{
    if (!q)
        return;
    for (size_t i = 0; i < q->cap; i++) {
        sl_row *r = q->ordered ? q->ring[i] : (i < q->count ? q->ring[(q->head + i) % q->cap] : NULL);
        while (r) {
            sl_row *next = q->ordered ? r->next : NULL;
            if (q->free_row)
                q->free_row(r, q->free_user);
            r = next;
        }
    }
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->not_empty);
    pthread_cond_destroy(&q->not_full);
    sl_free(q->ring);
    sl_free(q);
}

/* FIFO: room for one more row of `bytes`? A row larger than max_bytes
 * still enters an empty queue, or nothing would ever move. */
static bool has_room(const sl_queue *q, uint64_t bytes)
{
    if (q->count >= q->cap)
        return false;
    return q->count == 0 || q->bytes + bytes <= q->max_bytes;
}

size_t sl_queue_push(sl_queue *q, sl_row *const *rows, size_t n, uint64_t *blocked_ns)
{
    pthread_mutex_lock(&q->mu);
    for (size_t i = 0; i < n; i++) {
        sl_row *r = rows[i];
        if (q->ordered) {
            /* The window wait upstream guarantees the slot is free, or holds
             * rows of the same input: then r joins them, in copy order. */
            sl_row **at = &q->ring[r->seq % q->cap];
            while (*at && (*at)->copy < r->copy)
                at = &(*at)->next;
            r->next = *at;
            *at = r;
        } else {
            if (!has_room(q, r->bytes) && !q->aborted) {
                uint64_t t0 = sl_now_ns();
                pthread_cond_broadcast(&q->not_empty); /* let consumers take what is here */
                while (!has_room(q, r->bytes) && !q->aborted)
                    pthread_cond_wait(&q->not_full, &q->mu);
                if (blocked_ns)
                    *blocked_ns += sl_now_ns() - t0;
            }
            if (q->aborted) {
                pthread_cond_broadcast(&q->not_empty);
                pthread_mutex_unlock(&q->mu);
                return i;
            }
            q->ring[(q->head + q->count) % q->cap] = r;
        }
        if (q->sink) {
            /* Counted only once in place (a wait for room above lets other
             * pushers in): the row that completes its group leaves last. */
            if (r->group)
                r->group->arrived++;
            r->completes_input = !q->ordered && sl_row_group_all_arrived(r);
        }
        q->count++;
        q->bytes += r->bytes;
    }
    pthread_cond_broadcast(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
    return n;
}

static bool can_pop(const sl_queue *q)
{
    if (q->ordered) {
        const sl_row *r = q->ring[q->next_seq % q->cap];
        return r && (!q->sink || sl_row_group_all_arrived(r));
    }
    return q->count > 0;
}

static size_t take(sl_queue *q, sl_row **out, size_t n, size_t max)
{
    while (n < max && can_pop(q)) {
        sl_row *r;
        if (q->ordered) {
            size_t slot = q->next_seq % q->cap;
            r = q->ring[slot];
            q->ring[slot] = r->next;
            r->next = NULL;
            if (!q->ring[slot]) { /* the input's last row */
                r->completes_input = q->sink;
                q->next_seq++;
            }
        } else {
            r = q->ring[q->head];
            q->head = (q->head + 1) % q->cap;
        }
        q->count--;
        q->bytes -= r->bytes;
        out[n++] = r;
    }
    return n;
}

size_t sl_queue_pop(sl_queue *q, sl_row **out, size_t max, bool wait, int flush_ms,
                    uint64_t *idle_ns, bool *closed)
{
    *closed = false;
    pthread_mutex_lock(&q->mu);
    if (wait && !can_pop(q) && q->producers > 0 && !q->aborted) {
        uint64_t t0 = sl_now_ns();
        while (!can_pop(q) && q->producers > 0 && !q->aborted)
            pthread_cond_wait(&q->not_empty, &q->mu);
        if (idle_ns)
            *idle_ns += sl_now_ns() - t0;
    }
    if (q->aborted) {
        *closed = true;
        pthread_mutex_unlock(&q->mu);
        return 0;
    }
    size_t n = take(q, out, 0, max);
    if (n > 0 && n < max && flush_ms > 0 && q->producers > 0) {
        /* A partial batch waits a little for company, then goes anyway. */
        struct timespec deadline;
        sl_deadline_after(flush_ms, &deadline);
        while (n < max && q->producers > 0 && !q->aborted) {
            pthread_cond_broadcast(&q->not_full); /* room we made lets producers refill */
            int rc = pthread_cond_timedwait(&q->not_empty, &q->mu, &deadline);
            n = take(q, out, n, max);
            if (rc != 0)
                break;
        }
    }
    if (n == 0 && q->producers == 0 && q->count == 0)
        *closed = true;
    if (n > 0)
        pthread_cond_broadcast(&q->not_full);
    pthread_mutex_unlock(&q->mu);
    return n;
}

bool sl_queue_wait_window(sl_queue *q, uint64_t seq, uint64_t *blocked_ns)
{
    pthread_mutex_lock(&q->mu);
    if (seq >= q->next_seq + q->cap && !q->aborted) {
        uint64_t t0 = sl_now_ns();
        while (seq >= q->next_seq + q->cap && !q->aborted)
            pthread_cond_wait(&q->not_full, &q->mu);
        if (blocked_ns)
            *blocked_ns += sl_now_ns() - t0;
    }
    bool ok = !q->aborted;
    pthread_mutex_unlock(&q->mu);
    return ok;
}

void sl_queue_producer_done(sl_queue *q)
{
    pthread_mutex_lock(&q->mu);
    q->producers--;
    pthread_cond_broadcast(&q->not_empty);
    pthread_mutex_unlock(&q->mu);
}

void sl_queue_abort(sl_queue *q)
{
    pthread_mutex_lock(&q->mu);
    q->aborted = true;
    pthread_cond_broadcast(&q->not_empty);
    pthread_cond_broadcast(&q->not_full);
    pthread_mutex_unlock(&q->mu);
}

void sl_queue_depth(sl_queue *q, uint64_t *rows, uint64_t *bytes)
{
    pthread_mutex_lock(&q->mu);
    *rows = q->count;
    *bytes = q->bytes;
    pthread_mutex_unlock(&q->mu);
}
