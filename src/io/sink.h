/* io/sink.h — where rows go: an output written as numbered parts
 * (part-NNNNN.<format>), whatever the format. A sink owns its open part: a
 * file under a temporary name that sl_sink_commit() makes durable and then
 * publishes under its final name (io/shard.h), so a reader never sees half
 * a part; a part abandoned, or left open when the sink is freed, is removed.
 * Rows follow the sink's schema (io/schema.h). The formats (JSONL, Parquet,
 * WebDataset tar shards) sit behind sl_sink_ops, as engines do behind engine_impl.h; a new format
 * is one more table. Thread rules: one thread at a time per sink (the write
 * stage's single worker). Ownership: the schema is borrowed and must outlive
 * the sink; the sink is freed with sl_sink_free(). After a failed write or
 * commit the open part is broken: the caller abandons it. */
#ifndef SL_IO_SINK_H
#define SL_IO_SINK_H

#include <stdbool.h>

#include "io/schema.h"
#include "sluice/status.h"

typedef struct sl_sink sl_sink;

/* A format: what a backend provides (jsonl_sink.c, parquet_sink.c,
 * wds_sink.c). */
typedef struct sl_sink_ops {
    const char *format; /* its name (output.format) */
    /* Once per sink: checks the schema (a column the format cannot hold is
     * SL_ERR_INVALID_ARG) and builds what every part shares. */
    sl_status (*prepare)(const sl_schema *schema, void **shared);
    void (*release)(void *shared);
    sl_status (*open)(void *shared, const char *dir, const char *name, bool overwrite,
                      void **part);
    sl_status (*write)(void *shared, void *part, const sl_schema_row *row);
    sl_status (*finish)(void *part);  /* written and synced, under the temporary name */
    sl_status (*publish)(void *part); /* renamed into place, the folder synced */
    const char *(*path)(const void *part);
    const char *(*temp_path)(const void *part); /* the file being written */
    void (*free)(void *part);         /* an unpublished part's file is removed */
    int64_t (*bytes)(const void *part); /* the part's size so far (a format that buffers
                                           counts what it holds as it will write it) */
    /* The parts' compression by name (NULL: the format has no choice). */
    sl_status (*set_codec)(void *shared, const char *name);
    const char *extension; /* the parts' file extension, no dot ("tar") */
    /* What rows held that the parts could not (sl_sink_unfit), and who
     * hears of each such value (sl_sink_on_unfit); NULL: a format that
     * writes every value as it came. */
    json_t *(*unfit)(const void *shared);
    void (*on_unfit)(void *shared, void (*fn)(void *user, const char *column), void *user);
} sl_sink_ops;

extern const sl_sink_ops sl_sink_jsonl;
extern const sl_sink_ops sl_sink_parquet;
extern const sl_sink_ops sl_sink_webdataset;

/* A sink writing parts of `format` ("jsonl", "parquet" or "webdataset";
 * NULL: jsonl) into dir. SL_ERR_INVALID_ARG for another format or a schema
 * it cannot write. */
sl_status sl_sink_open(const char *format, const char *dir, bool overwrite,
                       const sl_schema *schema, sl_sink **out);

const char *sl_sink_format(const sl_sink *sink);
/* The extension its parts' names take: "jsonl", "parquet", "tar". */
const char *sl_sink_extension(const sl_sink *sink);

/* The compression of the parts opened from now on (Parquet: zstd, snappy,
 * gzip or none). SL_ERR_INVALID_ARG for another name, or a format that has
 * no choice. */
sl_status sl_sink_set_codec(sl_sink *sink, const char *name);

/* Publishes parts to object storage (io/s3.h) instead of the folder: a
 * committed part is uploaded from its temporary file as URL/NAME (a
 * multipart upload appears whole or not at all), and the temporary is then
 * removed; sl_sink_part_path() names the object. `url` is copied. */
sl_status sl_sink_set_remote(sl_sink *sink, const char *url);

/* Opens part `name` (no part may be open). SL_ERR_EXISTS when dir/name
 * exists and the sink does not overwrite; in a bucket, the commit fails
 * (SL_ERR_IO) when the object exists and the sink does not overwrite. */
sl_status sl_sink_part_open(sl_sink *sink, const char *name);
bool sl_sink_part_is_open(const sl_sink *sink);

/* Appends a row to the open part. SL_ERR_IO: the part is broken. */
sl_status sl_sink_write(sl_sink *sink, const sl_schema_row *row);

/* Commits the open part: finishes it (synced under its temporary name),
 * calls durable(user) if given (the resume ledger records the part there:
 * ledger/ledger.h), then publishes it. On success the part is closed and
 * sl_sink_part_path() still names it until the next part opens. On failure
 * the part stays open and broken: abandon it. */
sl_status sl_sink_commit(sl_sink *sink, sl_status (*durable)(void *user), void *user);

/* The size of the object the last commit uploaded (sl_sink_set_remote):
 * what the resume ledger records as the part's, to find it cut by hand
 * later; -1 before any or when not known. */
int64_t sl_sink_uploaded_bytes(const sl_sink *sink);

/* The open part's bytes so far (--shard-bytes); 0 without one. */
int64_t sl_sink_part_bytes(const sl_sink *sink);

/* What the rows written so far held that the format could not write (a
 * Parquet pass-through value not of its column's type, a column first
 * seen after the columns were planned): a new object of input column name ->
 * {"rows": N, "first_id": ID, "why": WHY}, the caller's; NULL when
 * nothing was left out (or out of memory). The first such row of each
 * column is also logged as a warning. */
json_t *sl_sink_unfit(const sl_sink *sink);

/* fn(user, column) is called, on the writing thread, for each row whose
 * value of `column` the format cannot write (as sl_sink_unfit counts it);
 * a format that writes every value never calls it. Set before the first
 * row is written (NULL sink: no-op). */
void sl_sink_on_unfit(sl_sink *sink, void (*fn)(void *user, const char *column), void *user);

/* Gives the open part up (its temporary file is removed); no-op without one. */
void sl_sink_abandon(sl_sink *sink);

/* The final path of the open (or last committed) part; NULL before any. */
const char *sl_sink_part_path(const sl_sink *sink);

/* Abandons an open part. Accepts NULL. */
void sl_sink_free(sl_sink *sink);

#endif
