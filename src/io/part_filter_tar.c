/* io/part_filter_tar.c — the WebDataset half of io/part_filter.h: a tar part
 * as io/wds_sink.c writes it (KEY.json holding the row, then the sample's
 * KEY.EXT members) read with libarchive as a stream of samples, a sample
 * being the consecutive members of one key (io/source_parse.h's split).
 * Only a sample's opening KEY.json is parsed (at most 64 MiB, the one thing
 * held whole); other members are skipped unread, or copied in 64 KiB
 * chunks. The copy is written as the sink writes (io/wds_tar.h: pax
 * restricted, regular files 0644 owned by 0:0 with mtime 0; the same names
 * and data), so a copy that drops nothing is the same bytes as the part.
 *
 * A row is a sample that opens with its KEY.json. A sample that opens with
 * another member (not written by the sink) is copied and never dropped, and
 * its .json is not read: a row the filter cannot drop is not reported as
 * failed either, so a retry never captions it twice. A member that is not a
 * regular file is refused (SL_ERR_DECODE) by both walks, as is a truncated
 * or damaged tar. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"
#include "io/part_filter.h"
#include "io/source_parse.h"
#include "io/wds_tar.h"

/* A row's JSON larger than this is not one sluice wrote. */
#define JSON_MAX ((int64_t)64 << 20)

/* --- reading a part, member by member ------------------------------------------------ */

/* libarchive's errno for "not this format" (its private
 * ARCHIVE_ERRNO_FILE_FORMAT): the file is there but is no tar. */
#ifdef EFTYPE
#define FILE_FORMAT EFTYPE
#else
#define FILE_FORMAT EILSEQ
#endif

typedef struct tar_in {
    const char *path;
    int fd;
    struct archive *a;
    struct archive_entry *e; /* the current member (libarchive's) */
    const char *name;        /* its path in the tar */
    int64_t at;              /* where its header is; -1 before the first */
    char *key;               /* the current sample's key; NULL: a member without one */
    bool opens;              /* the current member opens a sample */
    bool is_json;            /* its extension is exactly "json" */
} tar_in;

static void in_close(tar_in *in)
{
    if (in->a)
        archive_read_free(in->a);
    if (in->fd >= 0)
        close(in->fd); /* libarchive leaves a descriptor it was given open */
    sl_free(in->key);
    in->a = NULL;
    in->fd = -1;
    in->key = NULL;
}

/* Whether the file ends as a tar written whole does: its two zero blocks
 * (io/wds_sink.c writes no padding after them). libarchive reads a tar cut
 * where a member begins as a shorter one; a part cut there is refused, not
 * taken for one with fewer rows. */
static bool ends_whole(int fd)
{
    struct stat st;
    uint8_t tail[1024];
    if (fstat(fd, &st) != 0 || st.st_size < (off_t)sizeof tail || st.st_size % 512 != 0 ||
        pread(fd, tail, sizeof tail, st.st_size - (off_t)sizeof tail) != (ssize_t)sizeof tail)
        return false;
    for (size_t k = 0; k < sizeof tail; k++)
        if (tail[k])
            return false;
    return true;
}

static sl_status in_open(tar_in *in, const char *path)
{
    *in = (tar_in){.path = path, .fd = -1, .at = -1};
    if ((in->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return sl_fail(errno == ENOENT ? SL_ERR_NOT_FOUND : SL_ERR_IO, "cannot open '%s': %s",
                       path, strerror(errno));
    sl_status st = SL_OK;
    if (!ends_whole(in->fd))
        st = sl_fail(SL_ERR_DECODE, "'%s' is not a whole tar part: it does not end with the "
                                    "end-of-archive blocks (cut short?)", path);
    else if (!(in->a = archive_read_new()))
        st = sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", path);
    /* Plain tar only (pax included): a part is never compressed. */
    else if (archive_read_support_format_tar(in->a) != ARCHIVE_OK ||
             archive_read_open_fd(in->a, in->fd, SL_WDS_TAR_BLOCK) != ARCHIVE_OK)
        st = sl_fail(archive_errno(in->a) == FILE_FORMAT ? SL_ERR_DECODE : SL_ERR_IO,
                     "'%s' is not a tar part: %s", path, archive_error_string(in->a));
    if (st != SL_OK)
        in_close(in);
    return st;
}

/* libarchive's reason, or a stand-in. */
static const char *why(struct archive *a)
{
    return archive_error_string(a) ? archive_error_string(a) : "libarchive";
}

/* The next member into in->e, name, opens, is_json; *end true (and in->e
 * NULL) past the last. */
static sl_status in_next(tar_in *in, bool *end)
{
    *end = false;
    int rc = archive_read_next_header(in->a, &in->e);
    if (rc == ARCHIVE_EOF) {
        in->e = NULL;
        *end = true;
        return SL_OK;
    }
    if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN)
        return in->at < 0 ? sl_fail(SL_ERR_DECODE, "'%s' is not a whole tar part: no first "
                                                   "member: %s", in->path, why(in->a))
                          : sl_fail(SL_ERR_DECODE, "'%s' is not a whole tar part: no member "
                                                   "after the one at byte %lld: %s",
                                    in->path, (long long)in->at, why(in->a));
    in->at = archive_read_header_position(in->a);
    in->name = archive_entry_pathname(in->e);
    if (!in->name)
        return sl_fail(SL_ERR_DECODE, "'%s': a member at byte %lld has no name", in->path,
                       (long long)in->at);
    if (archive_entry_filetype(in->e) != AE_IFREG)
        return sl_fail(SL_ERR_DECODE, "member '%s' of '%s' is not a regular file: not a part "
                                      "sluice wrote", in->name, in->path);
    size_t key_len = 0;
    const char *ext = NULL;
    bool keyed = sl_wds_split(in->name, &key_len, &ext);
    in->is_json = keyed && strcmp(ext, "json") == 0;
    in->opens = !keyed || !in->key || strlen(in->key) != key_len ||
                strncmp(in->key, in->name, key_len) != 0;
    if (in->opens) {
        sl_free(in->key);
        in->key = NULL;
        if (keyed && !(in->key = sl_strndup(in->name, key_len)))
            return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", in->path);
    }
    return SL_OK;
}

/* The current member's data, which must be its header's size, in chunks of
 * buf[0..cap) to put(user, chunk, n) (NULL: into buf, cap being the size). */
static sl_status in_read(tar_in *in, uint8_t *buf, size_t cap,
                         sl_status (*put)(void *user, const uint8_t *data, size_t n),
                         void *user)
{
    int64_t size = archive_entry_size(in->e), got = 0;
    while (got < size) {
        size_t want = put ? cap : (size_t)(size - got);
        la_ssize_t n = archive_read_data(in->a, put ? buf : buf + got, want);
        if (n < 0)
            return sl_fail(SL_ERR_DECODE, "'%s' is not a whole tar part: member '%s' (at byte "
                                          "%lld) cut short: %s", in->path, in->name,
                           (long long)in->at, why(in->a));
        if (n == 0)
            return sl_fail(SL_ERR_DECODE, "'%s' is not a whole tar part: member '%s' ends "
                                          "after %lld of its %lld bytes", in->path, in->name,
                           (long long)got, (long long)size);
        sl_status st = put ? put(user, buf, (size_t)n) : SL_OK;
        if (st != SL_OK)
            return st;
        got += n;
    }
    return SL_OK;
}

/* The current member, a KEY.json, read whole into *text (sl_free) and
 * parsed: *row (json_decref) is an object with a string "id". */
static sl_status in_row(tar_in *in, uint8_t **text, size_t *len, json_t **row)
{
    *text = NULL;
    *row = NULL;
    int64_t size = archive_entry_size(in->e);
    if (size < 0 || size > JSON_MAX)
        return sl_fail(SL_ERR_DECODE, "member '%s' of '%s' is %lld bytes: over the %lld MiB "
                                      "a row's JSON may take", in->name, in->path,
                       (long long)size, (long long)(JSON_MAX >> 20));
    uint8_t *buf = sl_malloc((size_t)size + 1);
    if (!buf)
        return sl_fail(SL_ERR_NOMEM, "out of memory reading member '%s' of '%s'", in->name,
                       in->path);
    sl_status st = in_read(in, buf, (size_t)size, NULL, NULL);
    json_error_t jerr;
    json_t *o = NULL;
    if (st == SL_OK && !(o = json_loadb((const char *)buf, (size_t)size, 0, &jerr)))
        st = sl_fail(SL_ERR_DECODE, "member '%s' of '%s' is not JSON: %s (line %d)", in->name,
                     in->path, jerr.text, jerr.line);
    if (st == SL_OK && !json_is_string(json_object_get(o, "id")))
        st = sl_fail(SL_ERR_DECODE, "member '%s' of '%s' is not a row of sluice's output: no "
                                    "string \"id\"", in->name, in->path);
    if (st != SL_OK) {
        json_decref(o);
        sl_free(buf);
        return st;
    }
    *text = buf;
    *len = (size_t)size;
    *row = o;
    return SL_OK;
}

static const char *row_id(const json_t *row)
{
    return json_string_value(json_object_get(row, "id"));
}

/* --- the failed rows' ids ------------------------------------------------------------ */

sl_status sl_part_failed_ids_tar(const char *path, sl_part_id_fn each, void *user)
{
    tar_in in;
    sl_status st = in_open(&in, path);
    bool end = false;
    while (st == SL_OK && (st = in_next(&in, &end)) == SL_OK && !end) {
        if (!in.opens || !in.is_json)
            continue; /* libarchive skips the data unread (a seek in a file) */
        uint8_t *text;
        size_t len;
        json_t *row;
        if ((st = in_row(&in, &text, &len, &row)) != SL_OK)
            break;
        const json_t *error = json_object_get(row, "error");
        if (error && !json_is_null(error))
            st = each(user, row_id(row));
        json_decref(row);
        sl_free(text);
    }
    in_close(&in);
    return st;
}

sl_status sl_part_count_rows_tar(const char *path, long *rows)
{
    tar_in in;
    sl_status st = in_open(&in, path); /* a tar cut short is refused here */
    bool end = false;
    while (st == SL_OK && (st = in_next(&in, &end)) == SL_OK && !end)
        if (in.opens && in.is_json) /* a sample is a row; the data is skipped unread */
            ++*rows;
    in_close(&in);
    return st;
}

/* --- the copy without some rows ------------------------------------------------------ */

typedef struct tar_out {
    const char *path;
    int fd;
    struct archive *a;
    struct archive_entry *e; /* reused for every member */
    bool discard;            /* being freed after an error: nothing more is written */
} tar_out;

/* libarchive's output: tmp_path, through the checked write (core/fault.h's
 * "write" reaches it). */
static la_ssize_t out_write(struct archive *a, void *user, const void *buf, size_t len)
{
    tar_out *o = user;
    if (o->discard)
        return (la_ssize_t)len;
    if (sl_file_write_all(o->fd, buf, len, o->path) != SL_OK) {
        archive_set_error(a, EIO, "%s", sl_last_error());
        return -1;
    }
    return (la_ssize_t)len;
}

static sl_status out_failed(const tar_out *o, const char *what, const char *name)
{
    return sl_fail(SL_ERR_IO, "cannot write %s%s%s of '%s': %s", what, name ? " " : "",
                   name ? name : "", o->path, why(o->a));
}

static sl_status out_open(tar_out *o, const char *path)
{
    *o = (tar_out){.path = path, .fd = -1};
    if ((o->fd = sl_file_create_temp(path, 0666)) < 0)
        return sl_fail(SL_ERR_IO, "cannot create '%s': %s", path, sl_file_temp_error(errno));
    if (!(o->a = archive_write_new()) || !(o->e = archive_entry_new()))
        return sl_fail(SL_ERR_NOMEM, "out of memory writing '%s'", path);
    if (sl_wds_tar_format(o->a) != ARCHIVE_OK ||
        archive_write_open2(o->a, o, NULL, out_write, NULL, NULL) != ARCHIVE_OK)
        return out_failed(o, "the start", NULL);
    return SL_OK;
}

static sl_status out_header(tar_out *o, const char *name, int64_t size)
{
    return sl_wds_tar_header(o->a, o->e, name, size) < ARCHIVE_WARN
               ? out_failed(o, "member", name)
               : SL_OK;
}

static sl_status out_data(void *user, const uint8_t *data, size_t n)
{
    tar_out *o = user;
    return archive_write_data(o->a, data, n) != (la_ssize_t)n
               ? out_failed(o, "member", archive_entry_pathname(o->e))
               : SL_OK;
}

/* The end-of-archive blocks written, the file synced and closed. */
static sl_status out_finish(tar_out *o)
{
    sl_status st = archive_write_close(o->a) != ARCHIVE_OK ? out_failed(o, "the end", NULL)
                                                            : SL_OK;
    o->discard = true; /* a failed close is not tried again by the free */
    archive_write_free(o->a);
    o->a = NULL;
    if (st == SL_OK)
        st = sl_file_sync(o->fd, o->path);
    if (close(o->fd) != 0 && st == SL_OK)
        st = sl_fail(SL_ERR_IO, "cannot close '%s': %s", o->path, strerror(errno));
    o->fd = -1;
    return st;
}

static void out_free(tar_out *o)
{
    o->discard = true;
    if (o->a)
        archive_write_free(o->a);
    archive_entry_free(o->e);
    if (o->fd >= 0)
        close(o->fd);
}

/* Copies in's samples to o, leaving out those whose row's id drop holds. */
static sl_status copy_samples(tar_in *in, tar_out *o, sl_idset *drop, long *removed,
                              long *kept)
{
    uint8_t *chunk = sl_malloc(SL_WDS_TAR_BLOCK);
    if (!chunk)
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", in->path);
    sl_status st;
    bool end = false, dropping = false;
    while ((st = in_next(in, &end)) == SL_OK && !end) {
        uint8_t *text = NULL;
        size_t len = 0;
        if (in->opens) {
            dropping = false;
            json_t *row = NULL;
            if (in->is_json && (st = in_row(in, &text, &len, &row)) == SL_OK) {
                st = sl_idset_has(drop, row_id(row), &dropping);
                json_decref(row);
                ++*(dropping ? removed : kept);
            }
        }
        if (st == SL_OK && !dropping &&
            (st = out_header(o, in->name, archive_entry_size(in->e))) == SL_OK)
            st = text ? out_data(o, text, len) : in_read(in, chunk, SL_WDS_TAR_BLOCK, out_data, o);
        sl_free(text);
        if (st != SL_OK)
            break;
    }
    sl_free(chunk);
    return st;
}

sl_status sl_part_filter_tar(const char *path, const char *tmp_path, sl_idset *drop,
                             long *removed, long *kept)
{
    *removed = *kept = 0;
    tar_in in;
    sl_status st = in_open(&in, path);
    if (st != SL_OK)
        return st;
    tar_out o;
    long r = 0, k = 0;
    if ((st = out_open(&o, tmp_path)) == SL_OK && (st = copy_samples(&in, &o, drop, &r, &k)) ==
                                                      SL_OK)
        st = out_finish(&o);
    out_free(&o);
    in_close(&in);
    if (st != SL_OK) {
        unlink(tmp_path);
        return st;
    }
    *removed = r;
    *kept = k;
    return SL_OK;
}
