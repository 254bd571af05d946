/* io/ranged.h — a file read at offsets, local or remote: the Parquet reader
 * and the tar reader read inputs through it, and the decode stage remote
 * videos, so a file in a bucket or on a web server is read by ranged GETs,
 * never copied whole. A local file is pread(2); an s3:// object (io/s3.h)
 * or an http(s) URL (io/fetch.h's policy: redirects, timeouts, retries)
 * is one GET per read (a range), its size learned from the first answer,
 * and its last SL_RANGED_TAIL bytes kept from the first size query (a
 * Parquet footer then costs no request of its own). With a read-ahead
 * (sl_ranged_set_readahead) small reads are served from a few blocks kept,
 * each fetched by one request, longer ones for a sequential run. Reads past the end are short, never
 * errors. Thread rules: one thread at a time per sl_ranged. Ownership: the
 * caller frees it with sl_ranged_free() (NULL accepted). */
#ifndef SL_IO_RANGED_H
#define SL_IO_RANGED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/status.h"

/* What the first size query of an object fetches from its end. */
#define SL_RANGED_TAIL (64u << 10)

typedef struct sl_ranged sl_ranged;

typedef struct sl_ranged_params {
    long timeout_ms;    /* an http(s) request's, per try (default 30000, as io/fetch.h) */
    int retries;        /* an http(s) request's tries after the first (default 2) */
    /* Bytes fetched in all (every answer's body, read-ahead included), at
     * most: the read that would pass it fails SL_ERR_TOO_LARGE. 0: no bound
     * (the default). A local file is not bounded. */
    uint64_t max_bytes;
} sl_ranged_params;

sl_ranged_params sl_ranged_default_params(void);

/* `path`: a local file, an s3:// or an http(s) URL. Nothing is requested
 * yet for a remote one (its absence shows at the first read); a local file
 * is opened here: SL_ERR_NOT_FOUND / SL_ERR_IO naming it, with strerror.
 * An s3:// object's timeouts and retries are io/s3.h's. params NULL: the
 * defaults. */
sl_status sl_ranged_open_with(const char *path, const sl_ranged_params *params,
                              sl_ranged **out);
/* sl_ranged_open_with(path, NULL, out). */
sl_status sl_ranged_open(const char *path, sl_ranged **out);

/* From now on, reads shorter than `most` bytes are served from blocks, each
 * fetched by one request, `blocks` of them kept (the least recently used
 * dropped; `most` bytes of memory each): a read that no kept block holds
 * fetches a block from its offset, `first` bytes long, or twice as long as
 * the last fetch (up to `most`) when it goes on where that one ended. So
 * FFmpeg's 32 KiB reads of a video cost a request per block, not per read:
 * a run read sequentially (a GOP) in a few requests that grow with it, and
 * a jump (a seek) fetching little it does not use. Longer reads go to the
 * file as they are. first 0 turns it off. SL_ERR_NOMEM. */
sl_status sl_ranged_set_readahead(sl_ranged *r, size_t first, size_t most, int blocks);

bool sl_ranged_is_remote(const sl_ranged *r);
const char *sl_ranged_path(const sl_ranged *r);

/* The size in bytes (an object's first call asks the store for its tail,
 * unless a read told it already). */
sl_status sl_ranged_size(sl_ranged *r, uint64_t *size);

/* Up to len bytes at offset into dst; *got < len only at the end. Errors
 * name the path: SL_ERR_NOT_FOUND (no such object in S3; a 404 from an
 * http(s) server is SL_ERR_IO, as io/fetch.h says), SL_ERR_TOO_LARGE
 * (past max_bytes), SL_ERR_IO (the rest; sl_ranged_ignores_ranges() tells
 * an http(s) server that answers a Range with the whole file). */
sl_status sl_ranged_read(sl_ranged *r, void *dst, size_t len, uint64_t offset, size_t *got);

/* Did an http(s) server answer a Range request with the whole file (a 200)?
 * Then no read past what its first answer held can succeed. */
bool sl_ranged_ignores_ranges(const sl_ranged *r);

/* Reads (preads, or GETs) made so far, for logs and tests. */
uint64_t sl_ranged_requests(const sl_ranged *r);
/* Bytes those reads brought (what max_bytes bounds). */
uint64_t sl_ranged_bytes_read(const sl_ranged *r);

void sl_ranged_free(sl_ranged *r);

#endif
