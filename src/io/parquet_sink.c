/* io/parquet_sink.c — see parquet_sink.h. */
#include "core/alloc.h"
#include "core/error.h"
#include "io/parquet_sink.h"

struct sl_parquet_sink {
    sl_shard shard;
    sl_pq_writer *writer;
};

sl_status sl_parquet_sink_open(const char *dir, const char *name, bool overwrite,
                               const sl_pq_column_def *columns, size_t num_columns,
                               const sl_pq_writer_params *params, sl_parquet_sink **out)
{
    *out = NULL;
    sl_parquet_sink *sink = sl_calloc(1, sizeof *sink);
    if (!sink)
        return sl_fail(SL_ERR_NOMEM, "out of memory opening output '%s'", dir);
    sl_status st = sl_shard_init(&sink->shard, dir, name, overwrite);
    if (st == SL_OK)
        st = sl_pq_writer_open(sink->shard.tmp_path, columns, num_columns, params, &sink->writer);
    if (st != SL_OK) {
        sl_parquet_sink_free(sink);
        return st;
    }
    *out = sink;
    return SL_OK;
}

sl_status sl_parquet_sink_append(sl_parquet_sink *sink, const sl_pq_value *values)
{
    return sl_pq_writer_append(sink->writer, values);
}

sl_status sl_parquet_sink_finish(sl_parquet_sink *sink) { return sl_pq_writer_close(sink->writer); }

sl_status sl_parquet_sink_publish(sl_parquet_sink *sink) { return sl_shard_publish(&sink->shard); }

sl_status sl_parquet_sink_commit(sl_parquet_sink *sink)
{
    sl_status st = sl_parquet_sink_finish(sink);
    return st == SL_OK ? sl_parquet_sink_publish(sink) : st;
}

const char *sl_parquet_sink_path(const sl_parquet_sink *sink) { return sink->shard.final_path; }

void sl_parquet_sink_free(sl_parquet_sink *sink)
{
    if (!sink)
        return;
    sl_pq_writer_free(sink->writer);
    sl_shard_clear(&sink->shard);
    sl_free(sink);
}
