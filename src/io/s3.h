/* io/s3.h — objects in Amazon S3 and S3-compatible stores (MinIO, Ceph,
 * R2, moto): GET (whole, a byte range, or a range read into the caller's
 * buffer), PUT, multipart upload (and aborting the ones a killed run left),
 * and listing a prefix page by page. Requests are signed by libcurl's AWS
 * Signature Version 4 (CURLOPT_AWS_SIGV4); nothing here computes a
 * signature. Throttling (503 SlowDown, 429) and 5xx answers and transport
 * errors are retried with exponential backoff and jitter; other answers
 * fail with the store's own error code and message, naming the object.
 *
 * Where and who, from the environment as the AWS tools read it:
 * AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN (optional),
 * AWS_REGION (or AWS_DEFAULT_REGION; default us-east-1) and
 * AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) for a compatible store, which
 * is then addressed path-style (ENDPOINT/bucket/key); without it,
 * https://bucket.s3.REGION.amazonaws.com/key. No credentials: requests go
 * unsigned (public buckets). Credentials are never printed: messages name
 * the URL, the endpoint and the key id's last four characters at most.
 *
 * Connections: each thread that makes requests keeps one curl handle and
 * the connections it opened (libcurl's cache, 5 at most, idle ones closed
 * after 118 s), so its next request to the store needs no new TCP or TLS
 * handshake; threads share the DNS cache and TLS sessions. A thread's
 * handle is freed when the thread ends.
 *
 * Thread rules: an sl_s3 is read-only once made; every call may run on any
 * thread at once (each thread uses its own curl handle). Ownership: the caller
 * frees what the calls return (sl_free) and the sl_s3 (sl_s3_free). */
#ifndef SL_IO_S3_H
#define SL_IO_S3_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "sluice/status.h"

typedef struct sl_s3 sl_s3;

typedef struct sl_s3_params {
    long timeout_ms;    /* a try fails when no byte moved for this long, or the
                           connection took this long (default 60000; whole seconds
                           past the first) */
    int retries;        /* tries after the first on a retryable failure (default 5) */
    long backoff_ms;    /* the first pause; doubles each try, with full jitter (default 200) */
    bool connection_per_request; /* a new connection for every request, none kept (for
                                    measuring what reuse saves; default false) */
} sl_s3_params;

sl_s3_params sl_s3_default_params(void);

/* From the environment (above). With params NULL, the defaults changed by
 * SLUICE_S3_TIMEOUT (timeout_ms, in seconds) and AWS_MAX_ATTEMPTS (tries
 * in all: retries + 1): a store that takes the connection and never
 * answers holds a request timeout x tries (6 x 60 s by default) plus the
 * pauses. SL_ERR_INVALID_ARG for a malformed AWS_ENDPOINT_URL, a key id
 * without its secret, or a limit out of range, naming the variable. */
sl_status sl_s3_from_env(const sl_s3_params *params, sl_s3 **out);
/* The process's store: sl_s3_from_env() with the default parameters, made
 * at the first call and kept (thread-safe). NULL with the error set when
 * the environment is wrong. */
const sl_s3 *sl_s3_shared(void);
void sl_s3_free(sl_s3 *s3);

/* What the process's requests did so far (each try counts), and the
 * connections they opened: sl_curl_counts_now (io/curl_conn.h). */

/* "s3://bucket/key..." */
bool sl_s3_is_url(const char *s);
/* Splits an s3:// URL; *key may be "" (the bucket's root). SL_ERR_INVALID_ARG
 * naming the URL when it is not one. */
sl_status sl_s3_split(const char *url, char **bucket, char **key);

/* The object at url, or `length` bytes of it from `offset` (length 0: to
 * its end), at most max_bytes (SL_ERR_TOO_LARGE past it). SL_ERR_NOT_FOUND
 * for a missing object or bucket, SL_ERR_IO for the rest. */
sl_status sl_s3_get(const sl_s3 *s3, const char *url, uint64_t offset, uint64_t length,
                    size_t max_bytes, uint8_t **data, size_t *len);

/* One ranged read: up to `len` bytes of the object at url from `offset`
 * into dst (the caller's, len bytes), or its last `len` bytes when
 * from_end (one request then gives a file's tail and its size). *got is
 * what came: less than len only at the object's end, 0 from there on.
 * *size (may be NULL) is the object's size, from the answer. A store that
 * ignores the Range header is SL_ERR_IO saying so, never wrong bytes. */
sl_status sl_s3_read(const sl_s3 *s3, const char *url, uint64_t offset, size_t len, bool from_end,
                     void *dst, size_t *got, uint64_t *size);

/* sl_s3_read(), all of whose reads see one version of the object: etag
 * ("" before the first read) is filled from the first answer, and later
 * reads send it (If-Match); an object replaced in between is
 * SL_ERR_IO naming it and saying so, never bytes of two versions put
 * together. */
#define SL_S3_ETAG_MAX 128
sl_status sl_s3_read_same(const sl_s3 *s3, const char *url, uint64_t offset, size_t len,
                          bool from_end, void *dst, size_t *got, uint64_t *size,
                          char etag[SL_S3_ETAG_MAX]);

/* The object at url written into fp (from its current position; on a retry
 * the file is cut back there and written again), for inputs too large to
 * hold in memory. */
sl_status sl_s3_download(const sl_s3 *s3, const char *url, FILE *fp);

/* Writes len bytes as the object at url (one PUT). */
sl_status sl_s3_put(const sl_s3 *s3, const char *url, const void *data, size_t len);

/* Uploads a local file as the object at url: one PUT up to part_bytes,
 * else a multipart upload of part_bytes parts (at least 5 MiB, S3's floor;
 * 0: 16 MiB), read from the file one part at a time; a failed upload is
 * aborted, so no half object is ever visible. */
sl_status sl_s3_upload_file(const sl_s3 *s3, const char *path, const char *url,
                            size_t part_bytes);

/* Aborts the multipart uploads in progress under the prefix url
 * (ListMultipartUploads, a page at a time) whose name after the prefix
 * `stale` says is stale: a killed run's unfinished part, which the store
 * keeps (and bills) until aborted. *aborted counts them. */
sl_status sl_s3_abort_uploads(const sl_s3 *s3, const char *url,
                              bool (*stale)(void *user, const char *name), void *user,
                              long *aborted);

/* Conditional writes (S3 since 2024, MinIO, moto), for a lock object:
 * sl_s3_put_if() writes the object only if it does not exist (if_match
 * NULL: If-None-Match: *) or still has ETag if_match; SL_ERR_EXISTS when
 * not (412, or 409 for a write that raced another). *etag: the new
 * object's. sl_s3_get_tagged(): the whole object (at most max_bytes), its
 * ETag, and *age_s: how long ago it was written by the store's own clock
 * (the answer's Date less its Last-Modified; -1 when either is missing),
 * which a lease is judged by whatever the clocks of the machines that
 * wrote and read it say. sl_s3_delete_if(): deletes it only if it still has ETag
 * if_match (SL_ERR_EXISTS when not; no error when it is gone). A store
 * that ignores the conditions writes and deletes unconditionally. */
sl_status sl_s3_put_if(const sl_s3 *s3, const char *url, const void *data, size_t len,
                       const char *if_match, char etag[SL_S3_ETAG_MAX]);
sl_status sl_s3_get_tagged(const sl_s3 *s3, const char *url, size_t max_bytes, uint8_t **data,
                           size_t *len, char etag[SL_S3_ETAG_MAX], long long *age_s);
sl_status sl_s3_delete_if(const sl_s3 *s3, const char *url, const char *if_match);

/* Deletes the object at url (no error when it is missing). */
sl_status sl_s3_delete(const sl_s3 *s3, const char *url);

/* Listing: the objects whose keys start with the URL's key, in key order
 * (S3's), fetched a page (1,000 keys) at a time as they are read. */
typedef struct sl_s3_list sl_s3_list;
sl_status sl_s3_list_open(const sl_s3 *s3, const char *url, sl_s3_list **out);
/* The next object's key (the whole key, valid until the next call) and
 * size; *done at the end. */
sl_status sl_s3_list_next(sl_s3_list *l, const char **key, uint64_t *size, bool *done);
/* Pages of at most max_keys keys from the next on (max-keys): 1 asks
 * whether a prefix holds anything for a small answer. */
void sl_s3_list_limit(sl_s3_list *l, unsigned max_keys);
void sl_s3_list_free(sl_s3_list *l);

#endif
