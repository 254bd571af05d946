/* core/buf.h — a growable byte buffer: Parquet pages and chunks being
 * built, and HTTP bodies arriving in pieces (libcurl write callbacks). A
 * zeroed sl_buf is empty and ready; the owner releases it with
 * sl_buf_free(). Not thread-safe: one owner at a time. */
#ifndef SL_CORE_BUF_H
#define SL_CORE_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct sl_buf {
    uint8_t *data;
    size_t len, cap;
} sl_buf;

/* Room for `extra` more bytes past len; false when out of memory. */
bool sl_buf_reserve(sl_buf *b, size_t extra);
/* sl_buf_reserve() growing cap by `most` bytes at most: doubling while that
 * stays within it, else to exactly len + extra; false when even that is
 * more, or out of memory (the buffer then unchanged). For an owner that
 * counts cap against a limit before it grows. */
bool sl_buf_reserve_within(sl_buf *b, size_t extra, size_t most);
/* false when out of memory; the buffer is then unchanged. */
bool sl_buf_append(sl_buf *b, const void *data, size_t len);
void sl_buf_free(sl_buf *b);

/* An HTTP body kept up to `max` bytes: sl_capped_write() is a libcurl
 * write callback (its user pointer an sl_capped) that stops the transfer
 * (returns 0) once the body passes max or memory runs out, saying which. */
typedef struct sl_capped {
    sl_buf buf;
    size_t max;
    bool too_big, nomem;
} sl_capped;

size_t sl_capped_write(char *ptr, size_t size, size_t n, void *capped);

#endif
