/* io/jsonl_sink.c — a JSONL shard (io/shard.h does the naming and renaming). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "io/jsonl_sink.h"

struct sl_jsonl_sink {
    sl_shard shard;
    FILE *fp;
};

sl_status sl_jsonl_sink_open(const char *dir, const char *name, bool overwrite,
                             sl_jsonl_sink **out)
{
    *out = NULL;
    sl_jsonl_sink *sink = sl_calloc(1, sizeof *sink);
    if (!sink)
        return sl_fail(SL_ERR_NOMEM, "out of memory opening output '%s'", dir);
    sl_status st = sl_shard_init(&sink->shard, dir, name, overwrite);
    if (st == SL_OK && !(sink->fp = fopen(sink->shard.tmp_path, "w")))
        st = sl_fail(SL_ERR_IO, "cannot create '%s': %s", sink->shard.tmp_path, strerror(errno));
    if (st != SL_OK) {
        sl_jsonl_sink_free(sink);
        return st;
    }
    *out = sink;
    return SL_OK;
}

sl_status sl_jsonl_sink_write(sl_jsonl_sink *sink, const json_t *row)
{
    if (json_dumpf(row, sink->fp, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0 ||
        fputc('\n', sink->fp) == EOF)
        return sl_fail(SL_ERR_IO, "cannot write to '%s': %s", sink->shard.tmp_path,
                       strerror(errno));
    return SL_OK;
}

sl_status sl_jsonl_sink_commit(sl_jsonl_sink *sink)
{
    sl_status st = sl_jsonl_sink_finish(sink);
    return st == SL_OK ? sl_jsonl_sink_publish(sink) : st;
}

sl_status sl_jsonl_sink_publish(sl_jsonl_sink *sink) { return sl_shard_publish(&sink->shard); }

sl_status sl_jsonl_sink_finish(sl_jsonl_sink *sink)
{
    FILE *fp = sink->fp;
    sink->fp = NULL;
    if (fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        fclose(fp);
        return sl_fail(SL_ERR_IO, "cannot write '%s': %s", sink->shard.tmp_path, strerror(errno));
    }
    if (fclose(fp) != 0)
        return sl_fail(SL_ERR_IO, "cannot close '%s': %s", sink->shard.tmp_path, strerror(errno));
    return SL_OK;
}

const char *sl_jsonl_sink_path(const sl_jsonl_sink *sink) { return sink->shard.final_path; }

void sl_jsonl_sink_free(sl_jsonl_sink *sink)
{
    if (!sink)
        return;
    if (sink->fp)
        fclose(sink->fp);
    sl_shard_clear(&sink->shard);
    sl_free(sink);
}
