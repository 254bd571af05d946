/* io/fetch.h — downloading an image named by an http(s) URL (libcurl's
 * easy interface), or an s3:// URL (io/s3.h, its own retries); and ranged
 * GETs of an http(s) URL (io/ranged.h reads videos by them). Every request
 * follows one policy: only http and https are followed, also across
 * redirects (5 at most); each try within timeout_ms; transport errors, 5xx
 * and 429 are retried with a growing pause, other HTTP errors are not. A
 * download's body is capped at max_bytes (refused early when the server
 * announces more). A URL on the Hugging Face hub's own host carries
 * $HF_TOKEN as a bearer token (io/hf.h: hf_bearer), which libcurl drops
 * on a redirect to another host. Thread-safe: each thread's
 * calls go over its own curl handle and the connections it keeps open
 * (io/curl_conn.h). The caller frees *data with sl_free(). */
#ifndef SL_IO_FETCH_H
#define SL_IO_FETCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

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

/* One try's options on h (after curl_easy_reset): the policy above, the
 * whole transfer within timeout_ms, libcurl's message into cerr
 * (CURL_ERROR_SIZE bytes), and the hub's token where hf_bearer says.
 * For requests made elsewhere in io/ (io/hf.c's listing). */
void sl_fetch_policy(CURL *h, const char *url, long timeout_ms, char *cerr);

/* The pause before try `attempt` (1, 2, ...): 200 ms, doubling, 5 s at most. */
void sl_fetch_pause(int attempt);

/* A failed try's cause into why (size bytes); true when another try may
 * succeed: transport errors (not a refused scheme, a malformed URL or a
 * redirect loop), 5xx, 429. rc and code: the try's; cerr: libcurl's message. */
bool sl_fetch_failed_try(CURLcode rc, long code, const char *cerr, char *why, size_t size);

/* SL_ERR_IO with a message naming the URL and the cause ("HTTP 404",
 * "larger than N bytes", "timed out"). */
sl_status sl_fetch(const char *url, const sl_fetch_params *params, uint8_t **data, size_t *len);

/* The byte range of a Range header (and CURLOPT_RANGE): "first-last" for
 * len bytes from offset (len > 0), or "-len", the last len, when from_end. */
void sl_fetch_range_spec(char spec[64], uint64_t offset, size_t len, bool from_end);

/* The version of a file its first ranged read saw: its strong ETag (a
 * weak one never matches If-Match), its Last-Modified and its size; etag
 * and modified both empty before that read, or when the server sent
 * neither. */
typedef struct sl_fetch_version {
    char etag[128];
    char modified[64];
    int64_t size; /* -1 when the answer did not say */
} sl_fetch_version;

/* One ranged GET of an http(s) URL (max_bytes unused: len bounds it): up
 * to len bytes from offset into dst (the caller's, len bytes), or the last
 * len bytes when from_end. *got is what came (0 from past the end: a 416),
 * *size the file's size from the answer's Content-Range. A 200 (the server
 * ignores Range) is the answer only when the whole file fits in len and
 * was asked from its start or end; else the transfer is stopped once past
 * len bytes, never read whole, and it is SL_ERR_IO saying so with
 * *no_ranges set (may be NULL). An answer shorter than its Content-Range
 * says is retried as a transport error is. Errors are SL_ERR_IO naming
 * the URL, the range and the cause ("HTTP 404"). *ver (may be NULL):
 * empty, it is set from the answer; set, the request asks for that
 * version (If-Match, else If-Unmodified-Since), and a 412 or an answer of
 * another version is SL_ERR_IO saying the file changed since its first
 * read: the reads of one file never mix two versions of it. An ETag
 * refused (or another one sent) for a file that has a Last-Modified is
 * asked for again by If-Unmodified-Since alone: an answer of the first's
 * Last-Modified and size is the same file from a server that tags it
 * apart (nodes behind a balancer: Apache's inode-based ETags), and the
 * file's reads are keyed by those from then on (its ETag cleared, one
 * warning naming the URL). */
sl_status sl_fetch_range(const char *url, const sl_fetch_params *params, uint64_t offset,
                         size_t len, bool from_end, void *dst, size_t *got, int64_t *size,
                         bool *no_ranges, sl_fetch_version *ver);

#endif
