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
