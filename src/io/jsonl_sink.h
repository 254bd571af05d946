/* io/jsonl_sink.h — one JSONL output shard, written under a temporary name
 * in the output folder and renamed into place (after fsync) only by
 * sl_jsonl_sink_commit(), so a reader never sees half a shard. Rows wait in
 * a buffer of 64 KiB (or one row, if larger). After a failed write the sink
 * is broken: every later call fails and it can never be committed. Freeing
 * an uncommitted sink removes the temporary file. One thread at a time. */
#ifndef SL_IO_JSONL_SINK_H
#define SL_IO_JSONL_SINK_H

#include <stdbool.h>
#include <jansson.h>
#include "core/buf.h"
#include "io/schema.h"
#include "io/shard.h"
#include "sluice/status.h"

typedef struct sl_jsonl_sink sl_jsonl_sink;

/* Creates `dir` (and parents) if needed. Fails with SL_ERR_EXISTS when
 * dir/name exists and !overwrite. */
sl_status sl_jsonl_sink_open(const char *dir, const char *name, bool overwrite,
                             sl_jsonl_sink **out);

/* Appends `row` as one line (compact, keys in insertion order). SL_ERR_IO
 * (the sink is then broken) when the write fails: rows written before may
 * be lost too, so the whole part must be abandoned. */
sl_status sl_jsonl_sink_write(sl_jsonl_sink *sink, const json_t *row);

/* A row of `schema` as this sink writes it: the columns in order (a group's
 * members in an object of its own, where its first member stands; a null
 * omit_null column left out), the pass-through columns after the head (io/
 * columns.h names them), the tail last. Bytes columns are left out (this
 * sink refuses them; the WebDataset sink writes them as members of their
 * own). NULL when out of memory; the caller json_decref()s it. */
json_t *sl_jsonl_row_object(const sl_schema *schema, const sl_schema_row *row);

/* Appends `o`'s text as this sink writes it (compact, keys in insertion
 * order; no newline) to *buf. SL_ERR_NOMEM, or SL_ERR_INVALID_ARG for a
 * value JSON cannot write (a NaN); then *buf is as it was. Messages name
 * `where`. */
sl_status sl_jsonl_dump(const json_t *o, sl_buf *buf, const char *where);

/* Flushes, syncs and renames the shard to its final name: finish, then
 * publish. Between the two the rows are durable under the temporary name
 * (the resume ledger records them there; ledger/ledger.h). */
sl_status sl_jsonl_sink_commit(sl_jsonl_sink *sink);
sl_status sl_jsonl_sink_finish(sl_jsonl_sink *sink);
sl_status sl_jsonl_sink_publish(sl_jsonl_sink *sink);

/* The final path (valid for the sink's life). */
const char *sl_jsonl_sink_path(const sl_jsonl_sink *sink);

void sl_jsonl_sink_free(sl_jsonl_sink *sink);

#endif
