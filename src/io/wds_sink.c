/* io/wds_sink.c — the WebDataset format behind io/sink.h: a part is a tar
 * shard (part-NNNNN.tar) where each row is one sample, KEY.json (the row as
 * the JSONL sink writes it, bytes columns left out), KEY.txt (its `caption`
 * column's text, when not null) and KEY.EXT (the row's image bytes, EXT
 * sniffed from them: io/sniff.h) when the row has them. KEY is the part's number and the row's index in it, "00003_000042":
 * unique in the output and free of dots (a reader splits key from extension
 * at the base name's first dot). The row's id stays in the JSON.
 *
 * Written with libarchive as pax (plain ustar headers unless a member needs
 * more), regular files of mode 0644 owned by 0:0 with mtime 0, so the same
 * rows give the same bytes. Members are streamed: one row's JSON text is
 * held, the image is written from the row's cell, and libarchive keeps one
 * block (64 KiB); the part is never whole in memory. Its bytes go through
 * core/file.h's checked write into the temporary file (io/shard.h), so a
 * failed write marks the part broken and it is never finished. */
#include <archive.h>
#include <archive_entry.h>
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
#include "io/sink.h"
#include "io/sniff.h"
#include "io/wds_tar.h"

typedef struct wds_shared {
    const sl_schema *schema;
    long bytes_cell;   /* the cell of the bytes column; -1 when none */
    long caption_cell; /* the cell of column `caption` (a string); -1 when none */
} wds_shared;

typedef struct wds_part {
    sl_shard shard;
    int fd;
    struct archive *a;
    struct archive_entry *entry; /* reused for every member */
    char prefix[64];  /* the keys' first half: the part's name before its first dot */
    long rows;        /* rows written: the next row's index */
    sl_buf json;      /* the row being written */
    bool broken;      /* a write failed: the temporary file's content is unknown */
    bool discard;     /* being freed: what libarchive still flushes goes nowhere */
} wds_part;

/* --- the tar, as io/wds_tar.h says --------------------------------------------------- */

int sl_wds_tar_format(struct archive *a)
{
    int rc;
    if ((rc = archive_write_set_format_pax_restricted(a)) != ARCHIVE_OK ||
        (rc = archive_write_add_filter_none(a)) != ARCHIVE_OK ||
        (rc = archive_write_set_bytes_per_block(a, SL_WDS_TAR_BLOCK)) != ARCHIVE_OK)
        return rc;
    return archive_write_set_bytes_in_last_block(a, 1);
}

int sl_wds_tar_header(struct archive *a, struct archive_entry *e, const char *name, int64_t size)
{
    archive_entry_clear(e);
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_size(e, (la_int64_t)size);
    archive_entry_set_mtime(e, 0, 0);
    return archive_write_header(a, e);
}

/* --- the format --------------------------------------------------------------------- */

/* One bytes column at most: it is the sample's image. */
static sl_status wds_prepare(const sl_schema *schema, void **shared)
{
    wds_shared *ws = sl_calloc(1, sizeof *ws);
    if (!ws)
        return sl_fail(SL_ERR_NOMEM, "out of memory opening a WebDataset output");
    ws->schema = schema;
    ws->bytes_cell = ws->caption_cell = -1;
    for (size_t i = 0; i < schema->n_head + schema->n_tail; i++) {
        const sl_schema_column *c = i < schema->n_head ? &schema->head[i]
                                                       : &schema->tail[i - schema->n_head];
        if (i < schema->n_head && c->type == SL_PQ_STRING && strcmp(c->name, "caption") == 0)
            ws->caption_cell = (long)i;
        if (c->type != SL_PQ_BINARY)
            continue;
        if (ws->bytes_cell >= 0) {
            sl_free(ws);
            return sl_fail(SL_ERR_INVALID_ARG, "column '%s' holds bytes too: a WebDataset "
                                               "sample holds one image; choose the parquet "
                                               "format", c->name);
        }
        ws->bytes_cell = (long)i;
    }
    *shared = ws;
    return SL_OK;
}

static void wds_release(void *shared) { sl_free(shared); }

/* libarchive's output: the temporary file, through the checked write. */
static la_ssize_t tar_write(struct archive *a, void *user, const void *buf, size_t len)
{
    wds_part *w = user;
    if (w->discard)
        return (la_ssize_t)len;
    if (sl_file_write_all(w->fd, buf, len, w->shard.tmp_path) != SL_OK) {
        w->broken = true;
        archive_set_error(a, EIO, "%s", sl_last_error());
        return -1;
    }
    return (la_ssize_t)len;
}

static void wds_free(void *part)
{
    wds_part *w = part;
    if (!w)
        return;
    w->discard = true;
    if (w->a)
        archive_write_free(w->a);
    archive_entry_free(w->entry);
    if (w->fd >= 0)
        close(w->fd);
    sl_buf_free(&w->json);
    sl_shard_clear(&w->shard);
    sl_free(w);
}

static sl_status wds_open(void *shared, const char *dir, const char *name, bool overwrite,
                          void **out)
{
    (void)shared;
    *out = NULL;
    wds_part *w = sl_calloc(1, sizeof *w);
    if (!w)
        return sl_fail(SL_ERR_NOMEM, "out of memory opening output '%s'", dir);
    w->fd = -1;
    const char *stem = strncmp(name, "part-", 5) == 0 && name[5] && name[5] != '.' ? name + 5
                                                                                  : name;
    snprintf(w->prefix, sizeof w->prefix, "%.*s", (int)strcspn(stem, "."), stem);
    sl_status st = sl_shard_init(&w->shard, dir, name, overwrite);
    if (st == SL_OK &&
        (w->fd = sl_file_create_temp(w->shard.tmp_path, 0666)) < 0)
        st = sl_fail(SL_ERR_IO, "cannot create '%s': %s", w->shard.tmp_path, sl_file_temp_error(errno));
    if (st == SL_OK && (!(w->a = archive_write_new()) || !(w->entry = archive_entry_new())))
        st = sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", w->shard.tmp_path);
    if (st == SL_OK &&
        (sl_wds_tar_format(w->a) != ARCHIVE_OK ||
         archive_write_open2(w->a, w, NULL, tar_write, NULL, NULL) != ARCHIVE_OK))
        st = sl_fail(SL_ERR_IO, "cannot start tar shard '%s': %s", w->shard.tmp_path,
                     archive_error_string(w->a) ? archive_error_string(w->a) : "libarchive");
    if (st != SL_OK) {
        wds_free(w);
        return st;
    }
    *out = w;
    return SL_OK;
}

static sl_status broken(const wds_part *w)
{
    return sl_fail(SL_ERR_IO, "'%s' is incomplete after an earlier write error: not committed",
                   w->shard.tmp_path);
}

/* Writes member KEY.ext of `len` bytes. */
static sl_status put_member(wds_part *w, const char *ext, const void *data, size_t len)
{
    char name[128];
    snprintf(name, sizeof name, "%s_%06ld.%s", w->prefix, w->rows, ext);
    la_ssize_t n = 0;
    if (sl_wds_tar_header(w->a, w->entry, name, (int64_t)len) < ARCHIVE_WARN ||
        (len > 0 && (n = archive_write_data(w->a, data, len)) != (la_ssize_t)len)) {
        w->broken = true;
        const char *why = archive_error_string(w->a);
        return sl_fail(SL_ERR_IO, "cannot write member '%s' of '%s': %s", name,
                       w->shard.tmp_path, why ? why : "short write");
    }
    return SL_OK;
}

static sl_status wds_write(void *shared, void *part, const sl_schema_row *row)
{
    const wds_shared *ws = shared;
    wds_part *w = part;
    if (w->broken)
        return broken(w);
    json_t *o = sl_jsonl_row_object(ws->schema, row);
    if (!o)
        return sl_fail(SL_ERR_NOMEM, "out of memory writing a row to '%s'", w->shard.tmp_path);
    w->json.len = 0;
    sl_status st = sl_jsonl_dump(o, &w->json, w->shard.tmp_path);
    json_decref(o);
    if (st != SL_OK)
        return st; /* nothing of this row was written */
    st = put_member(w, "json", w->json.data, w->json.len);
    /* The answer's text alone too, as img2dataset's KEY.txt: what
     * open_clip and other trainers read as a sample's caption ("txt"). */
    const sl_pq_value *caption = ws->caption_cell >= 0 ? &row->cells[ws->caption_cell] : NULL;
    if (st == SL_OK && caption && !caption->is_null && caption->ptr)
        st = put_member(w, "txt", caption->ptr, caption->len);
    const sl_pq_value *bytes = ws->bytes_cell >= 0 ? &row->cells[ws->bytes_cell] : NULL;
    if (st == SL_OK && bytes && !bytes->is_null)
        st = put_member(w, sl_sniff_extension(bytes->ptr, bytes->len), bytes->ptr, bytes->len);
    if (st == SL_OK)
        w->rows++;
    /* One row's text is kept for the next; a large one is given back. */
    if (w->json.cap > SL_WDS_TAR_BLOCK)
        sl_buf_free(&w->json);
    return st;
}

/* The end-of-archive blocks written, the file synced and closed. */
static sl_status wds_finish(void *part)
{
    wds_part *w = part;
    if (w->broken)
        return broken(w);
    if (!w->a)
        return sl_fail(SL_ERR_INVALID_ARG, "'%s' finished twice", w->shard.tmp_path);
    sl_status st = SL_OK;
    if (archive_write_close(w->a) != ARCHIVE_OK) {
        const char *why = archive_error_string(w->a);
        st = sl_fail(SL_ERR_IO, "cannot finish '%s': %s", w->shard.tmp_path,
                     why ? why : "libarchive");
    }
    w->discard = true; /* a failed close is not tried again by the free */
    archive_write_free(w->a);
    w->a = NULL;
    if (st == SL_OK)
        st = sl_file_sync(w->fd, w->shard.tmp_path);
    if (close(w->fd) != 0 && st == SL_OK)
        st = sl_fail(SL_ERR_IO, "cannot close '%s': %s", w->shard.tmp_path, strerror(errno));
    w->fd = -1;
    if (st != SL_OK)
        w->broken = true;
    sl_buf_free(&w->json);
    return st;
}

static sl_status wds_publish(void *part) { return sl_shard_publish(&((wds_part *)part)->shard); }
static const char *wds_path(const void *part) { return ((const wds_part *)part)->shard.final_path; }
static const char *wds_temp_path(const void *part)
{
    return ((const wds_part *)part)->shard.tmp_path;
}
/* What libarchive wrote (it holds one block back: up to 64 KiB more). */
static int64_t wds_bytes(const void *part)
{
    const wds_part *w = part;
    return w->a ? (int64_t)archive_filter_bytes(w->a, -1) : 0;
}

const sl_sink_ops sl_sink_webdataset = {
    .format = "webdataset",
    .prepare = wds_prepare,
    .release = wds_release,
    .open = wds_open,
    .write = wds_write,
    .finish = wds_finish,
    .publish = wds_publish,
    .path = wds_path,
    .temp_path = wds_temp_path,
    .free = wds_free,
    .bytes = wds_bytes,
    .extension = "tar",
};
