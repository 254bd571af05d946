/* io/fetch.h — downloading an image named by an http(s) URL (libcurl's
 * easy interface), or an s3:// URL (io/s3.h, its own retries). Only http and https are followed, also
 * across redirects; the body is capped at max_bytes (refused early when the
 * server announces more); transport errors, 5xx and 429 are retried with a
 * growing pause, other HTTP errors are not. Thread-safe: each thread's
 * calls go over its own curl handle and the connections it keeps open
 * (io/curl_conn.h). The caller frees *data with sl_free(). */
#ifndef SL_IO_FETCH_H
#define SL_IO_FETCH_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/status.h"

typedef struct sl_fetch_params {
    long timeout_ms;  /* whole transfer, per try (default 30000) */
    size_t max_bytes; /* default 64 MiB */
    int retries;      /* tries after the first (default 2) */
} sl_fetch_params;

sl_fetch_params sl_fetch_default_params(void);

/* libcurl's global start-up, once for the process (every user of libcurl
 * in io/ calls it before its first handle). */
void sl_fetch_init_curl(void);

/* SL_ERR_IO with a message naming the URL and the cause ("HTTP 404",
 * "larger than N bytes", "timed out"). */
sl_status sl_fetch(const char *url, const sl_fetch_params *params, uint8_t **data, size_t *len);

#endif
