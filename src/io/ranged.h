/* io/ranged.h — a file read at offsets, local or an object in S3 (io/s3.h):
 * the Parquet reader and the tar reader read inputs through it, so a file
 * in a bucket is read by ranged GETs, never copied whole to disk. A local
 * file is pread(2); an s3:// object is one GET per read (a range; retried
 * as io/s3.h retries), its size learned from the first answer, and its last
 * SL_RANGED_TAIL bytes kept from the first size query (a Parquet footer
 * then costs no request of its own). Reads past the end are short, never
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

/* `path`: a local file or an s3:// URL. Nothing is requested yet for an
 * object (its absence shows at the first read); a local file is opened
 * here: SL_ERR_NOT_FOUND / SL_ERR_IO naming it, with strerror. */
sl_status sl_ranged_open(const char *path, sl_ranged **out);

bool sl_ranged_is_remote(const sl_ranged *r);
const char *sl_ranged_path(const sl_ranged *r);

/* The size in bytes (an object's first call asks the store for its tail). */
sl_status sl_ranged_size(sl_ranged *r, uint64_t *size);

/* Up to len bytes at offset into dst; *got < len only at the end. Errors
 * name the path (SL_ERR_NOT_FOUND: no such object; SL_ERR_IO: the rest). */
sl_status sl_ranged_read(sl_ranged *r, void *dst, size_t len, uint64_t offset, size_t *got);

/* Reads (preads, or GETs) made so far, for logs and tests. */
uint64_t sl_ranged_requests(const sl_ranged *r);

void sl_ranged_free(sl_ranged *r);

#endif
