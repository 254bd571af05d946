/* io/jsonl_sink.c — a JSONL shard (io/shard.h does the naming and renaming).
 * Rows are gathered in a buffer and written with core/file.h's checked
 * write, not stdio: glibc drops a FILE's buffer when a write fails, so rows
 * already reported written vanished and a later fflush() succeeded, and a
 * full disk could be committed as a part missing rows. Here the first failed
 * write marks the sink broken, and a broken sink is never finished. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/file.h"
#include "io/jsonl_sink.h"

/* Rows are written once this much is buffered (and when finished). */
enum { FLUSH_BYTES = 64 << 10 };

struct sl_jsonl_sink {
    sl_shard shard;
    int fd;
    sl_buf buf;   /* rows not written yet */
    bool broken;  /* a write failed: the temporary file's content is unknown */
    bool nomem;   /* json_dump_callback ran out of memory */
};

sl_status sl_jsonl_sink_open(const char *dir, const char *name, bool overwrite,
                             sl_jsonl_sink **out)
{
    *out = NULL;
    sl_jsonl_sink *sink = sl_calloc(1, sizeof *sink);
    if (!sink)
        return sl_fail(SL_ERR_NOMEM, "out of memory opening output '%s'", dir);
    sink->fd = -1;
    sl_status st = sl_shard_init(&sink->shard, dir, name, overwrite);
    if (st == SL_OK &&
        (sink->fd = open(sink->shard.tmp_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)) < 0)
        st = sl_fail(SL_ERR_IO, "cannot create '%s': %s", sink->shard.tmp_path, strerror(errno));
    if (st != SL_OK) {
        sl_jsonl_sink_free(sink);
        return st;
    }
    *out = sink;
    return SL_OK;
}

static int append(const char *data, size_t len, void *arg)
{
    sl_jsonl_sink *sink = arg;
    if (sl_buf_append(&sink->buf, data, len))
        return 0;
    sink->nomem = true;
    return -1;
}

static sl_status flush(sl_jsonl_sink *sink)
{
    if (sink->buf.len == 0)
        return SL_OK;
    sl_status st = sl_file_write_all(sink->fd, sink->buf.data, sink->buf.len, sink->shard.tmp_path);
    sink->buf.len = 0;
    if (st != SL_OK)
        sink->broken = true;
    return st;
}

static sl_status broken(const sl_jsonl_sink *sink)
{
    return sl_fail(SL_ERR_IO, "'%s' is incomplete after an earlier write error: not committed",
                   sink->shard.tmp_path);
}

sl_status sl_jsonl_sink_write(sl_jsonl_sink *sink, const json_t *row)
{
    if (sink->broken)
        return broken(sink);
    size_t mark = sink->buf.len;
    sink->nomem = false;
    if (json_dump_callback(row, append, sink, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0 ||
        append("\n", 1, sink) != 0) {
        sink->buf.len = mark; /* nothing of this row was written */
        return sink->nomem ? sl_fail(SL_ERR_NOMEM, "out of memory writing to '%s'",
                                     sink->shard.tmp_path)
                           : sl_fail(SL_ERR_INVALID_ARG, "a row cannot be written as JSON to '%s'",
                                     sink->shard.tmp_path);
    }
    return sink->buf.len >= FLUSH_BYTES ? flush(sink) : SL_OK;
}

sl_status sl_jsonl_sink_commit(sl_jsonl_sink *sink)
{
    sl_status st = sl_jsonl_sink_finish(sink);
    return st == SL_OK ? sl_jsonl_sink_publish(sink) : st;
}

sl_status sl_jsonl_sink_publish(sl_jsonl_sink *sink) { return sl_shard_publish(&sink->shard); }

sl_status sl_jsonl_sink_finish(sl_jsonl_sink *sink)
{
    if (sink->broken)
        return broken(sink);
    if (sink->fd < 0)
        return sl_fail(SL_ERR_INVALID_ARG, "'%s' finished twice", sink->shard.tmp_path);
    sl_status st = flush(sink);
    if (st == SL_OK)
        st = sl_file_sync(sink->fd, sink->shard.tmp_path);
    if (close(sink->fd) != 0 && st == SL_OK)
        st = sl_fail(SL_ERR_IO, "cannot close '%s': %s", sink->shard.tmp_path, strerror(errno));
    sink->fd = -1;
    if (st != SL_OK)
        sink->broken = true;
    sl_buf_free(&sink->buf);
    return st;
}

const char *sl_jsonl_sink_path(const sl_jsonl_sink *sink) { return sink->shard.final_path; }

void sl_jsonl_sink_free(sl_jsonl_sink *sink)
{
    if (!sink)
        return;
    if (sink->fd >= 0)
        close(sink->fd);
    sl_buf_free(&sink->buf);
    sl_shard_clear(&sink->shard);
    sl_free(sink);
}
