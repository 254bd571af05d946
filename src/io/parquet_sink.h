/* io/parquet_sink.h — one Parquet output shard: an sl_pq_writer on the
 * shard's temporary file, renamed into place by sl_parquet_sink_commit()
 * (io/shard.h). Freeing an uncommitted sink removes the temporary file.
 * One thread at a time. */
#ifndef SL_IO_PARQUET_SINK_H
#define SL_IO_PARQUET_SINK_H

#include "io/parquet_write.h"
#include "io/shard.h"

typedef struct sl_parquet_sink sl_parquet_sink;

sl_status sl_parquet_sink_open(const char *dir, const char *name, bool overwrite,
                               const sl_pq_column_def *columns, size_t num_columns,
                               const sl_pq_writer_params *params, sl_parquet_sink **out);
sl_status sl_parquet_sink_append(sl_parquet_sink *sink, const sl_pq_value *values);
/* commit = finish (footer written, file synced) then publish (renamed). */
sl_status sl_parquet_sink_commit(sl_parquet_sink *sink);
sl_status sl_parquet_sink_finish(sl_parquet_sink *sink);
sl_status sl_parquet_sink_publish(sl_parquet_sink *sink);
const char *sl_parquet_sink_path(const sl_parquet_sink *sink);
void sl_parquet_sink_free(sl_parquet_sink *sink);

#endif
