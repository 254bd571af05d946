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
#include "core/json.h"
#include "io/jsonl_sink.h"
#include "io/sink.h"

/* Rows are written once this much is buffered (and when finished). */
enum { FLUSH_BYTES = 64 << 10 };

struct sl_jsonl_sink {
    sl_shard shard;
    int fd;
    sl_buf buf;   /* rows not written yet */
    int64_t written; /* bytes in the file */
    bool broken;  /* a write failed: the temporary file's content is unknown */
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
        (sink->fd = sl_file_create_temp(sink->shard.tmp_path, 0666)) < 0)
        st = sl_fail(SL_ERR_IO, "cannot create '%s': %s", sink->shard.tmp_path, sl_file_temp_error(errno));
    if (st != SL_OK) {
        sl_jsonl_sink_free(sink);
        return st;
    }
    *out = sink;
    return SL_OK;
}

/* sl_json_dump_callback's writer: appends to an sl_buf, noting a lack of memory. */
typedef struct dump_to {
    sl_buf *buf;
    bool nomem;
} dump_to;

static int append(const char *data, size_t len, void *arg)
{
    dump_to *to = arg;
    if (sl_buf_append(to->buf, data, len))
        return 0;
    to->nomem = true;
    return -1;
}

/* The escape of the line end at d[i] (U+0085, U+2028 or U+2029) and its
 * bytes in *n; NULL when d[i] starts none. */
static const char *line_end_at(const uint8_t *d, size_t i, size_t len, size_t *n)
{
    if (d[i] == 0xC2 && i + 1 < len && d[i + 1] == 0x85) {
        *n = 2;
        return "\\u0085";
    }
    if (d[i] == 0xE2 && i + 2 < len && d[i + 1] == 0x80 && (d[i + 2] == 0xA8 || d[i + 2] == 0xA9)) {
        *n = 3;
        return d[i + 2] == 0xA8 ? "\\u2028" : "\\u2029";
    }
    return NULL;
}

/* buf[from..) with U+0085, U+2028 and U+2029 written as \u escapes:
 * Python's str.splitlines() ends a line at each (and JavaScript before
 * ES2019 at the last two), so a row holding one raw was two lines there
 * (`read_text().splitlines()`, a common way to read JSONL). JSON's
 * structure is ASCII: these bytes are only ever inside a string. False
 * when out of memory. */
static bool escape_line_ends(sl_buf *buf, size_t from)
{
    size_t i = from, n;
    while (i < buf->len && !line_end_at(buf->data, i, buf->len, &n))
        i++;
    if (i == buf->len)
        return true; /* the usual row: nothing to copy */
    sl_buf out = {0};
    bool ok = sl_buf_reserve(&out, 2 * (buf->len - from));
    for (size_t run = from; ok && run < buf->len;) {
        const char *esc = NULL;
        for (i = run; i < buf->len && !(esc = line_end_at(buf->data, i, buf->len, &n)); i++)
            ;
        ok = sl_buf_append(&out, buf->data + run, i - run) && (!esc || sl_buf_append(&out, esc, 6));
        run = esc ? i + n : i;
    }
    buf->len = from;
    ok = ok && sl_buf_append(buf, out.data, out.len);
    sl_buf_free(&out);
    return ok;
}

sl_status sl_jsonl_dump(const json_t *o, sl_buf *buf, const char *where)
{
    size_t mark = buf->len;
    dump_to to = {buf, false};
    int rc = sl_json_dump_callback(o, JSON_COMPACT, append, &to);
    if (rc == 0) {
        if (escape_line_ends(buf, mark))
            return SL_OK;
        buf->len = mark;
        return sl_fail(SL_ERR_NOMEM, "out of memory writing to '%s'", where);
    }
    buf->len = mark; /* nothing of it was added */
    /* The dump lists an object's keys first: without memory for them the
     * row was said to be one JSON cannot hold (the run stopped on it). */
    return to.nomem || rc == -2
               ? sl_fail(SL_ERR_NOMEM, "out of memory writing to '%s'", where)
               : sl_fail(SL_ERR_INVALID_ARG, "a row cannot be written as JSON to '%s'", where);
}

static sl_status flush(sl_jsonl_sink *sink)
{
    if (sink->buf.len == 0)
        return SL_OK;
    sl_status st = sl_file_write_all(sink->fd, sink->buf.data, sink->buf.len, sink->shard.tmp_path);
    sink->written += (int64_t)sink->buf.len;
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
    sl_status st = sl_jsonl_dump(row, &sink->buf, sink->shard.tmp_path);
    if (st == SL_OK && !sl_buf_append(&sink->buf, "\n", 1)) {
        sink->buf.len = mark; /* nothing of this row was written */
        st = sl_fail(SL_ERR_NOMEM, "out of memory writing to '%s'", sink->shard.tmp_path);
    }
    if (st != SL_OK)
        return st;
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

/* --- behind io/sink.h --------------------------------------------------------- */

static sl_status jsonl_prepare(const sl_schema *schema, void **shared)
{
    for (size_t i = 0; i < schema->n_head + schema->n_tail; i++) {
        const sl_schema_column *c = i < schema->n_head ? &schema->head[i]
                                                       : &schema->tail[i - schema->n_head];
        if (c->type == SL_PQ_BINARY)
            return sl_fail(SL_ERR_INVALID_ARG, "column '%s' holds bytes, which JSONL output "
                                               "cannot: choose the parquet format", c->name);
    }
    *shared = (void *)schema;
    return SL_OK;
}

static void jsonl_release(void *shared) { (void)shared; }

static json_t *cell_json(const sl_schema_column *c, const sl_pq_value *v)
{
    if (v->is_null)
        return json_null();
    if (c->json) {
        /* Checked JSON (a structured answer); text that does not parse
         * after all is written as the string it is. */
        json_t *value = json_loadb(v->ptr, v->len, JSON_DECODE_ANY, NULL);
        if (value)
            return value;
    }
    switch (c->type) {
    case SL_PQ_STRING: return sl_json_text(v->ptr, v->len);
    case SL_PQ_INT64: return json_integer(v->i64);
    case SL_PQ_DOUBLE: return sl_json_real(v->f64);
    case SL_PQ_BOOL: return json_boolean(v->b);
    default: return NULL; /* bytes: left out by add_columns */
    }
}

/* Adds the columns cols[0..n) to o; *group is the open group object. */
static bool add_columns(json_t *o, const sl_schema_column *cols, const sl_pq_value *cells, size_t n,
                        json_t **group, const char **group_name)
{
    for (size_t i = 0; i < n; i++) {
        const sl_schema_column *c = &cols[i];
        if ((cells[i].is_null && c->omit_null) || c->type == SL_PQ_BINARY)
            continue;
        json_t *into = o;
        if (c->group) {
            if (!*group_name || strcmp(*group_name, c->group) != 0) {
                *group = json_object();
                *group_name = c->group;
                if (json_object_set_new(o, c->group, *group) != 0)
                    return false;
            }
            into = *group;
        }
        if (json_object_set_new(into, c->name, cell_json(c, &cells[i])) != 0)
            return false;
    }
    return true;
}

/* The pass-through columns: every column of the row, or only the declared
 * ones, under their output names (io/columns.h). */
static bool add_passthrough(json_t *o, const sl_columns *cols, const json_t *extra)
{
    if (!extra || !cols)
        return true;
    if (sl_columns_declared(cols)) {
        for (size_t i = 0; i < sl_columns_count(cols); i++) {
            const json_t *v = sl_columns_value(cols, i, extra);
            if (v && json_object_set(o, sl_columns_output_name(cols, i), (json_t *)v) != 0)
                return false;
        }
        return true;
    }
    const char *key;
    json_t *v;
    char buf[512];
    json_object_foreach((json_t *)extra, key, v)
        if (json_object_set(o, sl_columns_rename(cols, key, extra, buf, sizeof buf), v) != 0)
            return false;
    return true;
}

json_t *sl_jsonl_row_object(const sl_schema *s, const sl_schema_row *row)
{
    json_t *o = json_object(), *group = NULL;
    const char *group_name = NULL;
    bool ok = o && add_columns(o, s->head, row->cells, s->n_head, &group, &group_name) &&
              add_passthrough(o, s->passthrough, row->extra) &&
              add_columns(o, s->tail, row->cells + s->n_head, s->n_tail, &group, &group_name);
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static sl_status jsonl_write_row(void *shared, void *part, const sl_schema_row *row)
{
    sl_jsonl_sink *sink = part;
    json_t *o = sl_jsonl_row_object(shared, row);
    sl_status st = o ? sl_jsonl_sink_write(sink, o)
                     : sl_fail(SL_ERR_NOMEM, "out of memory writing a row to '%s'",
                               sink->shard.tmp_path);
    json_decref(o);
    return st;
}

static sl_status jsonl_open(void *shared, const char *dir, const char *name, bool overwrite,
                            void **part)
{
    (void)shared;
    return sl_jsonl_sink_open(dir, name, overwrite, (sl_jsonl_sink **)part);
}

static sl_status jsonl_finish(void *part) { return sl_jsonl_sink_finish(part); }
static sl_status jsonl_publish(void *part) { return sl_jsonl_sink_publish(part); }
static const char *jsonl_path(const void *part) { return sl_jsonl_sink_path(part); }
static const char *jsonl_temp_path(const void *part)
{
    return ((const sl_jsonl_sink *)part)->shard.tmp_path;
}
static void jsonl_free(void *part) { sl_jsonl_sink_free(part); }
static int64_t jsonl_bytes(const void *part)
{
    const sl_jsonl_sink *sink = part;
    return sink->written + (int64_t)sink->buf.len;
}

const sl_sink_ops sl_sink_jsonl = {
    .format = "jsonl",
    .prepare = jsonl_prepare,
    .release = jsonl_release,
    .open = jsonl_open,
    .write = jsonl_write_row,
    .finish = jsonl_finish,
    .publish = jsonl_publish,
    .path = jsonl_path,
    .temp_path = jsonl_temp_path,
    .free = jsonl_free,
    .bytes = jsonl_bytes,
    .extension = "jsonl",
};
