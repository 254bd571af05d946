/* io/sink.c — see sink.h: the part life cycle, the same for every format. */
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/fault.h"
#include "io/s3.h"
#include "io/sink.h"

struct sl_sink {
    const sl_sink_ops *ops;
    void *shared;
    char *dir;
    bool overwrite;
    void *part;      /* the open or last committed part */
    bool committed;  /* part is published: nothing more goes into it */
    char *remote;    /* s3://bucket/prefix: parts are uploaded there */
    char *remote_path; /* the open part's object */
    int64_t uploaded;  /* the last uploaded object's size; -1: none or not known */
};

sl_status sl_sink_open(const char *format, const char *dir, bool overwrite,
                       const sl_schema *schema, sl_sink **out)
{
    *out = NULL;
    static const sl_sink_ops *const formats[] = {&sl_sink_jsonl, &sl_sink_parquet,
                                                 &sl_sink_webdataset};
    const sl_sink_ops *ops = format ? NULL : &sl_sink_jsonl;
    for (size_t i = 0; !ops && i < sizeof formats / sizeof *formats; i++)
        if (strcmp(format, formats[i]->format) == 0)
            ops = formats[i];
    if (!ops)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "output format must be jsonl, parquet or webdataset, got '%s'", format);
    sl_sink *s = sl_calloc(1, sizeof *s);
    if (!s || !(s->dir = sl_strdup(dir))) {
        sl_free(s);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening output '%s'", dir);
    }
    s->ops = ops;
    s->overwrite = overwrite;
    s->uploaded = -1;
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
const char *sl_sink_extension(const sl_sink *sink) { return sink->ops->extension; }

static void drop_part(sl_sink *s)
{
    if (s->part)
        s->ops->free(s->part);
    s->part = NULL;
    s->committed = false;
}

sl_status sl_sink_set_remote(sl_sink *s, const char *url)
{
    sl_free(s->remote);
    if (!(s->remote = sl_strdup(url)))
        return sl_fail(SL_ERR_NOMEM, "out of memory opening output '%s'", url);
    return SL_OK;
}

sl_status sl_sink_part_open(sl_sink *s, const char *name)
{
    if (sl_sink_part_is_open(s))
        return sl_fail(SL_ERR_INVALID_ARG, "part '%s' opened while '%s' is open", name,
                       sl_sink_part_path(s));
    drop_part(s);
    if (s->remote) {
        sl_free(s->remote_path);
        if (!(s->remote_path = sl_asprintf("%s/%s", s->remote, name)))
            return sl_fail(SL_ERR_NOMEM, "out of memory opening part '%s'", name);
    }
    return s->ops->open(s->shared, s->dir, name, s->overwrite, &s->part);
}

/* Remote output: the synced temporary file becomes the object. */
static sl_status upload(sl_sink *s)
{
    const sl_s3 *s3 = sl_s3_shared();
    if (!s3)
        return SL_ERR_INVALID_ARG;
    int err = sl_fault("commit.upload", s->remote_path);
    if (err)
        return sl_fail(SL_ERR_IO, "cannot upload '%s': %s", s->remote_path, strerror(err));
    /* A part's number is never used twice by the runs of one ledger (a
     * dropped one's neither), so an object already there is another
     * run's: one writing the output with another state folder, which the
     * ledger's lock does not keep out. Uploading would replace its rows.
     * An overwriting sink's objects are replaced on purpose: the errors
     * part of a number a killed run uploaded before its part committed is
     * written again by the rerun (job/stage_write.c part_durable). */
    uint8_t first;
    size_t got;
    sl_status st = s->overwrite ? SL_ERR_NOT_FOUND
                                : sl_s3_read(s3, s->remote_path, 0, 1, false, &first, &got, NULL);
    if (st == SL_OK)
        return sl_fail(SL_ERR_IO, "'%s' is already in the bucket, and this run (its state "
                                  "folder '%s') did not write it: another run is writing the "
                                  "same output with another --state-dir. Stop one of them; run "
                                  "this one again once the other has ended, with the other's "
                                  "--state-dir (it resumes), or write to another prefix",
                       s->remote_path, s->dir);
    if (st != SL_ERR_NOT_FOUND)
        return st;
    const char *temp = s->ops->temp_path(s->part);
    struct stat sb;
    s->uploaded = stat(temp, &sb) == 0 ? (int64_t)sb.st_size : -1;
    st = sl_s3_upload_file(s3, temp, s->remote_path, 0);
    if (st != SL_OK)
        s->uploaded = -1;
    if (st == SL_OK && (err = sl_fault("commit.after_upload", s->remote_path)) != 0)
        st = sl_fail(SL_ERR_IO, "after uploading '%s': %s", s->remote_path, strerror(err));
    return st;
}

bool sl_sink_part_is_open(const sl_sink *s) { return s->part && !s->committed; }

sl_status sl_sink_set_codec(sl_sink *s, const char *name)
{
    if (!s->ops->set_codec)
        return sl_fail(SL_ERR_INVALID_ARG, "%s output has no compression to choose (Parquet "
                                           "has)", s->ops->format);
    return s->ops->set_codec(s->shared, name);
}

int64_t sl_sink_uploaded_bytes(const sl_sink *s) { return s->uploaded; }

int64_t sl_sink_part_bytes(const sl_sink *s)
{
    return sl_sink_part_is_open(s) ? s->ops->bytes(s->part) : 0;
}

sl_status sl_sink_write(sl_sink *s, const sl_schema_row *row)
{
    if (!sl_sink_part_is_open(s))
        return sl_fail(SL_ERR_INVALID_ARG, "a row written to '%s' with no part open", s->dir);
    return s->ops->write(s->shared, s->part, row);
}

json_t *sl_sink_unfit(const sl_sink *s)
{
    return s && s->ops->unfit ? s->ops->unfit(s->shared) : NULL;
}

void sl_sink_on_unfit(sl_sink *s, void (*fn)(void *user, const char *column), void *user)
{
    if (s && s->ops->on_unfit)
        s->ops->on_unfit(s->shared, fn, user);
}

sl_status sl_sink_commit(sl_sink *s, sl_status (*durable)(void *user), void *user)
{
    if (!sl_sink_part_is_open(s))
        return sl_fail(SL_ERR_INVALID_ARG, "nothing to commit in '%s': no part open", s->dir);
    sl_status st = s->ops->finish(s->part);
    if (st == SL_OK && durable)
        st = durable(user);
    if (st == SL_OK)
        st = s->remote ? upload(s) : s->ops->publish(s->part);
    if (st == SL_OK)
        s->committed = true;
    if (st == SL_OK && s->remote)
        drop_part(s); /* the temporary: the object holds the rows now */
    return st;
}

void sl_sink_abandon(sl_sink *s)
{
    if (sl_sink_part_is_open(s))
        drop_part(s);
}

const char *sl_sink_part_path(const sl_sink *s)
{
    if (s->remote)
        return s->remote_path;
    return s->part ? s->ops->path(s->part) : NULL;
}

void sl_sink_free(sl_sink *s)
{
    if (!s)
        return;
    drop_part(s);
    s->ops->release(s->shared);
    sl_free(s->dir);
    sl_free(s->remote);
    sl_free(s->remote_path);
    sl_free(s);
}
