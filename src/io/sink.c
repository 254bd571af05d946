/* io/sink.c — see sink.h: the part life cycle, the same for every format. */
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "io/sink.h"

struct sl_sink {
    const sl_sink_ops *ops;
    void *shared;
    char *dir;
    bool overwrite;
    void *part;      /* the open or last committed part */
    bool committed;  /* part is published: nothing more goes into it */
};

sl_status sl_sink_open(const char *format, const char *dir, bool overwrite,
                       const sl_schema *schema, sl_sink **out)
{
    *out = NULL;
    const sl_sink_ops *ops = NULL;
    if (!format || strcmp(format, sl_sink_jsonl.format) == 0)
        ops = &sl_sink_jsonl;
    else if (strcmp(format, sl_sink_parquet.format) == 0)
        ops = &sl_sink_parquet;
    else
        return sl_fail(SL_ERR_INVALID_ARG, "output format must be jsonl or parquet, got '%s'",
                       format);
    sl_sink *s = sl_calloc(1, sizeof *s);
    if (!s || !(s->dir = sl_strdup(dir))) {
        sl_free(s);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening output '%s'", dir);
    }
    s->ops = ops;
    s->overwrite = overwrite;
    sl_status st = ops->prepare(schema, &s->shared);
    if (st != SL_OK) {
        sl_free(s->dir);
        sl_free(s);
        return st;
    }
    *out = s;
    return SL_OK;
}

const char *sl_sink_format(const sl_sink *sink) { return sink->ops->format; }

static void drop_part(sl_sink *s)
{
    if (s->part)
        s->ops->free(s->part);
    s->part = NULL;
    s->committed = false;
}

sl_status sl_sink_part_open(sl_sink *s, const char *name)
{
    if (sl_sink_part_is_open(s))
        return sl_fail(SL_ERR_INVALID_ARG, "part '%s' opened while '%s' is open", name,
                       s->ops->path(s->part));
    drop_part(s);
    return s->ops->open(s->shared, s->dir, name, s->overwrite, &s->part);
}

bool sl_sink_part_is_open(const sl_sink *s) { return s->part && !s->committed; }

sl_status sl_sink_write(sl_sink *s, const sl_schema_row *row)
{
    if (!sl_sink_part_is_open(s))
        return sl_fail(SL_ERR_INVALID_ARG, "a row written to '%s' with no part open", s->dir);
    return s->ops->write(s->shared, s->part, row);
}

sl_status sl_sink_commit(sl_sink *s, sl_status (*durable)(void *user), void *user)
{
    if (!sl_sink_part_is_open(s))
        return sl_fail(SL_ERR_INVALID_ARG, "nothing to commit in '%s': no part open", s->dir);
    sl_status st = s->ops->finish(s->part);
    if (st == SL_OK && durable)
        st = durable(user);
    if (st == SL_OK)
        st = s->ops->publish(s->part);
    if (st == SL_OK)
        s->committed = true;
    return st;
}

void sl_sink_abandon(sl_sink *s)
{
    if (sl_sink_part_is_open(s))
        drop_part(s);
}

const char *sl_sink_part_path(const sl_sink *s) { return s->part ? s->ops->path(s->part) : NULL; }

void sl_sink_free(sl_sink *s)
{
    if (!s)
        return;
    drop_part(s);
    s->ops->release(s->shared);
    sl_free(s->dir);
    sl_free(s);
}
