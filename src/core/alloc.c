/* core/alloc.c — counted allocation with a failure-injection hook.
 * Each block carries a 16-byte header holding its size (16 keeps the
 * payload aligned for any scalar type). */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

#define HEADER 16

static atomic_int_fast64_t live_bytes, peak_bytes;
static atomic_long fail_countdown = -1;

/* A relaxed load first: the compare-and-swap runs only when a new peak is
 * reached, so the counter costs next to nothing on the common path. */
static void add_live(int_fast64_t delta)
{
    int_fast64_t now = atomic_fetch_add_explicit(&live_bytes, delta, memory_order_relaxed) + delta;
    int_fast64_t peak = atomic_load_explicit(&peak_bytes, memory_order_relaxed);
    while (now > peak &&
           !atomic_compare_exchange_weak_explicit(&peak_bytes, &peak, now, memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

static int should_fail(void)
{
    long n = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
    if (n < 0)
        return 0;
    if (n == 0)
        return 1;
    return atomic_fetch_sub(&fail_countdown, 1) <= 0;
}

void *sl_malloc(size_t size)
{
    if (size > SIZE_MAX - HEADER || should_fail())
        return NULL;
    unsigned char *block = malloc(size + HEADER);
    if (!block)
        return NULL;
    memcpy(block, &size, sizeof size);
    add_live((int_fast64_t)size);
    return block + HEADER;
}

void *sl_calloc(size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return NULL;
    void *p = sl_malloc(count * size);
    if (p)
        memset(p, 0, count * size);
    return p;
}

void *sl_realloc(void *ptr, size_t size)
{
    if (!ptr)
        return sl_malloc(size);
    if (size > SIZE_MAX - HEADER || should_fail())
        return NULL;
    unsigned char *block = (unsigned char *)ptr - HEADER;
    size_t old;
    memcpy(&old, block, sizeof old);
    unsigned char *grown = realloc(block, size + HEADER);
    if (!grown)
        return NULL;
    memcpy(grown, &size, sizeof size);
    add_live((int_fast64_t)size - (int_fast64_t)old);
    return grown + HEADER;
}

void *sl_grow(void *arr, size_t n, size_t *cap, size_t elem)
{
    if (n < *cap)
        return arr;
    size_t ncap = *cap ? *cap : 8;
    if (elem == 0 || ncap > SIZE_MAX / 2 / elem)
        return NULL;
    ncap *= 2;
    void *grown = sl_realloc(arr, ncap * elem);
    if (grown)
        *cap = ncap;
    return grown;
}

char *sl_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *copy = sl_malloc(len + 1);
    if (copy) {
        memcpy(copy, s, len);
        copy[len] = '\0';
    }
    return copy;
}

char *sl_strdup(const char *s) { return sl_strndup(s, SIZE_MAX); }

char *sl_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (len < 0)
        return NULL;
    char *s = sl_malloc((size_t)len + 1);
    if (s) {
        va_start(ap, fmt);
        vsnprintf(s, (size_t)len + 1, fmt, ap);
        va_end(ap);
    }
    return s;
}

void sl_free(void *ptr)
{
    if (!ptr)
        return;
    unsigned char *block = (unsigned char *)ptr - HEADER;
    size_t size;
    memcpy(&size, block, sizeof size);
    atomic_fetch_sub_explicit(&live_bytes, (int_fast64_t)size, memory_order_relaxed);
    free(block);
}

int64_t sl_alloc_live_bytes(void)
{
    return (int64_t)atomic_load_explicit(&live_bytes, memory_order_relaxed);
}

int64_t sl_alloc_peak_bytes(void)
{
    return (int64_t)atomic_load_explicit(&peak_bytes, memory_order_relaxed);
}

void sl_alloc_peak_reset(void)
{
    atomic_store_explicit(&peak_bytes, atomic_load_explicit(&live_bytes, memory_order_relaxed),
                          memory_order_relaxed);
}

void sl_alloc_fail_after(long n) { atomic_store(&fail_countdown, n < 0 ? -1 : n); }
