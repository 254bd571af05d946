/* core/alloc.h — every heap allocation in libsluice goes through here, so
 * live bytes are counted (for the memory budget) and tests can make the Nth
 * allocation fail to prove error paths. Thread-safe. Memory from sl_malloc
 * and friends is freed with sl_free, never free(). */
#ifndef SL_CORE_ALLOC_H
#define SL_CORE_ALLOC_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

void *sl_malloc(size_t size);
void *sl_calloc(size_t count, size_t size);
void *sl_realloc(void *ptr, size_t size);
char *sl_strdup(const char *s);
char *sl_strndup(const char *s, size_t n);
void sl_free(void *ptr);
/* Room for one more element: `arr` (which may be NULL) holds n of *cap
 * elements of `elem` bytes. Returns arr itself while n < *cap, else arr
 * grown to twice *cap (16 at first) with *cap updated, or NULL when out of
 * memory or past SIZE_MAX, arr then untouched and still the caller's. So
 * each growing array is `T *g = sl_grow(a, n, &cap, sizeof *a); if (!g)
 * fail; a = g;`. */
void *sl_grow(void *arr, size_t n, size_t *cap, size_t elem);
/* printf into a new string; NULL when out of memory. */
char *sl_asprintf(const char *fmt, ...) SL_PRINTF(1, 2);

/* Bytes currently allocated through this module. */
int64_t sl_alloc_live_bytes(void);
/* The most live bytes seen since the last sl_alloc_peak_reset() (which sets
 * it to the live bytes of that moment): tests bound what an operation
 * allocates at its worst, not only what it keeps. */
int64_t sl_alloc_peak_bytes(void);
void sl_alloc_peak_reset(void);
/* Test hook: after `n` more successful allocations, every one fails until
 * reset with a negative n. */
void sl_alloc_fail_after(long n);

#endif
