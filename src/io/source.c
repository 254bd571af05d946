/* io/source.c — input dispatch (expanding names, choosing the kind, one
 * file once, each input's name in ids) and the two text-shaped kinds:
 * folders (io/dir_source.c plus glob filters) and manifests (.jsonl, .csv
 * and .json arrays, read in chunks so a line or element past its limit is
 * never held whole; one
 * in a bucket by ranged GETs of a chunk each, io/ranged.h; a compressed one,
 * .gz .zst .bz2 .xz, inflated by io/unzip.h as it is read).
 * WebDataset and Parquet live in their own files behind source_kind. */
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <errno.h>
#include <glob.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/file.h"
#include "core/json.h"
#include "core/utf8.h"
#include "io/batch_line.h"
#include "io/dir_source.h"
#include "io/fetch.h"
#include "io/hf.h"
#include "io/parquet_shape.h"
#include "io/ranged.h"
#include "io/s3.h"
#include "io/s3_walk.h"
#include "io/source_impl.h"
#include "io/source_parse.h"
#include "io/unzip.h"

sl_source_params sl_source_default_params(void)
{
    sl_fetch_params f = sl_fetch_default_params();
    return (sl_source_params){.max_item_bytes = 256u << 20, .shard_size = 1000,
                              .max_line_bytes = 1u << 20, .max_columns = 10000,
                              .fetch_timeout_ms = f.timeout_ms, .fetch_retries = f.retries};
}

sl_ranged_params sl_source_ranged_params(const sl_source_params *p)
{
    sl_ranged_params r = sl_ranged_default_params();
    r.timeout_ms = p->fetch_timeout_ms;
    r.retries = p->fetch_retries;
    return r;
}

void sl_source_item_clear(sl_source_item *item)
{
    sl_free(item->id);
    sl_free(item->path);
    sl_free(item->data);
    sl_free(item->name);
    for (size_t i = 0; i < item->n_images; i++) {
        sl_free(item->images[i].path);
        sl_free(item->images[i].data);
        sl_free(item->images[i].name);
    }
    sl_free(item->images);
    json_decref(item->extra);
    sl_free(item->prompt);
    sl_free(item->error);
    sl_batch_req_clear(item->batch);
    sl_free(item->batch);
    sl_free(item->alt_id);
    *item = (sl_source_item){.shard = -1};
}

static sl_status item_vfail(sl_source_item *item, sl_status cause, const char *fmt, va_list ap)
{
    char buf[1024];
    vsnprintf(buf, sizeof buf, fmt, ap);
    sl_free(item->error);
    item->error_status = cause;
    if (!(item->error = sl_strdup(buf)))
        return sl_fail(SL_ERR_NOMEM, "out of memory reading the input");
    return SL_OK;
}

sl_status sl_source_item_fail(sl_source_item *item, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sl_status st = item_vfail(item, SL_ERR_INVALID_ARG, fmt, ap);
    va_end(ap);
    return st;
}

sl_status sl_source_item_fail_status(sl_source_item *item, sl_status cause, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sl_status st = item_vfail(item, cause, fmt, ap);
    va_end(ap);
    return st;
}

/* base_dir/value for a relative value in a bucket, its "." and ".."
 * segments resolved here (a ".." past the bucket's top dropped): the store
 * takes a key as a name, where "m/../img/a.jpg" is no "img/a.jpg". The
 * base's own segments stay as named. NULL when out of memory. */
static char *join_in_bucket(const char *base_dir, size_t bl, const char *value)
{
    const char *bucket_end = strchr(base_dir + 5, '/');
    size_t top = bucket_end && (size_t)(bucket_end - base_dir) < bl
                     ? (size_t)(bucket_end - base_dir) : bl; /* s3://bucket */
    sl_buf b = {0};
    if (!sl_buf_append(&b, base_dir, bl))
        return NULL;
    for (const char *seg = value; seg;) {
        const char *slash = strchr(seg, '/');
        size_t n = slash ? (size_t)(slash - seg) : strlen(seg);
        if (n == 2 && seg[0] == '.' && seg[1] == '.') {
            while (b.len > top && b.data[b.len - 1] != '/')
                b.len--;
            if (b.len > top)
                b.len--;
        } else if (!(n == 1 && seg[0] == '.') &&
                   (!sl_buf_append(&b, "/", 1) || !sl_buf_append(&b, seg, n))) {
            sl_buf_free(&b);
            return NULL;
        }
        seg = slash ? slash + 1 : NULL;
    }
    if (!sl_buf_append(&b, "", 1)) {
        sl_buf_free(&b);
        return NULL;
    }
    return (char *)b.data;
}

sl_status sl_source_locate(const char *value, const char *base_dir, const sl_source_params *p,
                           const char *where, sl_source_item *item)
{
    char scheme[16];
    sl_url_scheme(value, scheme);
    if (!*value)
        return sl_source_item_fail(item, "an empty string, no image path or URL");
    if (p->image_root)
        base_dir = p->image_root;
    if (!*scheme && !sl_batch_is_data_url(value)) {
        size_t bl = base_dir ? strlen(base_dir) : 0; /* "--image-root imgs/" joins as "imgs" does */
        size_t keep = bl && base_dir[bl - 1] == '/' ? bl - 1 : bl;
        item->path = value[0] == '/' || !bl ? sl_strdup(value)
                     : sl_s3_is_url(base_dir) ? join_in_bucket(base_dir, keep, value)
                     : sl_asprintf("%.*s/%s", (int)keep, base_dir, value);
    } else if (strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0 ||
               strcmp(scheme, "s3") == 0) {
        item->path = sl_strdup(value);
    } else if (strcmp(scheme, "file") == 0) {
        if (!p->allow_file_urls)
            return sl_source_item_fail(item, "'%s': file:// URLs are refused; pass "
                                             "--allow-file-urls to read local files named by URL",
                                       value);
        char *why = NULL;
        int rc = sl_file_url_path(value, &item->path, &why);
        if (rc < 0)
            return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", value);
        if (rc > 0) {
            sl_source_item_fail(item, "%s", why);
            sl_free(why);
            return SL_OK;
        }
    } else if (sl_batch_is_data_url(value)) { /* the image inline: its bytes, no path */
        char err[256];
        sl_status st = sl_batch_data_url_decode(value, &item->data, &item->len, err, sizeof err);
        if (st == SL_ERR_NOMEM)
            return sl_fail(SL_ERR_NOMEM, "out of memory decoding a data: URL");
        if (st != SL_OK)
            return sl_source_item_fail(item, "a data: URL image: %s", err);
        if (item->len > p->max_item_bytes) {
            size_t len = item->len;
            sl_free(item->data);
            item->data = NULL;
            item->len = 0;
            return sl_source_item_fail_status(item, SL_ERR_TOO_LARGE, "a data: URL image of %zu "
                                              "bytes, over the limit of %zu (--max-item-bytes)",
                                              len, p->max_item_bytes);
        }
        if (where && !(item->name = sl_strdup(where)))
            return sl_fail(SL_ERR_NOMEM, "out of memory decoding a data: URL");
        return SL_OK;
    } else {
        return sl_source_item_fail(item, "'%.200s': URL scheme '%s' is not supported (http, https, "
                                         "s3, data, and file with --allow-file-urls)",
                                   value, scheme);
    }
    return item->path ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", value);
}

sl_status sl_source_cell_text(const char *s, size_t n, const char *where, sl_source_item *item,
                              char **out)
{
    *out = NULL;
    if (memchr(s, '\0', n))
        return sl_source_item_fail(item, "%s: the path or URL holds a NUL byte after '%.200s', which "
                                         "no path may hold", where, s);
    return (*out = sl_strndup(s, n)) ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory reading %s", where);
}

sl_status sl_split_image_columns(const char *spec, char *names[SL_SOURCE_MAX_IMAGES], size_t *n)
{
    *n = 0;
    const char *at = spec;
    sl_status st = SL_OK;
    for (;;) {
        size_t len = strcspn(at, ",");
        if (len == 0)
            st = sl_fail(SL_ERR_INVALID_ARG, "--image-column '%s': an empty column name", spec);
        else if (*n == SL_SOURCE_MAX_IMAGES)
            st = sl_fail(SL_ERR_INVALID_ARG, "--image-column '%s': more than %d columns", spec,
                         SL_SOURCE_MAX_IMAGES);
        else if (!(names[*n] = sl_strndup(at, len)))
            st = sl_fail(SL_ERR_NOMEM, "out of memory");
        for (size_t k = 0; st == SL_OK && k < *n; k++)
            if (strcmp(names[k], names[*n]) == 0)
                st = sl_fail(SL_ERR_INVALID_ARG, "--image-column '%s': '%s' is named twice", spec,
                             names[k]);
        if (st != SL_OK) {
            if (*n < SL_SOURCE_MAX_IMAGES && len)
                sl_free(names[*n]);
            for (size_t k = 0; k < *n; k++)
                sl_free(names[k]);
            *n = 0;
            return st;
        }
        (*n)++;
        if (!at[len])
            return SL_OK;
        at += len + 1;
    }
}

sl_status sl_source_locate_unembedded(const char *value, const char *base_dir,
                                      const sl_source_params *p, const char *where,
                                      const char *name, bool null_bytes, sl_source_item *item)
{
    sl_status st = sl_source_locate(value, base_dir, p, name, item);
    char scheme[16];
    if (st != SL_OK || item->error || !item->path)
        return st;
    sl_url_scheme(item->path, scheme);
    if (*scheme || access(item->path, F_OK) == 0)
        return SL_OK;
    int err = errno;
    /* Classed as the decode stage classes a path in a manifest that is
     * not there (not_found), the bytes being absent either way. */
    return sl_source_item_fail_status(item, err == ENOENT ? SL_ERR_NOT_FOUND : SL_ERR_IO,
                               "%s: the image's bytes are %s, and its path '%s' cannot be "
                                     "opened: %s (a dataset saved without its images keeps only "
                                     "the paths they had where it was made: %s)",
                               where, null_bytes ? "null" : "empty", item->path, strerror(err),
                               value[0] == '/' ? "put them there, or save the dataset with its "
                                                 "images embedded"
                                               : "pass --image-root FOLDER where they are");
}

sl_status sl_source_locate_list(const char *const *values, size_t n, const char *base_dir,
                                const sl_source_params *p, const char *where,
                                sl_source_item *item)
{
    if (n == 0)
        return sl_source_item_fail(item, "%s: the list of images is empty", where);
    if (n > SL_SOURCE_MAX_IMAGES)
        return sl_source_item_fail(item, "%s: a list of %zu images, more than the %d a row may "
                                         "have", where, n, SL_SOURCE_MAX_IMAGES);
    if (!(item->images = sl_calloc(n, sizeof *item->images)))
        return sl_fail(SL_ERR_NOMEM, "out of memory reading %s", where);
    item->n_images = n;
    for (size_t i = 0; i < n; i++) {
        sl_source_item one = {0};
        sl_status st = sl_source_locate(values[i], base_dir, p, where, &one);
        item->images[i].path = one.path;
        item->images[i].data = one.data;
        item->images[i].len = one.len;
        item->images[i].name = one.name;
        if (st != SL_OK || one.error) {
            st = st == SL_OK ? sl_source_item_fail_status(item, one.error_status,
                                                          "%s: image %zu of %zu: %s", where,
                                                          i + 1, n, one.error)
                             : st;
            sl_free(one.error);
            return st;
        }
    }
    return SL_OK;
}

/* --- folder ------------------------------------------------------------------------ */

/* A manifest's read size: a local file's, and an object's (each a GET:
 * larger, so a long manifest costs few requests). */
enum { CHUNK_BYTES = 1 << 16, REMOTE_CHUNK_BYTES = 1 << 20 };

/* The kinds a dataset's files are, the likeliest to be its rows first: a
 * Hugging Face dataset saved to disk holds .json files of its metadata
 * beside its .arrow files, a hub repository a README beside its .parquet. */
enum { N_DATA_KINDS = 6 };
static const char *const data_kinds[N_DATA_KINDS] = {"parquet", "arrow", "webdataset",
                                                     "jsonl",   "csv",   "json"};

struct source_reader {
    /* folder */
    sl_dir_source *dir;
    sl_s3_walk *s3;           /* an s3:// folder: its keys in a folder walk's order, */
    sl_s3_list *s3_list;      /* ... or, for a count (unsorted_folders), as listed */
    char *s3_prefix;          /* ... the URL with a trailing '/' */
    uint64_t s3_keys;         /* ... keys listed so far, those skipped too */
    char *folder;             /* the folder as named (a local path or the s3:// URL) */
    uint64_t folder_rows;     /* rows it gave so far */
    uint64_t n_data_files[N_DATA_KINDS]; /* files it skipped that a dataset's reader
                                            reads, by kind (data_kinds), */
    char *first_data_file[N_DATA_KINDS]; /* ... and the first of each, its path under
                                            the folder */
    const sl_source_params *p;
    char *image_columns[SL_SOURCE_MAX_IMAGES]; /* manifest: several image columns (A,B) */
    size_t n_image_columns;
    const char *name; /* the input's name in ids: a folder's prefix ("" for none), a
                         manifest's FILE in FILE:LINE */
    /* manifest */
    FILE *fp;                 /* a local file, or */
    sl_ranged *object;        /* ... an object in a bucket, read a chunk at a time */
    uint64_t object_at;       /* ... the offset of the next chunk */
    sl_unzip *z;              /* a compressed manifest: inflates what raw_read gives */
    uint8_t *zraw;            /* ... the compressed bytes of one read, chunk_cap of them */
    size_t zraw_pos, zraw_len; /* ... where those not yet inflated begin, and how many */
    bool zraw_end;            /* ... the file ended after them */
    char *read_error;         /* a read that failed (retried as io/s3.h retries): the
                                 input ends here, with one failed row saying so */
    bool read_error_told;
    bool read_failed;         /* ... and it is a read of the file's bytes (the store, the
                                 disk), not what they hold: another try may get further */
    bool read_missing;        /* ... and the store said the object is not there */
    char *file, *base_dir;
    bool csv;
    bool json_array;          /* a .json manifest: one array, an element a row (r->line counts them) */
    bool array_ended;         /* ... its closing ] was read */
    char **header;
    size_t n_header;
    long line;
    char *chunk;              /* read from the file, chunk_cap bytes */
    size_t chunk_cap, chunk_pos, chunk_len;
    bool eof;
    sl_buf text;              /* the line or record read, up to max_line_bytes;
                                 NUL-terminated once a line was read */
    bool too_long;            /* the line or record passed max_line_bytes: not kept */
    size_t end_crs;           /* the CRs before the last line's LF, left out of text */
    int csv_state;            /* sl_csv_scan over the record read so far */
};

/* An s3:// folder: the objects under the prefix (as a folder: "s3://b/imgs"
 * lists imgs/..., not imgs2/...), read a page at a time. */
static sl_status s3_folder_open(const char *url, source_reader *r, char **open_error)
{
    size_t n = strlen(url);
    bool slash = n && url[n - 1] == '/';
    const sl_s3 *s3 = sl_s3_shared();
    if (!(r->s3_prefix = slash ? sl_strdup(url) : sl_asprintf("%s/", url)))
        return sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", url);
    /* A count needs no order: the walk's would list a folder again on its
     * own when many keys wait for it (io/s3_walk.h). */
    if (!s3 || (r->p->unsorted_folders ? sl_s3_list_open(s3, r->s3_prefix, &r->s3_list)
                                       : sl_s3_walk_open(s3, r->s3_prefix, &r->s3)) != SL_OK)
        *open_error = sl_strdup(sl_last_error());
    return SL_OK;
}

/* The next key of an s3:// folder, from its walk or its listing. */
static sl_status s3_folder_key(source_reader *r, const char **key, bool *done)
{
    uint64_t size;
    return r->s3 ? sl_s3_walk_next(r->s3, key, done)
                 : sl_s3_list_next(r->s3_list, key, &size, done);
}

static void s3_folder_unlist(source_reader *r)
{
    sl_s3_walk_free(r->s3);
    r->s3 = NULL;
    sl_s3_list_free(r->s3_list);
    r->s3_list = NULL;
}

static const char *kind_by_name(const char *name);

/* Whether a path under a dataset's folder is one Spark, Hive or pyarrow
 * keep beside its files (_SUCCESS, _temporary/, .crc): a segment starting
 * with '.' or '_'. */
static bool beside_dataset(const char *rel)
{
    for (const char *c = rel; *c; c += strcspn(c, "/"), c += *c == '/')
        if (*c == '.' || *c == '_')
            return true;
    return false;
}

/* A folder of Parquet files (a dataset as Spark, Hugging Face or pyarrow
 * write it) read as a folder of images had no rows and ended well: its
 * files are counted as the walk skips them, to say so (folder_next). */
static void note_skipped(source_reader *r, const char *rel)
{
    const char *k = beside_dataset(rel) ? NULL : kind_by_name(rel);
    for (size_t i = 0; k && i < N_DATA_KINDS; i++)
        if (strcmp(k, data_kinds[i]) == 0 && r->n_data_files[i]++ == 0)
            r->first_data_file[i] = sl_strdup(rel);
}

static bool folder_wants(const char *rel, void *user)
{
    if (sl_is_media_name(rel))
        return true;
    note_skipped(user, rel);
    return false;
}

static sl_status folder_open(const char *file, const char *name, const sl_source_params *p,
                             source_reader **out, char **open_error, bool *cut_short)
{
    source_reader *r = sl_calloc(1, sizeof *r);
    if (!r)
        return sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
    r->p = p;
    r->name = name;
    if (!(r->folder = sl_strdup(file))) {
        sl_free(r);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
    }
    if (sl_s3_is_url(file)) {
        /* Its listing's first page is read at the first item (a failed
         * one cut short there). */
        sl_status st = s3_folder_open(file, r, open_error);
        if (st != SL_OK || *open_error) {
            s3_folder_unlist(r);
            sl_free(r->s3_prefix);
            sl_free(r->folder);
            sl_free(r);
            return *open_error || st != SL_OK ? st
                                              : sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'",
                                                        file);
        }
        *out = r;
        return SL_OK;
    }
    sl_status st = sl_dir_source_open(file, !p->unsorted_folders, &r->dir);
    if (st != SL_OK) {
        *open_error = sl_strdup(sl_last_error());
        *cut_short = st == SL_ERR_IO;
        sl_free(r->folder);
        sl_free(r);
        return *open_error ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
    }
    sl_dir_source_choose(r->dir, folder_wants, r);
    if (p->quiet)
        sl_dir_source_quiet(r->dir);
    *out = r;
    return SL_OK;
}

/* The id of a row about the whole folder (its listing failed, it holds
 * no images): its name among several inputs, or alone (its rows' ids are
 * then the bare paths) its last component, never "" (an id that names
 * nothing, and one every such folder would share); the '/' keeps it apart
 * from every image's id (a key ending in '/' is not read). */
static char *folder_id(const source_reader *r)
{
    if (*r->name)
        return sl_asprintf("%s/", r->name);
    size_t len = strlen(r->folder);
    while (len > 1 && r->folder[len - 1] == '/')
        len--;
    size_t start = len;
    while (start > 0 && r->folder[start - 1] != '/')
        start--;
    return sl_asprintf("%.*s/", (int)(len - start), r->folder + start);
}

/* At the end of a folder that gave no row but holds a dataset's files:
 * one failed row saying how to read them, not a run of no rows that
 * ended well. */
static sl_status no_images_row(source_reader *r, sl_source_item *item, bool *done)
{
    size_t k = 0;
    while (k < N_DATA_KINDS && !r->n_data_files[k])
        k++;
    if (r->folder_rows || k == N_DATA_KINDS)
        return SL_OK;
    uint64_t n = r->n_data_files[k];
    *done = false;
    r->folder_rows++;
    item->id = folder_id(r);
    item->path = sl_strdup(r->folder);
    item->error_status = SL_ERR_INVALID_ARG; /* the input is of another kind */
    item->error = sl_asprintf(
        "folder '%s' holds no image or video files, but %llu %s file%s ('%s'%s): pass "
        "--input-format %s to read %s",
        r->folder, (unsigned long long)n, data_kinds[k], n == 1 ? "" : "s",
        r->first_data_file[k] ? r->first_data_file[k] : "?", n > 1 ? ", ..." : "",
        data_kinds[k], n == 1 ? "it" : "them");
    return item->id && item->path && item->error
               ? SL_OK
               : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->folder);
}

/* An s3:// folder under which the store holds nothing (and no object has
 * its name: s3_input_name): one failed row naming it, not a run of no
 * rows that ended well, as a local folder that is not there stops the
 * command. */
static sl_status nothing_row(source_reader *r, sl_source_item *item, bool *done)
{
    *done = false;
    r->s3_keys++;
    item->id = folder_id(r);
    item->path = sl_strdup(r->s3_prefix);
    item->error_status = SL_ERR_NOT_FOUND;
    item->error = sl_asprintf("nothing in the store at '%.*s': no object of that name, none "
                              "under '%s'",
                              (int)strlen(r->s3_prefix) - 1, r->s3_prefix, r->s3_prefix);
    return item->id && item->path && item->error
               ? SL_OK
               : sl_fail(SL_ERR_NOMEM, "out of memory listing '%s'", r->s3_prefix);
}

static sl_status s3_folder_next(source_reader *r, sl_source_item *item, bool *done)
{
    const char *bucket_end = strchr(r->s3_prefix + 5, '/');
    size_t key_prefix = strlen(bucket_end + 1);
    for (;;) {
        const char *key;
        if (s3_folder_key(r, &key, done) != SL_OK) {
            /* A listing that fails midway ends this input with an error row;
             * the other inputs go on. The keys not given yet (those of the
             * pages to come, and those a walk holds back) have no row of
             * their own: the row says so, and a rerun lists the folder again
             * and reads those not done (this row stays, failed, until
             * --retry-failed takes it out: the output holds it). */
            *done = false;
            item->id = folder_id(r);
            item->path = sl_strdup(r->s3_prefix);
            item->error_status = SL_ERR_IO;
            item->error = r->s3_keys
                              ? sl_asprintf("the listing of %s stopped after %llu rows, the "
                                            "rest of the folder unread (run the same command "
                                            "with --retry-failed to read it and take this "
                                            "row out): %s",
                                            r->s3_prefix, (unsigned long long)r->folder_rows,
                                            sl_last_error())
                              : sl_strdup(sl_last_error());
            item->cut_short = true;
            s3_folder_unlist(r);
            return item->id && item->path && item->error ? SL_OK
                                           : sl_fail(SL_ERR_NOMEM, "out of memory listing '%s'",
                                                     r->s3_prefix);
        }
        if (*done && !r->s3_keys)
            return nothing_row(r, item, done);
        if (*done)
            return no_images_row(r, item, done);
        r->s3_keys++;
        const char *rel = key + key_prefix;
        if (!*rel || rel[strlen(rel) - 1] == '/' || sl_is_mac_metadata(rel) ||
            !folder_wants(rel, r) ||
            !sl_glob_filter(rel, r->p->include, r->p->n_include, r->p->exclude,
                            r->p->n_exclude))
            continue;
        r->folder_rows++;
        item->id = *r->name ? sl_asprintf("%s/%s", r->name, rel) : sl_strdup(rel);
        item->path = sl_asprintf("%.*s/%s", (int)(bucket_end - r->s3_prefix), r->s3_prefix, key);
        if (!item->id || !item->path)
            return sl_fail(SL_ERR_NOMEM, "out of memory listing '%s'", r->s3_prefix);
        return SL_OK;
    }
}

static sl_status folder_next(source_reader *r, sl_source_item *item, bool *done)
{
    if (r->s3_prefix) {
        if (!r->s3 && !r->s3_list) { /* its listing failed */
            *done = true;
            return SL_OK;
        }
        return s3_folder_next(r, item, done);
    }
    for (;;) {
        const sl_dir_entry *e;
        sl_status st = sl_dir_source_next(r->dir, &e);
        if (st != SL_OK)
            return st;
        if (!e) {
            *done = true;
            return no_images_row(r, item, done);
        }
        if (!e->error && !sl_glob_filter(e->rel, r->p->include, r->p->n_include, r->p->exclude,
                                         r->p->n_exclude))
            continue;
        r->folder_rows++;
        item->id = *r->name ? sl_asprintf("%s/%s", r->name, e->rel) : sl_strdup(e->rel);
        item->error_status = e->error ? SL_ERR_IO : SL_OK; /* a folder it cannot list */
        if (!item->id || !(item->path = sl_strdup(e->path)) ||
            (e->error && !(item->error = sl_strdup(e->error))))
            return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", e->path);
        return SL_OK;
    }
}

static void folder_close(source_reader *r)
{
    sl_dir_source_free(r->dir);
    s3_folder_unlist(r);
    sl_free(r->s3_prefix);
    sl_free(r->folder);
    for (size_t i = 0; i < N_DATA_KINDS; i++)
        sl_free(r->first_data_file[i]);
    sl_free(r);
}

static const source_kind folder_kind = {"folder", folder_open, folder_next, folder_close, NULL, NULL,
                                        false};

/* --- single files -------------------------------------------------------------------- */

/* An image or video file named as an input (a local file, or an object or
 * URL read in the decode stage): one row, its id the file's name in ids. */
static sl_status file_open(const char *file, const char *name, const sl_source_params *p,
                           source_reader **out, char **open_error, bool *cut_short)
{
    (void)cut_short; /* nothing is read here: the decode stage reads the file */
    source_reader *r = sl_calloc(1, sizeof *r);
    if (!r || !(r->file = sl_strdup(file))) {
        sl_free(r);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
    }
    r->p = p;
    r->name = name;
    *out = r;
    return SL_OK;
}

static sl_status file_next(source_reader *r, sl_source_item *item, bool *done)
{
    *done = r->eof;
    if (r->eof)
        return SL_OK;
    r->eof = true;
    if (!(item->id = sl_strdup(r->name)) || !(item->path = sl_strdup(r->file)))
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    return SL_OK;
}

static void file_close(source_reader *r)
{
    sl_free(r->file);
    sl_free(r);
}

static int64_t file_count(const char *file, const sl_source_params *p, const atomic_bool *stop)
{
    return 1;
}

static const source_kind file_kind = {"file", file_open, file_next, file_close, file_count, NULL,
                                      false};

/* --- manifests ----------------------------------------------------------------------- */

static void manifest_close(source_reader *r)
{
    if (!r)
        return;
    sl_unzip_free(r->z);
    if (r->fp)
        fclose(r->fp);
    sl_ranged_free(r->object);
    sl_free(r->zraw);
    sl_free(r->read_error);
    sl_free(r->file);
    sl_free(r->base_dir);
    sl_csv_fields_free(r->header, r->n_header);
    for (size_t k = 0; k < r->n_image_columns; k++)
        sl_free(r->image_columns[k]);
    sl_free(r->chunk);
    sl_buf_free(&r->text);
    sl_free(r);
}

/* Adds line bytes to the line or record being read: scanned as CSV, kept
 * while within max_line_bytes. False when out of memory. */
static bool put(source_reader *r, const char *s, size_t n)
{
    if (r->csv)
        r->csv_state = sl_csv_scan(r->csv_state, s, n);
    if (r->too_long || n == 0)
        return true;
    if (n > r->p->max_line_bytes - r->text.len) {
        r->too_long = true; /* read on to the end, keeping nothing more */
        return true;
    }
    if (!sl_buf_reserve(&r->text, n + 1))
        return false;
    memcpy(r->text.data + r->text.len, s, n);
    r->text.len += n;
    r->text.data[r->text.len] = '\0';
    return true;
}

/* Up to cap bytes of the file as stored, from where the last read ended,
 * into buf: how many (0 at its end); -1 when the read fails, *error then
 * saying why. */
static ssize_t raw_read(source_reader *r, char *buf, size_t cap, char **error)
{
    size_t n = 0;
    if (r->object) {
        sl_status st = sl_ranged_read(r->object, buf, cap, r->object_at, &n);
        if (st != SL_OK) {
            *error = sl_strdup(sl_last_error());
            r->read_missing = st == SL_ERR_NOT_FOUND;
            return -1;
        }
        r->object_at += n;
    } else {
        int err = sl_fault("manifest.read", r->file); /* tests: a disk's EIO midway */
        n = err ? 0 : fread(buf, 1, cap, r->fp);
        if (err || (n == 0 && ferror(r->fp))) {
            *error = sl_asprintf("cannot read '%s': %s", r->file, strerror(err ? err : errno));
            return -1;
        }
    }
    return (ssize_t)n;
}

/* Sets r up to inflate what raw_read gives; the first bytes are read, so a
 * file that is not what its name says fails here: NULL, or why. The bytes
 * say the compression, not the name (a .gz that holds zstd is read). */
static char *open_decompression(source_reader *r)
{
    if (!(r->zraw = sl_malloc(r->chunk_cap)))
        return sl_strdup("out of memory");
    const char *kind = r->file + strlen(r->file) - sl_compression_suffix_len(r->file) + 1;
    char *error = NULL;
    ssize_t n = raw_read(r, (char *)r->zraw, r->chunk_cap, &error);
    if ((r->read_failed = n < 0))
        return error;
    if (n == 0)
        return sl_asprintf("empty file (0 bytes): no %s data in it", kind);
    r->zraw_len = (size_t)n;
    sl_unzip_kind k;
    if (!sl_unzip_sniff(r->zraw, r->zraw_len, &k))
        return sl_asprintf("named .%s, but its bytes are not compressed", kind);
    if (sl_unzip_new(k, &r->z) != SL_OK)
        return sl_strdup(sl_last_error());
    return NULL;
}

/* Up to cap bytes of the file's text (decompressed) into buf: how many, 0
 * at its end or when the read fails (r->read_error then says why). Every
 * line inflated before a damaged or missing tail comes out before the error. */
static size_t text_read(source_reader *r, char *buf, size_t cap)
{
    if (!r->z) {
        ssize_t n = raw_read(r, buf, cap, &r->read_error);
        r->read_failed = n < 0;
        return n < 0 ? 0 : (size_t)n;
    }
    for (;;) {
        if (r->zraw_len == 0 && !r->zraw_end) {
            ssize_t n = raw_read(r, (char *)r->zraw, r->chunk_cap, &r->read_error);
            if ((r->read_failed = n < 0))
                return 0;
            r->zraw_pos = 0;
            r->zraw_len = (size_t)n;
            r->zraw_end = n == 0;
        }
        const uint8_t *in = r->zraw + r->zraw_pos;
        size_t left = r->zraw_len, made;
        if (sl_unzip_run(r->z, &in, &left, r->zraw_end, (uint8_t *)buf, cap, &made) != SL_OK) {
            r->read_error = sl_asprintf("cannot decompress '%s': %s", r->file, sl_last_error());
            return 0;
        }
        r->zraw_pos += r->zraw_len - left;
        r->zraw_len = left;
        if (made > 0 || r->zraw_end)
            return made;
    }
}

/* The next chunk of the file's text into r->chunk; at its end, or when the
 * read fails (r->read_error then says why), r->eof. */
static void fill(source_reader *r)
{
    r->chunk_pos = 0;
    r->chunk_len = text_read(r, r->chunk, r->chunk_cap);
    r->eof = r->chunk_len == 0;
}

/* Steps over a UTF-8 byte order mark at the start of the file's text (as
 * Python's utf-8-sig, pandas and DuckDB do): Windows tools write one, and
 * kept it would be part of the first column's name or the first line's
 * JSON. Called once, before anything is read; a first chunk shorter than
 * the mark (a stream's first piece) is topped up so it can be told. */
#define UTF8_BOM "\xef\xbb\xbf"

static void skip_bom(source_reader *r)
{
    static const char bom[] = UTF8_BOM;
    if (r->chunk_pos == r->chunk_len && !r->eof)
        fill(r);
    while (!r->eof && !r->read_error && r->chunk_len < 3 &&
           memcmp(r->chunk, bom, r->chunk_len) == 0) {
        size_t n = text_read(r, r->chunk + r->chunk_len, r->chunk_cap - r->chunk_len);
        if (n == 0)
            break;
        r->chunk_len += n;
    }
    if (r->chunk_len >= 3 && memcmp(r->chunk, bom, 3) == 0)
        r->chunk_pos = 3;
}

/* Reads the next line, without its line end (LF, CRLF; r->end_crs counts
 * its CRs), onto r->text; a line past the limit is read to its end in
 * chunks, never held whole. Returns 1 when a line was read, 0 at the end of
 * the file (or where a read failed: r->read_error), -1 out of memory. */
static int read_line(source_reader *r)
{
    bool any = false;
    size_t crs = 0; /* CRs held back: content unless the line ends after them */
    for (;;) {
        if (r->chunk_pos == r->chunk_len) {
            if (!r->eof)
                fill(r);
            if (r->eof)
                break;
        }
        any = true;
        const char *seg = r->chunk + r->chunk_pos;
        size_t avail = r->chunk_len - r->chunk_pos;
        const char *nl = memchr(seg, '\n', avail);
        size_t n = nl ? (size_t)(nl - seg) : avail;
        r->chunk_pos += n + (nl ? 1 : 0);
        size_t body = n;
        while (body > 0 && seg[body - 1] == '\r')
            body--;
        if (body > 0) {
            for (; crs > 0; crs--)
                if (!put(r, "\r", 1))
                    return -1;
            if (!put(r, seg, body))
                return -1;
        }
        crs += n - body;
        if (nl)
            break;
    }
    if (!any || r->read_error) /* a line cut short by a failed read is not one */
        return 0;
    r->end_crs = crs;
    r->line++;
    if (!r->text.data) { /* an empty first line: still a string */
        if (!sl_buf_reserve(&r->text, 1))
            return -1;
        r->text.data[0] = '\0';
    }
    return 1;
}

/* Starts a new line or record. */
static void restart(source_reader *r)
{
    r->text.len = 0;
    if (r->text.data)
        r->text.data[0] = '\0';
    r->too_long = false;
    r->csv_state = SL_CSV_FIELD_START;
}

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isspace((unsigned char)s[i]))
            return false;
    return true;
}

/* The next line that is not blank onto r->text (a line past the limit:
 * r->too_long, its text not kept); *done at the end of the file. */
/* The next chunk's bytes, when the current one is used up; false at the
 * end of the file (or where a read failed). */
static bool more(source_reader *r)
{
    if (r->chunk_pos == r->chunk_len && !r->eof)
        fill(r);
    return r->chunk_pos < r->chunk_len;
}

/* A .json manifest's opening: white space, then '['. False when the file
 * holds something else. */
static bool array_begin(source_reader *r)
{
    while (more(r)) {
        char c = r->chunk[r->chunk_pos++];
        if (c == '[')
            return true;
        if (!isspace((unsigned char)c))
            return false;
    }
    return false;
}

/* After the array's ']': only white space may follow. Anything else would
 * be rows never read and never told (two arrays one after the other, as
 * `cat a.json b.json` makes, gave the first array's rows and dropped the
 * second's in silence): it is the input's failed row instead. False out
 * of memory. */
static bool array_end(source_reader *r)
{
    while (more(r)) {
        char c = r->chunk[r->chunk_pos++];
        if (!isspace((unsigned char)c))
            return r->read_error || (r->read_error = sl_asprintf(
                                         "the file goes on after its JSON array ends ('%c' follows "
                                         "the closing ']'): a .json manifest holds one array (join "
                                         "several into one, or write one object a line as .jsonl)",
                                         isprint((unsigned char)c) ? c : '?'));
    }
    return true;
}

/* The next element of a .json manifest's array onto r->text (through put,
 * so one past max_line_bytes is scanned to its end, never held): strings
 * and nesting are followed to find where it ends. Returns 1 when one was
 * read, 0 at the array's end (or the file's: then r->read_error says the
 * array is cut short), -1 out of memory. */
static int read_element(source_reader *r)
{
    for (;;) { /* white space and the commas between elements */
        if (r->array_ended || !more(r)) {
            if (!r->array_ended && !r->read_error &&
                !(r->read_error = sl_asprintf("the JSON array is never closed (the file ends after "
                                              "element %ld)", r->line)))
                return -1;
            return 0;
        }
        char c = r->chunk[r->chunk_pos];
        if (c == ']') {
            r->chunk_pos++;
            r->array_ended = true;
            return array_end(r) ? 0 : -1;
        }
        if (c != ',' && !isspace((unsigned char)c))
            break;
        r->chunk_pos++;
    }
    int depth = 0;
    bool in_string = false, escaped = false, done = false;
    while (!done) {
        if (!more(r)) {
            if (!r->read_error &&
                !(r->read_error = sl_asprintf("the file ends inside element %ld of its JSON array", r->line + 1)))
                return -1;
            return 0;
        }
        size_t start = r->chunk_pos, i = start;
        for (; i < r->chunk_len && !done; i++) {
            char c = r->chunk[i];
            if (in_string) {
                if (escaped)
                    escaped = false;
                else if (c == '\\')
                    escaped = true;
                else if (c == '"')
                    in_string = false;
            } else if (c == '"') {
                in_string = true;
            } else if (c == '{' || c == '[') {
                depth++;
            } else if ((c == '}' || c == ']') && depth > 0) {
                done = --depth == 0;
            } else if ((c == ']' || c == ',') && depth == 0) {
                /* A bare value ends before the next comma or the array's
                 * end; never at its first byte, which the loop above takes
                 * when it is one of them, so every element moves on. A stray
                 * '}' is the value's (JSON then says what is wrong). */
                done = true;
                i--;
            }
        }
        r->chunk_pos = i;
        if (!put(r, r->chunk + start, i - start))
            return -1;
    }
    r->line++;
    if (!r->text.data) {
        if (!sl_buf_reserve(&r->text, 1))
            return -1;
        r->text.data[0] = '\0';
    }
    return 1;
}

static sl_status next_line(source_reader *r, bool *done)
{
    int rc;
    if (r->json_array) {
        restart(r);
        if ((rc = read_element(r)) <= 0) {
            *done = rc == 0;
            return rc == 0 ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
        }
        return SL_OK;
    }
    do {
        restart(r);
        if ((rc = read_line(r)) <= 0) {
            *done = rc == 0;
            return rc == 0 ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
        }
    } while (!r->too_long && blank((const char *)r->text.data, r->text.len));
    return SL_OK;
}

/* One CSV record, continuing over lines while a quoted field is open; a
 * record past max_line_bytes is read to its end without being kept. Returns
 * 0 ok, 1 at the end, -1 malformed (err set), -2 out of memory. */
static int read_csv_record(source_reader *r, char ***fields, size_t *n, long *first_line,
                           char *err, size_t errlen)
{
    int rc;
    do {
        restart(r);
        if ((rc = read_line(r)) <= 0)
            return rc == 0 ? 1 : -2;
    } while (!r->too_long && blank((const char *)r->text.data, r->text.len));
    *first_line = r->line;
    while (r->csv_state == SL_CSV_QUOTED) {
        /* A line end inside quotes is the field's, its bytes as they were
         * (RFC 4180): only a record's own end may be CRLF or LF. */
        for (size_t k = 0; k < r->end_crs; k++)
            if (!put(r, "\r", 1))
                return -2;
        if (!put(r, "\n", 1) || (rc = read_line(r)) < 0)
            return -2;
        if (rc == 0 && r->read_error)
            return 1; /* not the file's end: the read failed (read_error_item says so) */
        if (rc == 0) {
            snprintf(err, errlen, "a quoted field is never closed (the file ends inside it)");
            return -1;
        }
    }
    if (r->too_long) {
        if (r->line > *first_line)
            snprintf(err, errlen, "the record (lines %ld-%ld) is longer than the limit of %zu "
                                  "bytes", *first_line, r->line, r->p->max_line_bytes);
        else
            snprintf(err, errlen, "the record is longer than the limit of %zu bytes",
                     r->p->max_line_bytes);
        return -1;
    }
    rc = sl_csv_split((const char *)r->text.data, r->text.len, r->p->max_columns, fields, n, err, errlen);
    if (rc == 1) /* never: the scan and the split agree on where a record ends */
        snprintf(err, errlen, "a quoted field is never closed");
    return rc == 1 ? -1 : rc;
}

const char *const sl_source_auto_image_columns[] = {"image",     "path", "url",      "images",
                                                    "file_name", "URL",  "image_url"};
const size_t sl_source_n_auto_image_columns =
    sizeof sl_source_auto_image_columns / sizeof *sl_source_auto_image_columns;

/* A local manifest for reading, through sl_file_open_regular: fopen() of a
 * FIFO waits for a writer forever (the run and its count pass hung on one
 * named as an input, and SIGTERM could not end them); a device would be
 * read without end. */
static sl_status open_local(const char *file, FILE **fp)
{
    int fd;
    uint64_t size;
    sl_status st = sl_file_open_regular(file, &fd, &size);
    if (st != SL_OK)
        return st;
    if (!(*fp = fdopen(fd, "r"))) {
        st = sl_fail(SL_ERR_NOMEM, "%s: %s", file, strerror(errno));
        close(fd);
    }
    return st;
}

static sl_status manifest_open(const char *file, const char *name, const sl_source_params *p,
                               source_reader **out, char **open_error, bool *cut_short)
{
    source_reader *r = sl_calloc(1, sizeof *r);
    bool remote = sl_s3_is_url(file);
    size_t cap = remote ? REMOTE_CHUNK_BYTES : CHUNK_BYTES;
    sl_status st;
    if (!r || !(r->file = sl_strdup(file)) || !(r->chunk = sl_malloc(cap)))
        goto nomem;
    r->chunk_cap = cap;
    r->p = p;
    r->name = name;
    if (p->image_column && strchr(p->image_column, ',') &&
        sl_split_image_columns(p->image_column, r->image_columns, &r->n_image_columns) != SL_OK)
        goto nomem; /* the names were checked before the run: only memory fails */
    const char *slash = strrchr(file, '/');
    r->base_dir = slash ? sl_strndup(file, (size_t)(slash - file)) : sl_strdup("");
    if (!r->base_dir)
        goto nomem;
    r->csv = sl_base_ends_with(file, ".csv");
    r->json_array = sl_base_ends_with(file, ".json");
    if (p->format && strcmp(p->format, "json") == 0)
        r->csv = false, r->json_array = true;
    if (p->format && strcmp(p->format, "csv") == 0)
        r->csv = true, r->json_array = false;
    else if (p->format && (strcmp(p->format, "jsonl") == 0 ||
                           strcmp(p->format, "openai-batch") == 0))
        r->csv = false, r->json_array = false;
    if (remote) {
        /* The first chunk now: a missing object fails the input at its open. */
        if (sl_ranged_open(file, &r->object) != SL_OK)
            r->read_error = sl_strdup(sl_last_error());
        else if (sl_compression_suffix_len(file))
            r->read_error = open_decompression(r);
        if (!r->read_error)
            fill(r);
        if (r->read_error) {
            *open_error = sl_asprintf("cannot read manifest '%s': %s", file, r->read_error);
            *cut_short = r->read_failed && !r->read_missing;
            manifest_close(r);
            return *open_error ? SL_OK
                               : sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
        }
    } else if ((st = open_local(file, &r->fp)) != SL_OK) {
        *open_error = sl_asprintf("cannot read manifest: %s", sl_last_error());
        *cut_short = st == SL_ERR_IO;
        manifest_close(r);
        return *open_error ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
    } else if (sl_compression_suffix_len(file) && (r->read_error = open_decompression(r)) != NULL) {
        *open_error = sl_asprintf("cannot read manifest '%s': %s", file, r->read_error);
        *cut_short = r->read_failed;
        manifest_close(r);
        return *open_error ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
    }
    skip_bom(r);
    /* UTF-16 (what Windows PowerShell's `>` and Out-File write): every
     * other byte a NUL, so each line failed as "not UTF-8" or a NUL byte,
     * never saying why. Its byte order mark tells it. */
    if (r->chunk_len - r->chunk_pos >= 2 && r->chunk_pos == 0 &&
        (memcmp(r->chunk, "\xff\xfe", 2) == 0 || memcmp(r->chunk, "\xfe\xff", 2) == 0)) {
        *open_error = sl_asprintf("manifest '%s': the file is UTF-16 (it starts with a UTF-16 byte "
                                  "order mark); manifests are UTF-8: save it as UTF-8", file);
        manifest_close(r);
        return *open_error ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
    }
    if (r->csv) {
        char err[256];
        long line;
        int rc = read_csv_record(r, &r->header, &r->n_header, &line, err, sizeof err);
        if (rc == -2 || (rc == 0 && sl_csv_unique_names(r->header, r->n_header) != 0))
            goto nomem;
        /* Lines that end in CR alone (Excel's "CSV (Macintosh)") are one
         * line here: the whole file was its header, and the run wrote no
         * row and exited 0. A header name never holds a CR otherwise. */
        for (size_t i = 0; rc == 0 && i < r->n_header; i++)
            if (strchr(r->header[i], '\r')) {
                snprintf(err, sizeof err, "the header holds a carriage return (CR) not followed by a "
                                          "line feed: lines that end in CR alone (an old Mac CSV) "
                                          "are not read; convert the line ends to LF or CRLF");
                rc = -1;
            }
        if (rc != 0) {
            *cut_short = r->read_failed && !r->read_missing;
            *open_error = r->read_error
                              ? sl_asprintf("cannot read manifest '%s': %s", file, r->read_error)
                              : sl_asprintf("manifest '%s': %s", file,
                                            rc > 0 ? "empty (no header row)" : err);
            manifest_close(r);
            return *open_error ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
        }
    }
    if (r->json_array && !array_begin(r)) {
        *cut_short = r->read_failed && !r->read_missing;
        *open_error = r->read_error
                          ? sl_asprintf("cannot read manifest '%s': %s", file, r->read_error)
                          : sl_asprintf("manifest '%s': a .json manifest holds one JSON array of objects, "
                                        "a row each (for an object a line, name it .jsonl)", file);
        manifest_close(r);
        return *open_error ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
    }
    *out = r;
    return SL_OK;
nomem:
    manifest_close(r);
    return sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
}

/* The CSV column holding the image, or -1. */
static int csv_image_column(const source_reader *r)
{
    if (r->n_image_columns)
        return -1; /* several: read from the row's columns, which keep them */
    for (size_t k = 0; k < (r->p->image_column ? 1 : sl_source_n_auto_image_columns); k++)
        for (size_t i = 0; i < r->n_header; i++)
            if (strcmp(r->header[i], r->p->image_column ? r->p->image_column
                                                        : sl_source_auto_image_columns[k]) == 0)
                return (int)i;
    return -1;
}

/* A JSONL row's list of images: each a path or URL string. */
static sl_status manifest_image_list(source_reader *r, json_t *list, const char *key, long line,
                                     sl_source_item *item)
{
    size_t n = json_array_size(list);
    const char *values[SL_SOURCE_MAX_IMAGES];
    for (size_t i = 0; i < n && i < SL_SOURCE_MAX_IMAGES; i++) {
        json_t *v = json_array_get(list, i);
        if (!json_is_string(v))
            return sl_source_item_fail(item, "%s:%ld: column '%s': image %zu of %zu is not a "
                                             "string", r->file, line, key, i + 1, n);
        values[i] = json_string_value(v);
    }
    char *where = sl_asprintf("%s:%ld: column '%s'", r->file, line, key);
    if (!where)
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    sl_status st = sl_source_locate_list(values, n, r->base_dir, r->p, where, item);
    sl_free(where);
    return st;
}

/* A row's images from several columns (--image-column A,B), each a path or
 * URL string, in the order named; the columns pass through (the output's
 * record of the paths). */
static sl_status manifest_image_columns(source_reader *r, json_t *row, long line,
                                        sl_source_item *item)
{
    const char *values[SL_SOURCE_MAX_IMAGES];
    for (size_t k = 0; k < r->n_image_columns; k++) {
        json_t *v = json_object_get(row, r->image_columns[k]);
        if (!json_is_string(v) || !json_string_length(v))
            return sl_source_item_fail(item, "%s:%ld: column '%s' (of --image-column %s) holds "
                                             "no image path or URL", r->file, line,
                                       r->image_columns[k], r->p->image_column);
        values[k] = json_string_value(v);
    }
    char *where = sl_asprintf("%s:%ld", r->file, line);
    if (!where)
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    sl_status st = sl_source_locate_list(values, r->n_image_columns, r->base_dir, r->p, where,
                                         item);
    sl_free(where);
    return st;
}

/* Whether the row's column `name` is read for the row's image(s). */
static bool manifest_reads_image(const source_reader *r, const char *image_key,
                                 const char *raw_image, const char *name)
{
    for (size_t k = 0; k < r->n_image_columns; k++)
        if (strcmp(r->image_columns[k], name) == 0)
            return true;
    return !r->n_image_columns && !raw_image && image_key && strcmp(image_key, name) == 0;
}

/* Turns one manifest row (an object of its columns, consumed) into the item.
 * raw_image: a CSV row's image value as bytes (file names need not be UTF-8,
 * JSON strings must), already left out of the row. */
static sl_status manifest_item(source_reader *r, json_t *row, const char *raw_image,
                               const char *raw_key, long line, sl_source_item *item)
{
    const sl_source_params *p = r->p;
    const char *image_key = raw_image ? raw_key : p->image_column, *null_key = NULL;
    /* The first column of the list a row has a value in: a null one (an
     * `image` beside a `file_name`) names the column only when no other
     * has a value. */
    for (size_t i = 0; !image_key && i < sl_source_n_auto_image_columns; i++) {
        json_t *v = json_object_get(row, sl_source_auto_image_columns[i]);
        if (v && !json_is_null(v))
            image_key = sl_source_auto_image_columns[i];
        else if (v && !null_key)
            null_key = sl_source_auto_image_columns[i];
    }
    if (!image_key)
        image_key = null_key;
    item->at = line;
    const char *id_key = sl_source_id_column(p, "id");
    bool take;
    if (sl_source_row_id(id_key ? json_object_get(row, id_key) : NULL, r->name, line, item,
                         &take) != SL_OK)
        goto nomem;
    /* An image column that is the id column too stays for the image (a
     * single one is then taken out as the output's `path`). */
    if (take && !manifest_reads_image(r, image_key, raw_image, id_key))
        json_object_del(row, id_key);
    if (sl_source_prompt_of(sl_source_prompt_value(row, p), item) != SL_OK)
        goto nomem;
    sl_status st = SL_OK;
    if (r->n_image_columns) {
        st = manifest_image_columns(r, row, line, item);
        item->extra = row;
        return st;
    }
    json_t *image = image_key && !raw_image ? json_object_get(row, image_key) : NULL;
    const char *value = raw_image ? raw_image : json_string_value(image);
    if (!raw_image && !image)
        st = sl_source_item_fail(item, "%s:%ld: no '%s' column with the image path or URL%s",
                                 r->file, line, image_key ? image_key : "image",
                                 p->image_column ? "" : " (name it with --image-column)");
    else if (json_is_array(image))
        st = manifest_image_list(r, image, image_key, line, item);
    else if (json_is_null(image))
        st = sl_source_item_fail(item, "%s:%ld: column '%s' is null: no image path or URL", r->file, line,
                                 image_key);
    else if (!value)
        st = sl_source_item_fail(item, "%s:%ld: column '%s' is not a string or a list of them",
                                 r->file, line, image_key);
    else if (!*value)
        st = sl_source_item_fail(item, "%s:%ld: column '%s' is empty: no image path or URL",
                                 r->file, line, image_key);
    else {
        char where[1024];
        snprintf(where, sizeof where, "%s:%ld: column '%s'", r->file, line, image_key);
        st = sl_source_locate(value, r->base_dir, p, where, item);
    }
    /* A single image is the output's `path`; a list passes through, as the
     * output has no other place for its paths. */
    if (image && !json_is_array(image))
        json_object_del(row, image_key);
    item->extra = row;
    return st;
nomem:
    json_decref(row);
    return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
}

/* A row that failed before it had columns: id FILE:LINE, the error naming
 * it; its cause the line's data, or its size past --max-line-bytes. */
static sl_status line_fail(source_reader *r, long line, sl_source_item *item, const char *why)
{
    item->at = line;
    if (!(item->id = sl_asprintf("%s:%ld", r->name, line)))
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    return sl_source_item_fail_status(item, r->too_long ? SL_ERR_TOO_LARGE : SL_ERR_INVALID_ARG,
                                      "%s:%ld: %s", r->file, line, why);
}

/* At the end of the lines: when a read failed, not the file's end, one
 * failed row (the input's id, as a manifest that cannot be opened) says
 * where and why, and the input ends after it. */
static sl_status read_error_item(source_reader *r, sl_source_item *item, bool *done)
{
    if (!r->read_error || r->read_error_told)
        return SL_OK;
    r->read_error_told = true;
    *done = false;
    item->at = r->line + 1;
    item->cut_short = r->read_failed; /* a damaged file ends alike for every run */
    if (!(item->id = sl_strdup(r->name)) || !(item->path = sl_strdup(r->file)))
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    return sl_source_item_fail_status(item, SL_ERR_IO,
                                      "manifest '%s': reading stopped after %s %ld: %s", r->file,
                                      r->json_array ? "element" : "line", r->line,
                                      r->read_error);
}

/* A JSON row's id column holding an integer past int64 (a 64-bit hash):
 * sl_json_load_data reads it as a double, which rounds it (2^64-1 and
 * 2^64-2 one value) and is no id (FILE:LINE); the line is read again
 * (only such a row) for the digits as written, which become the id. */
static sl_status exact_id(const source_reader *r, json_t *row)
{
    const char *key = sl_source_id_column(r->p, "id");
    const json_t *v = key ? json_object_get(row, key) : NULL;
    if (!json_is_real(v) || fabs(json_real_value(v)) < 0x1p63)
        return SL_OK;
    json_t *again = sl_json_load_digits((const char *)r->text.data, r->text.len, JSON_REJECT_DUPLICATES,
                                        NULL); /* it was read once: NULL is out of memory */
    json_t *digits = json_object_get(again, key);
    sl_status st = SL_OK;
    if (!again || (json_is_string(digits) && json_object_set(row, key, digits) != 0))
        st = sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    json_decref(again);
    return st;
}

static sl_status manifest_next(source_reader *r, sl_source_item *item, bool *done)
{
    char err[256];
    if (r->csv) {
        char **fields;
        size_t n;
        long line;
        int rc = read_csv_record(r, &fields, &n, &line, err, sizeof err);
        if (rc == -2)
            return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
        if (rc > 0) {
            *done = true;
            return read_error_item(r, item, done);
        }
        if (rc < 0 || n != r->n_header) {
            if (rc == 0) {
                snprintf(err, sizeof err, "%zu fields where the header has %zu", n, r->n_header);
                sl_csv_fields_free(fields, n);
            }
            return line_fail(r, line, item, err);
        }
        int ic = csv_image_column(r);
        /* The prompt column's value goes to the model: a byte that is not
         * UTF-8 (a Latin-1 file's "caf\xe9") went as U+FFFD, the model
         * asked something else in silence. Other values pass through so
         * (the image's are bytes: a file name's). */
        for (size_t i = 0; i < n; i++) {
            if ((int)i == ic || !sl_source_column_in_prompt(r->p, r->header[i]))
                continue;
            int at = snprintf(err, sizeof err, "field %zu: ", i + 1);
            if (sl_source_prompt_text_bad(r->header[i], fields[i], strlen(fields[i]), err + at,
                                          sizeof err - (size_t)at)) {
                sl_csv_fields_free(fields, n);
                return line_fail(r, line, item, err);
            }
        }
        const char *id_key = sl_source_id_column(r->p, "id");
        json_t *row = json_object();
        /* The image's field is given apart, as bytes; the row keeps it too
         * when it is the id's. */
        for (size_t i = 0; row && i < n; i++)
            if ((int)i != ic || (id_key && strcmp(r->header[i], id_key) == 0))
                json_object_set_new(row, r->header[i], sl_json_text(fields[i], strlen(fields[i])));
        sl_status st = row ? manifest_item(r, row, ic >= 0 ? fields[ic] : NULL,
                                           ic >= 0 ? r->header[ic] : NULL, line, item)
                           : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
        sl_csv_fields_free(fields, n);
        return st;
    }
    sl_status st = next_line(r, done);
    if (st != SL_OK || *done)
        return st == SL_OK ? read_error_item(r, item, done) : st;
    if (r->too_long) {
        snprintf(err, sizeof err, "the line is longer than the limit of %zu bytes",
                 r->p->max_line_bytes);
        return line_fail(r, r->line, item, err);
    }
    json_error_t jerr;
    /* JSON_DECODE_ANY: a line that is valid JSON but no object ("x", 5) is
     * said to be what it is, not "invalid JSON: '[' or '{' expected". */
    json_t *row = sl_json_load_data((const char *)r->text.data, r->text.len,
                                    JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!row || !json_is_object(row) || json_object_size(row) > r->p->max_columns) {
        if (!row)
            snprintf(err, sizeof err, "invalid JSON: %s%s", jerr.text, sl_json_file_hint(&jerr));
        else if (!json_is_object(row))
            snprintf(err, sizeof err, "not a JSON object but %s", sl_json_kind(row));
        else
            snprintf(err, sizeof err, "%zu columns, more than the limit of %zu",
                     json_object_size(row), r->p->max_columns);
        json_decref(row);
        return line_fail(r, r->line, item, err);
    }
    if ((st = exact_id(r, row)) != SL_OK) {
        json_decref(row);
        return st;
    }
    return manifest_item(r, row, NULL, NULL, r->line, item);
}

static const source_kind manifest_kind = {"manifest", manifest_open, manifest_next,
                                          manifest_close, NULL, NULL, true};

/* --- OpenAI batch files ---------------------------------------------------------------- */

/* A line of an OpenAI batch file (io/batch_line.h): its id is its custom_id;
 * a line without one is FILE:LINE (as a manifest's line without an id). A
 * malformed line is a failed item naming the line and the cause. */
static sl_status batch_next(source_reader *r, sl_source_item *item, bool *done)
{
    sl_status st = next_line(r, done);
    if (st != SL_OK || *done)
        return st == SL_OK ? read_error_item(r, item, done) : st;
    if (!(item->batch = sl_calloc(1, sizeof *item->batch)))
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    char err[512];
    st = SL_ERR_INVALID_ARG;
    if (r->too_long)
        snprintf(err, sizeof err, "the line is longer than the limit of %zu bytes "
                 "(--max-line-bytes): to answer it, run a batch file of this line with a "
                 "higher --max-line-bytes (a rerun of this one counts it done)",
                 r->p->max_line_bytes);
    else
        st = sl_batch_parse((const char *)r->text.data, r->text.len, item->batch, err,
                            sizeof err);
    if (st == SL_ERR_NOMEM ||
        !(item->batch->line_id = sl_asprintf("%s:%ld", r->name, r->line)))
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    if (!item->batch->custom_id)
        return line_fail(r, r->line, item, err);
    item->at = r->line;
    if (!(item->id = sl_strdup(item->batch->custom_id)) ||
        !(item->alt_id = sl_strdup(item->batch->line_id)))
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    if (st != SL_OK)
        return sl_source_item_fail(item, "%s:%ld: %s", r->file, r->line, err);
    return SL_OK;
}

static int64_t batch_count(const char *file, const sl_source_params *p, const atomic_bool *stop)
{
    (void)p;
    if (sl_compression_suffix_len(file))
        return -1; /* its lines are known only decompressed: no total */
    sl_ranged *in;
    if (sl_ranged_open(file, &in) != SL_OK)
        return -1;
    size_t cap = sl_ranged_is_remote(in) ? REMOTE_CHUNK_BYTES : CHUNK_BYTES;
    char *buf = sl_malloc(cap);
    int64_t lines = 0;
    bool open_line = false, whole = buf != NULL;
    for (uint64_t at = 0; whole;) {
        size_t n;
        if ((stop && atomic_load(stop)) || sl_ranged_read(in, buf, cap, at, &n) != SL_OK) {
            whole = false;
            break;
        }
        if (n == 0)
            break;
        /* Non-blank lines: blank ones are skipped by the reader, and so is
         * a byte order mark (skip_bom), which alone on a line leaves it blank. */
        size_t i = at == 0 && n >= 3 && memcmp(buf, UTF8_BOM, 3) == 0 ? 3 : 0;
        at += n;
        for (; i < n; i++) {
            if (buf[i] == '\n') {
                lines += open_line;
                open_line = false;
            } else if (!isspace((unsigned char)buf[i])) {
                open_line = true;
            }
        }
    }
    sl_free(buf);
    sl_ranged_free(in);
    return whole ? lines + open_line : -1;
}

static const source_kind batch_kind = {"openai-batch", manifest_open, batch_next, manifest_close,
                                       batch_count, NULL, false};

/* --- dispatch ------------------------------------------------------------------------- */

struct sl_source {
    sl_source_params p;
    const source_kind *kind;
    const char *kind_name;
    char **files;
    char **lexical;          /* each file as an absolute path, lexically (names point here) */
    char **hf_names;         /* hf://datasets/ inputs: each file's repository path (all or
                                none of the files are such) */
    const char **names;      /* each file's name in ids */
    bool ids_have_folders;
    size_t n_files, next_file;
    source_reader *reader;
    bool sharded, by_file;   /* reading a subset of the shards; which way */
    uint64_t ordinal;        /* items seen, selected or not (shards by item) */
    uint64_t shard;          /* take_shard: the shard asked about last, */
    int take;                /* and the answer (SL_SHARD_*) */
    bool asked, ended;       /* whether it was asked yet / told the end */
    json_t *types;           /* the column shapes of the files opened (source_kind.types) */
    size_t *below;           /* where each file's path below its dataset folder begins
                                (0: named itself); NULL when none came from a folder */
    json_t *partitions;      /* the open file's Hive partition folders, or NULL */
    struct file_stamp *stamps; /* shards by item: each local file as the run began, or NULL */
};

/* A local input file's size and time of change when the run began. */
typedef struct file_stamp {
    bool known; /* a regular file stat() could see */
    off_t size;
    struct timespec mtime;
} file_stamp;

static sl_status add_types(sl_source *src, const char *file);
static sl_status stamp_files(sl_source *src);

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

/* The kind of one expanded input name, or NULL when it cannot be told. */
static const char *kind_of(const char *name)
{
    struct stat st;
    if (sl_s3_is_url(name)) {
        if (name[strlen(name) - 1] == '/' || !strchr(name + 5, '/'))
            return "folder"; /* a prefix, or a bucket: its images (s3_input_name) */
    } else if (stat(name, &st) == 0 && S_ISDIR(st.st_mode)) {
        return "folder";
    }
    return kind_by_name(name);
}

/* The kind a file's name says, or NULL. */
static const char *kind_by_name(const char *name)
{
    if (sl_base_ends_with(name, ".jsonl") || sl_base_ends_with(name, ".ndjson"))
        return "jsonl";
    if (sl_base_ends_with(name, ".json"))
        return "json";
    if (sl_base_ends_with(name, ".csv"))
        return "csv";
    if (sl_tar_name(name))
        return "webdataset";
    if (ends_with(name, ".parquet") || ends_with(name, ".pq"))
        return "parquet";
    if (ends_with(name, ".arrow") || ends_with(name, ".feather") || ends_with(name, ".ipc") ||
        ends_with(name, ".arrows"))
        return "arrow";
    if (sl_is_media_name(name))
        return "file"; /* an image or a video */
    return NULL;
}

static const source_kind *kind_named(const char *name)
{
    if (strcmp(name, "folder") == 0)
        return &folder_kind;
    if (strcmp(name, "file") == 0)
        return &file_kind;
    if (strcmp(name, "jsonl") == 0 || strcmp(name, "csv") == 0 || strcmp(name, "json") == 0)
        return &manifest_kind;
    if (strcmp(name, "webdataset") == 0)
        return &sl_source_webdataset;
    if (strcmp(name, "parquet") == 0)
        return &sl_source_parquet;
    if (strcmp(name, "arrow") == 0)
        return &sl_source_arrow;
    if (strcmp(name, "openai-batch") == 0)
        return &batch_kind;
    return NULL;
}

/* A kind's name as a message says it of an input ("'in' is a folder"). */
static const char *kind_words(const char *name)
{
    static const char *const words[][2] = {
        {"folder", "a folder"},           {"file", "an image or video file"},
        {"jsonl", "a JSONL manifest"},    {"csv", "a CSV manifest"},
        {"json", "a JSON manifest"},      {"webdataset", "a WebDataset shard"},
        {"parquet", "a Parquet file"},    {"arrow", "an Arrow file"},
        {"openai-batch", "an OpenAI batch file"},
    };
    for (size_t i = 0; i < sizeof words / sizeof *words; i++)
        if (strcmp(name, words[i][0]) == 0)
            return words[i][1];
    return name;
}

static bool has_glob(const char *s) { return strpbrk(s, "*?[") != NULL; }

/* Appends one expanded name to *out (and, for the files of a dataset on
 * the hub, its repository path to *hf); both take the strings. */
static sl_status add_file(char ***out, char ***hf, size_t *nout, size_t *cap, char *file,
                          char *hf_name)
{
    if (*nout == *cap) {
        size_t ncap = *cap ? *cap * 2 : 16;
        char **grown = sl_realloc(*out, ncap * sizeof *grown);
        if (grown)
            *out = grown;
        char **hgrown = grown ? sl_realloc(*hf, ncap * sizeof *hgrown) : NULL;
        if (hgrown)
            *hf = hgrown;
        if (!hgrown) {
            sl_free(file);
            sl_free(hf_name);
            return sl_fail(SL_ERR_NOMEM, "out of memory expanding the inputs");
        }
        *cap = ncap;
    }
    (*out)[*nout] = file;
    (*hf)[*nout] = hf_name;
    ++*nout;
    return SL_OK;
}

/* A dataset on the hub: its files' URLs, named by their repository paths. */
static sl_status expand_hf(const char *ref, const sl_source_params *p, char ***out, char ***hf,
                           size_t *nout, size_t *cap)
{
    hf_fetch f = {.timeout_ms = p->fetch_timeout_ms, .retries = p->fetch_retries};
    char **urls, **names;
    size_t n;
    sl_status st = hf_expand(ref, &f, &urls, &names, &n);
    if (st != SL_OK)
        return st;
    size_t i = 0;
    for (; i < n && st == SL_OK; i++)
        st = add_file(out, hf, nout, cap, urls[i], names[i]);
    for (; i < n; i++) {
        sl_free(urls[i]);
        sl_free(names[i]);
    }
    sl_free(urls);
    sl_free(names);
    return st;
}

/* The kind --input-format names; NULL for auto (each input's by its name). */
static const char *forced_kind(const sl_source_params *p)
{
    return p->format && strcmp(p->format, "auto") != 0 ? p->format : NULL;
}

/* A dataset's files under a folder: those of one kind, and none that
 * Spark, Hive or pyarrow keep beside them (_SUCCESS, _temporary/, .crc). */
typedef struct dataset_files {
    const char *kind;
    const sl_source_params *p; /* its --input-format, --include and --exclude */
} dataset_files;

static bool is_dataset_file(const char *rel, void *user)
{
    const dataset_files *d = user;
    if (beside_dataset(rel))
        return false;
    const char *k = kind_by_name(rel);
    /* Under --input-format, a .json file may be JSON lines (Spark's). */
    bool json = forced_kind(d->p) &&
                (strcmp(d->kind, "json") == 0 || strcmp(d->kind, "jsonl") == 0);
    return k &&
           (strcmp(k, d->kind) == 0 ||
            (json && (strcmp(k, "json") == 0 || strcmp(k, "jsonl") == 0))) &&
           sl_glob_filter(rel, d->p->include, d->p->n_include, d->p->exclude, d->p->n_exclude);
}

/* The kind whose files a folder input stands for: --input-format's when
 * it names a kind read from files, else the folder's own name's (Spark
 * writes a Parquet dataset as the folder 'out.parquet', named 'out.parquet/'
 * as often); NULL: not a folder, or a folder of images. A folder is a local
 * directory, or an s3:// prefix: a URL ending in '/', or a bucket's root
 * (an object may be named without an extension: only the '/' tells a
 * prefix from one without a request per name). */
static const char *dataset_folder_kind(const char *name, const sl_source_params *p)
{
    struct stat st;
    size_t n = strlen(name);
    if (sl_s3_is_url(name) ? name[n - 1] != '/' && strchr(name + 5, '/')
                           : stat(name, &st) != 0 || !S_ISDIR(st.st_mode))
        return NULL;
    const char *k = forced_kind(p);
    if (!k) {
        while (n > 1 && name[n - 1] == '/')
            n--;
        char *bare = sl_strndup(name, n);
        k = bare ? kind_by_name(bare) : NULL;
        sl_free(bare);
    }
    for (size_t i = 0; k && i < N_DATA_KINDS; i++)
        if (strcmp(k, data_kinds[i]) == 0)
            return data_kinds[i];
    return NULL;
}

static int cmp_path_ptrs(const void *a, const void *b)
{
    return sl_walk_cmp(*(char *const *)a, *(char *const *)b);
}

/* A local dataset folder's files, walked in order. */
static sl_status add_folder_files(const char *dir, dataset_files *want, char ***out, char ***hf,
                                  size_t *nout, size_t *cap)
{
    sl_dir_source *walk = NULL;
    sl_status st = sl_dir_source_open(dir, true, &walk);
    if (st == SL_OK)
        sl_dir_source_choose(walk, is_dataset_file, want);
    while (st == SL_OK) {
        const sl_dir_entry *e;
        if ((st = sl_dir_source_next(walk, &e)) != SL_OK || !e)
            break;
        if (e->error) {
            st = sl_fail(SL_ERR_IO, "input folder '%s': %s", dir, e->error);
            break;
        }
        char *copy = sl_strdup(e->path);
        st = copy ? add_file(out, hf, nout, cap, copy, NULL)
                  : sl_fail(SL_ERR_NOMEM, "out of memory listing '%s'", dir);
    }
    sl_dir_source_free(walk);
    return st;
}

/* An s3:// prefix's dataset files, from its listing (keys in S3's order),
 * sorted as a local folder's walk is, so a dataset copied to a bucket
 * gives its files, and rows, in the order it gave them on disk. */
static sl_status add_prefix_files(const char *url, dataset_files *want, char ***out, char ***hf,
                                  size_t *nout, size_t *cap)
{
    const sl_s3 *s3 = sl_s3_shared();
    char *bucket = NULL, *key = NULL;
    size_t before = *nout;
    sl_s3_list *l = NULL;
    sl_status st = s3 ? sl_s3_split(url, &bucket, &key) : SL_ERR_INVALID_ARG;
    if (st == SL_OK)
        st = sl_s3_list_open(s3, url, &l);
    if (st != SL_OK)
        st = sl_fail(st, "input folder '%s': %s", url, sl_last_error());
    for (bool done = false; st == SL_OK;) {
        const char *k;
        uint64_t size;
        if ((st = sl_s3_list_next(l, &k, &size, &done)) != SL_OK) {
            st = sl_fail(st, "input folder '%s': %s", url, sl_last_error());
            break;
        }
        if (done)
            break;
        const char *rel = k + strlen(key);
        if (!*rel || rel[strlen(rel) - 1] == '/' || !is_dataset_file(rel, want))
            continue; /* the prefix itself, or a folder's marker */
        char *file = sl_asprintf("s3://%s/%s", bucket, k);
        st = file ? add_file(out, hf, nout, cap, file, NULL)
                  : sl_fail(SL_ERR_NOMEM, "out of memory listing '%s'", url);
    }
    sl_s3_list_free(l);
    sl_free(bucket);
    sl_free(key);
    /* Their hub names are all NULL: sorting the files alone keeps the pairs. */
    if (st == SL_OK && *nout > before)
        qsort(*out + before, *nout - before, sizeof **out, cmp_path_ptrs);
    return st;
}

/* What an s3:// name without a trailing '/' is in the store: an object of
 * that exact key (which wins), else the prefix KEY/ when objects lie under
 * it, as `aws s3 ls` and pyarrow take it; unknown when the store refuses
 * the listing (a bucket policy may allow GETs and no listing, the bucket
 * may not be there). */
typedef enum { S3_OBJECT, S3_PREFIX, S3_NOTHING, S3_UNKNOWN } s3_name;

static bool s3_first_key(const sl_s3 *s3, const char *url, char **first)
{
    sl_s3_list *l = NULL;
    const char *k = NULL;
    uint64_t size;
    bool done = false;
    bool ok = sl_s3_list_open(s3, url, &l) == SL_OK;
    if (ok)
        sl_s3_list_limit(l, 1);
    ok = ok && sl_s3_list_next(l, &k, &size, &done) == SL_OK;
    *first = ok && !done ? sl_strdup(k) : NULL;
    sl_s3_list_free(l);
    return ok;
}

static s3_name s3_name_is(const char *url)
{
    const sl_s3 *s3 = sl_s3_shared();
    const char *key = strchr(url + 5, '/');
    char *first = NULL, *under = NULL, *folder = sl_asprintf("%s/", url);
    s3_name is = S3_UNKNOWN;
    if (s3 && folder && s3_first_key(s3, url, &first))
        is = first && strcmp(first, key + 1) == 0 ? S3_OBJECT
             : !s3_first_key(s3, folder, &under) ? S3_UNKNOWN
             : under                             ? S3_PREFIX
                                                 : S3_NOTHING;
    sl_free(first);
    sl_free(under);
    sl_free(folder);
    return is;
}

/* An s3:// name as the input it stands for: a prefix (or a name that is
 * nothing in the store and no kind's file by its name: a folder, which
 * then says so) with its '/', so that the '/' alone tells a folder from an
 * object from here on. Names out of braces that gave several (shards), and
 * those the store will not list, are objects unless they lack an
 * extension: no request each, and the read says what the store refuses. */
static char *s3_input_name(const char *url, bool one, const sl_source_params *p)
{
    size_t n = strlen(url);
    const char *key = strchr(url + 5, '/');
    if (!key || !key[1] || url[n - 1] == '/')
        return sl_strdup(url);
    const char *base = strrchr(url, '/');
    bool dotted = strchr(base, '.') != NULL;
    s3_name is = one ? s3_name_is(url) : S3_UNKNOWN;
    if (is == S3_UNKNOWN)
        is = dotted ? S3_OBJECT : S3_PREFIX;
    if (is == S3_NOTHING && (forced_kind(p) || kind_by_name(url)))
        is = S3_OBJECT; /* its reader fails it: NoSuchKey, naming it */
    return is == S3_OBJECT ? sl_strdup(url) : sl_asprintf("%s/", url);
}

/* A dataset's folder (local, or an s3:// prefix) as the files of its kind
 * under it, in the order a folder is walked (byte-wise sorted, depth
 * first). */
static sl_status add_dataset_folder(const char *dir, const char *kind, const sl_source_params *p,
                                    char ***out, char ***hf, size_t *nout, size_t *cap)
{
    dataset_files want = {kind, p};
    size_t before = *nout;
    sl_status st = sl_s3_is_url(dir) ? add_prefix_files(dir, &want, out, hf, nout, cap)
                                     : add_folder_files(dir, &want, out, hf, nout, cap);
    if (st == SL_OK && *nout == before && (p->n_include || p->n_exclude))
        st = sl_fail(SL_ERR_INVALID_ARG, "input folder '%s' holds no %s files that --include and "
                                         "--exclude let through: their globs match paths below "
                                         "the folder ('lang=en/*', '*/part-0000*')", dir, kind);
    else if (st == SL_OK && *nout == before)
        st = sl_fail(SL_ERR_INVALID_ARG, "input folder '%s' holds no %s files (%s)", dir, kind,
                     forced_kind(p) ? "--input-format names the kind of the files under it: "
                                      "give the kind they are, or leave it out for a folder "
                                      "of images"
                                    : "its name says a dataset of them: name the files, or "
                                      "pass --input-format folder for a folder of images");
    return st;
}

static bool is_web_url(const char *name)
{
    char scheme[16];
    sl_url_scheme(name, scheme);
    return strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0;
}

/* " (relative to the current folder, CWD)" for a relative local path, else
 * "": a job file's paths are taken from where sluice runs, not from the
 * file's folder, and a job run from elsewhere finds nothing there. */
static void relative_note(const char *path, char *buf, size_t size)
{
    char cwd[PATH_MAX];
    buf[0] = '\0';
    if (path[0] != '/' && !strstr(path, "://") && getcwd(cwd, sizeof cwd))
        snprintf(buf, size, " (relative to the current folder, %s)", cwd);
}

/* The files a dataset folder gave, out[from..to), whose paths below it
 * begin at byte `below` (their Hive partition folders). */
typedef struct folder_run {
    size_t from, to, below;
} folder_run;

/* Where each file's path below its dataset folder begins (0: a file named
 * itself), from the runs expand_inputs recorded; NULL when no file came
 * from a folder, or on the way out of memory (*st set). */
static size_t *below_folders(char *const *files, size_t n, const folder_run *runs, size_t n_runs,
                             sl_status *st)
{
    if (n_runs == 0)
        return NULL;
    size_t *below = sl_calloc(n ? n : 1, sizeof *below);
    if (!below) {
        *st = sl_fail(SL_ERR_NOMEM, "out of memory expanding the inputs");
        return NULL;
    }
    for (size_t r = 0; r < n_runs; r++)
        for (size_t i = runs[r].from; i < runs[r].to; i++)
            below[i] = runs[r].below < strlen(files[i]) ? runs[r].below : 0;
    return below;
}

/* Expands every input (braces, then globs; hf://datasets/ references
 * through the hub's listing) into files; *hf_names is NULL unless some
 * input is such a reference; *below as below_folders makes it. */
static sl_status expand_inputs(const char *const *inputs, size_t n, const sl_source_params *p,
                               char ***files, size_t *count, char ***hf_names, size_t **below)
{
    char **out = NULL, **hf = NULL;
    size_t nout = 0, cap = 0;
    folder_run *runs = NULL;
    size_t n_runs = 0;
    bool any_hf = false;
    sl_status st = SL_OK;
    *below = NULL;
    for (size_t i = 0; i < n && st == SL_OK; i++) {
        char **names;
        size_t nn;
        char err[256];
        if (sl_brace_expand(inputs[i], 100000, &names, &nn, err, sizeof err) != 0) {
            st = sl_fail(SL_ERR_INVALID_ARG, "input '%s': %s", inputs[i], err);
            break;
        }
        for (size_t k = 0; k < nn && st == SL_OK; k++) {
            glob_t g = {0};
            char **found = NULL;
            size_t nfound = 0;
            char *single[1] = {names[k]};
            if (hf_is_dataset_ref(names[k])) {
                any_hf = true;
                st = expand_hf(names[k], p, &out, &hf, &nout, &cap);
                continue;
            }
            if (has_glob(names[k]) && !sl_s3_is_url(names[k])) {
                int rc = glob(names[k], 0, NULL, &g);
                if (rc == GLOB_NOMATCH) {
                    char note[PATH_MAX + 64];
                    relative_note(names[k], note, sizeof note);
                    st = sl_fail(SL_ERR_NOT_FOUND, "input '%s' matches no file%s", names[k],
                                 note);
                    globfree(&g);
                    break;
                }
                if (rc != 0) {
                    st = sl_fail(SL_ERR_IO, "input '%s': cannot expand the pattern", names[k]);
                    globfree(&g);
                    break;
                }
                found = g.gl_pathv;
                nfound = g.gl_pathc;
            } else {
                found = single;
                nfound = 1;
            }
            for (size_t f = 0; f < nfound && st == SL_OK; f++) {
                char *name = sl_s3_is_url(found[f]) ? s3_input_name(found[f], nn == 1, p)
                                                    : sl_strdup(found[f]);
                const char *dataset = name ? dataset_folder_kind(name, p) : NULL;
                size_t before = nout;
                st = !name      ? sl_fail(SL_ERR_NOMEM, "out of memory expanding the inputs")
                     : dataset ? add_dataset_folder(name, dataset, p, &out,
                                                    &hf, &nout, &cap)
                               : add_file(&out, &hf, &nout, &cap, name, NULL);
                if (st == SL_OK && dataset) {
                    folder_run *grown = sl_realloc(runs, (n_runs + 1) * sizeof *runs);
                    size_t len = strlen(name);
                    if (grown)
                        (runs = grown)[n_runs++] = (folder_run){
                            before, nout, len + (len > 0 && name[len - 1] != '/')};
                    else
                        st = sl_fail(SL_ERR_NOMEM, "out of memory expanding the inputs");
                }
                if (dataset)
                    sl_free(name);
            }
            if (found != single)
                globfree(&g);
        }
        sl_strings_free(names, nn);
    }
    if (st == SL_OK && any_hf)
        for (size_t i = 0; i < nout && st == SL_OK; i++)
            if (!hf[i])
                st = sl_fail(SL_ERR_INVALID_ARG, "inputs mix hf://datasets/ references and other "
                                                 "files ('%s'): run them as two jobs", out[i]);
    if (st == SL_OK)
        *below = below_folders(out, nout, runs, n_runs, &st);
    sl_free(runs);
    if (st != SL_OK) {
        if (hf)
            sl_strings_free(hf, nout); /* NULL for the files not on the hub */
        sl_strings_free(out, nout);
        return st;
    }
    if (!any_hf) {
        sl_free(hf);
        hf = NULL;
    }
    *files = out;
    *count = nout;
    *hf_names = hf;
    return SL_OK;
}

void sl_source_free(sl_source *src)
{
    if (!src)
        return;
    if (src->reader)
        src->kind->close(src->reader);
    sl_strings_free(src->files, src->n_files);
    if (src->hf_names)
        sl_strings_free(src->hf_names, src->n_files);
    if (src->lexical)
        sl_strings_free(src->lexical, src->n_files);
    sl_free(src->names);
    sl_free(src->stamps);
    sl_free(src->below);
    json_decref(src->partitions);
    json_decref(src->types);
    sl_free(src);
}

/* --- one file once, and its name in ids ----------------------------------------------- */

static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

typedef struct input_ref {
    size_t i;
    dev_t dev;
    ino_t ino;
    char *real; /* folders: realpath(3), or NULL */
} input_ref;

static int cmp_inode(const void *a, const void *b)
{
    const input_ref *x = a, *y = b;
    if (x->dev != y->dev)
        return x->dev < y->dev ? -1 : 1;
    if (x->ino != y->ino)
        return x->ino < y->ino ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

/* Byte order with '/' first, so a folder's subfolders sort right after it. */
static int cmp_real(const void *a, const void *b)
{
    return sl_walk_cmp(((const input_ref *)a)->real, ((const input_ref *)b)->real);
}

/* Refuses one file read twice: the same inode reached by two names (a name
 * given twice, a glob and a name, a symlink or hard link) or, for folders,
 * a folder inside another input folder. Both would repeat every id. */
/* The same for s3:// inputs (names, not inodes): all of them or none, a
 * prefix given twice, one folder inside another. */
static sl_status s3_check_once(const sl_source *src)
{
    size_t n = src->n_files, remote = 0;
    for (size_t i = 0; i < n; i++)
        remote += sl_s3_is_url(src->files[i]);
    if (remote && remote != n)
        return sl_fail(SL_ERR_INVALID_ARG, "inputs mix s3:// and local files ('%s', '%s'): run "
                                           "them as two jobs", src->files[0], src->files[n - 1]);
    for (size_t i = 0; remote && i < n; i++)
        for (size_t k = 0; k < n; k++) {
            const char *a = src->files[i], *b = src->files[k];
            size_t la = strlen(a);
            while (la > 5 && a[la - 1] == '/')
                la--;
            if (i != k && strncmp(a, b, la) == 0 && (b[la] == '\0' || b[la] == '/') &&
                (i < k || strlen(b) != la))
                return sl_fail(SL_ERR_INVALID_ARG, "input '%s' %s '%s': its objects would be "
                                                   "read twice; give only one of the two", b,
                               strlen(b) > la + 1 ? "is inside" : "is the same as", a);
        }
    return SL_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The same for files of datasets on the hub: one URL listed twice (a
 * reference given twice, two patterns matching one file). */
static sl_status hf_check_once(const sl_source *src)
{
    size_t n = src->n_files;
    char **sorted = sl_malloc(n * sizeof *sorted);
    if (!sorted)
        return sl_fail(SL_ERR_NOMEM, "out of memory checking the inputs");
    memcpy(sorted, src->files, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_str);
    sl_status st = SL_OK;
    for (size_t k = 1; k < n && st == SL_OK; k++)
        if (strcmp(sorted[k - 1], sorted[k]) == 0)
            st = sl_fail(SL_ERR_INVALID_ARG, "input file '%s' is selected twice (by two "
                                             "references or patterns): each input must be read "
                                             "once; name it once", sorted[k]);
    sl_free(sorted);
    return st;
}

static sl_status check_once(sl_source *src, bool folders)
{
    size_t n = src->n_files;
    if (n < 2)
        return SL_OK;
    if (src->hf_names)
        return hf_check_once(src);
    if (sl_s3_is_url(src->files[0]) || sl_s3_is_url(src->files[n - 1]))
        return s3_check_once(src);
    input_ref *refs = sl_calloc(n, sizeof *refs);
    if (!refs)
        return sl_fail(SL_ERR_NOMEM, "out of memory checking the inputs");
    sl_status st = SL_OK;
    for (size_t i = 0; i < n; i++) {
        struct stat sb;
        refs[i].i = i;
        if (stat(src->files[i], &sb) == 0) {
            refs[i].dev = sb.st_dev;
            refs[i].ino = sb.st_ino;
        } else {
            refs[i].ino = (ino_t)i; /* gone since it was listed: reading it will say so */
            refs[i].dev = (dev_t)-1;
        }
        if (folders)
            refs[i].real = realpath(src->files[i], NULL);
    }
    qsort(refs, n, sizeof *refs, cmp_inode);
    for (size_t k = 1; k < n && st == SL_OK; k++) {
        if (refs[k].dev != refs[k - 1].dev || refs[k].ino != refs[k - 1].ino ||
            refs[k].dev == (dev_t)-1)
            continue;
        const char *a = src->files[refs[k - 1].i], *b = src->files[refs[k].i];
        st = strcmp(a, b) == 0
                 ? sl_fail(SL_ERR_INVALID_ARG, "input '%s' is named twice (by two names or "
                                               "patterns): each input must be read once; name "
                                               "it once", a)
                 : sl_fail(SL_ERR_INVALID_ARG, "inputs '%s' and '%s' are the same %s: each input "
                                               "must be read once; drop one of the two", a, b,
                           folders ? "folder" : "file");
    }
    if (st == SL_OK && folders) {
        size_t m = 0;
        for (size_t k = 0; k < n; k++)
            if (refs[k].real)
                refs[m++] = refs[k];
            /* else: gone since it was listed; reading it will say so */
        qsort(refs, m, sizeof *refs, cmp_real);
        for (size_t k = 1; k < m && st == SL_OK; k++) {
            const char *outer = refs[k - 1].real, *inner = refs[k].real;
            size_t len = strlen(outer);
            if (strcmp(outer, "/") == 0 || (strncmp(outer, inner, len) == 0 && inner[len] == '/'))
                st = sl_fail(SL_ERR_INVALID_ARG, "input folder '%s' is inside input folder '%s': "
                                                 "its images would be read twice; give only one "
                                                 "of the two",
                             src->files[refs[k].i], src->files[refs[k - 1].i]);
        }
        for (size_t k = 0; k < m; k++)
            free(refs[k].real); /* realpath's */
    } else if (folders) {
        for (size_t k = 0; k < n; k++)
            free(refs[k].real);
    }
    sl_free(refs);
    return st;
}

/* ORG/NAME of a dataset file's URL ({endpoint}/datasets/ORG/NAME/resolve/...). */
static size_t hf_repo_of(const char *url, const char **repo)
{
    const char *end = strstr(url, "/resolve/"), *p = end;
    for (int slashes = 0; p && p > url && slashes < 2;)
        slashes += *--p == '/';
    *repo = p ? p + 1 : url;
    return end ? (size_t)(end - *repo) : 0;
}

/* Files of datasets on the hub are named by their repository paths, and
 * when they come from several datasets, by ORG/NAME/PATH: ids that stay
 * the same whatever the hub's address. */
static sl_status name_hf_inputs(sl_source *src)
{
    const char *first;
    size_t first_n = hf_repo_of(src->files[0], &first);
    bool several = false;
    for (size_t i = 1; i < src->n_files && !several; i++) {
        const char *r;
        size_t rn = hf_repo_of(src->files[i], &r);
        several = rn != first_n || strncmp(r, first, rn) != 0;
    }
    src->lexical = sl_calloc(src->n_files, sizeof *src->lexical);
    src->names = sl_calloc(src->n_files, sizeof *src->names);
    if (!src->lexical || !src->names)
        return sl_fail(SL_ERR_NOMEM, "out of memory naming the inputs");
    for (size_t i = 0; i < src->n_files; i++) {
        const char *r;
        size_t rn = hf_repo_of(src->files[i], &r);
        src->lexical[i] = several ? sl_asprintf("%.*s/%s", (int)rn, r, src->hf_names[i])
                                  : sl_strdup(src->hf_names[i]);
        if (!src->lexical[i])
            return sl_fail(SL_ERR_NOMEM, "out of memory naming the inputs");
        src->names[i] = src->lexical[i];
    }
    return SL_OK;
}

json_t *sl_source_dataset_commits(const sl_source *src)
{
    if (!src->hf_names)
        return NULL;
    json_t *list = json_array();
    for (size_t i = 0; list && i < src->n_files; i++) {
        const char *repo, *at = strstr(src->files[i], "/resolve/");
        size_t rn = hf_repo_of(src->files[i], &repo);
        if (!at)
            continue;
        at += strlen("/resolve/");
        char *pin = sl_asprintf("%.*s@%.*s", (int)rn, repo, (int)strcspn(at, "/"), at);
        bool seen = false;
        for (size_t k = 0; pin && !seen && k < json_array_size(list); k++)
            seen = strcmp(json_string_value(json_array_get(list, k)), pin) == 0;
        if (!pin || (!seen && json_array_append_new(list, json_string(pin)) != 0)) {
            json_decref(list);
            list = NULL;
        }
        sl_free(pin);
    }
    return list;
}

/* Names every input file in ids: its path from the common folder of all
 * (io/source_parse.h: sl_input_names), so files with one base name in two
 * folders give distinct ids. */
static sl_status name_inputs(sl_source *src, bool folders)
{
    if (src->hf_names)
        return name_hf_inputs(src);
    char *cwd = getcwd(NULL, 0); /* relative inputs are named from here; glibc allocates */
    src->lexical = sl_calloc(src->n_files ? src->n_files : 1, sizeof *src->lexical);
    sl_status st = src->lexical ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory naming the inputs");
    for (size_t i = 0; st == SL_OK && i < src->n_files; i++) {
        const char *f = src->files[i];
        size_t n = strlen(f);
        while (sl_s3_is_url(f) && n > 5 && f[n - 1] == '/')
            n--;
        if (!(src->lexical[i] = sl_s3_is_url(f) ? sl_strndup(f, n)
                                                : sl_path_lexical(cwd ? cwd : "", f)))
            st = sl_fail(SL_ERR_NOMEM, "out of memory naming the inputs");
    }
    free(cwd);
    if (st == SL_OK && sl_input_names((const char *const *)src->lexical, src->n_files, folders,
                                      &src->names) != 0)
        st = sl_fail(SL_ERR_NOMEM, "out of memory naming the inputs");
    for (size_t i = 0; st == SL_OK && i < src->n_files; i++)
        if (folders ? *src->names[i] != '\0' : strchr(src->names[i], '/') != NULL)
            src->ids_have_folders = true;
    return st;
}

static const char *const formats[] = {"auto", "folder",  "file",  "jsonl",       "json", "csv",
                                      "webdataset", "parquet", "arrow", "openai-batch"};

sl_status sl_source_open(const char *const *inputs, size_t n, const sl_source_params *params,
                         sl_source **out)
{
    *out = NULL;
    const char *forced = forced_kind(params);
    bool known = !params->format;
    for (size_t i = 0; i < sizeof formats / sizeof *formats; i++)
        known = known || strcmp(params->format, formats[i]) == 0;
    if (!known)
        return sl_fail(SL_ERR_INVALID_ARG, "--input-format must be one of auto, folder, file, "
                                           "jsonl, json, csv, webdataset, parquet, arrow, openai-batch; "
                                           "got '%s'",
                       params->format);
    if (n == 0)
        return sl_fail(SL_ERR_INVALID_ARG, "no input given");
    sl_source *src = sl_calloc(1, sizeof *src);
    if (!src)
        return sl_fail(SL_ERR_NOMEM, "out of memory opening the inputs");
    src->p = *params;
    sl_status st = expand_inputs(inputs, n, params, &src->files, &src->n_files, &src->hf_names,
                                 &src->below);
    for (size_t i = 0; st == SL_OK && i < src->n_files; i++) {
        const char *f = src->files[i];
        const char *k = forced ? forced : kind_of(f);
        struct stat sb;
        if (!sl_s3_is_url(f) && !src->hf_names && stat(f, &sb) != 0) {
            int e = errno;
            char note[PATH_MAX + 64] = "";
            if (e == ENOENT)
                relative_note(f, note, sizeof note);
            /* A web address was taken for a path and said only "No such
             * file or directory": say which addresses an input may be. */
            if (e == ENOENT && is_web_url(f))
                st = sl_fail(SL_ERR_INVALID_ARG, "input '%s': an input is a local path, an "
                                                 "s3:// or an hf://datasets/ address, not an "
                                                 "http(s) URL: download the file first (an "
                                                 "image's URL goes in a manifest's image column)",
                             f);
            else
                st = sl_fail(e == ENOENT ? SL_ERR_NOT_FOUND : SL_ERR_IO, "input '%s': %s%s", f,
                             strerror(e), note);
        } else if (!k)
            st = sl_fail(SL_ERR_INVALID_ARG, "input '%s': cannot tell its kind from the name; "
                                             "pass --input-format", f);
        else if (src->kind_name && strcmp(k, src->kind_name) != 0)
            st = sl_fail(SL_ERR_INVALID_ARG, "inputs mix kinds: '%s' is %s, '%s' is %s", f,
                         kind_words(k), src->files[0], kind_words(src->kind_name));
        else
            src->kind_name = k;
    }
    /* Ids from names, tar keys or custom_id: an option that would change
     * nothing is a mistake to say, not to ignore. The kind says (a new one
     * must), not a list of names here. "none" asks for those ids: it
     * cancels a job file's id_column for such inputs. */
    const source_kind *kind = st == SL_OK && src->kind_name ? kind_named(src->kind_name) : NULL;
    if (kind && params->id_column && strcmp(params->id_column, "none") != 0 && !kind->columns)
        st = sl_fail(SL_ERR_INVALID_ARG, "--id-column names a column of a manifest, Parquet or "
                                         "Arrow file; '%s' is %s, whose rows have no columns to "
                                         "take an id from: drop --id-column, or set it to none",
                     src->files[0], kind_words(src->kind_name));
    if (st == SL_OK && (params->n_include || params->n_exclude) &&
        strcmp(src->kind_name, "folder") != 0 && !src->below)
        st = sl_fail(SL_ERR_INVALID_ARG, "--include and --exclude filter folders (of images, or "
                                         "a dataset's files); '%s' is %s",
                     src->files[0], kind_words(src->kind_name));
    if (st == SL_OK && params->take_shard && (params->shard_peers < 1 || params->shard_size == 0))
        st = sl_fail(SL_ERR_INVALID_ARG, "shards handed out at run time need shard_peers >= 1 "
                                         "and a shard size");
    if (st == SL_OK && !params->take_shard && params->shard_count > 1 &&
        (params->shard_index >= params->shard_count || params->shard_size == 0))
        st = sl_fail(SL_ERR_INVALID_ARG, "--input-shard %u/%u: the index must be below the count "
                                         "(0/%u .. %u/%u)",
                     params->shard_index, params->shard_count, params->shard_count,
                     params->shard_count - 1, params->shard_count);
    if (st == SL_OK) {
        bool folders = strcmp(src->kind_name, "folder") == 0;
        st = check_once(src, folders);
        if (st == SL_OK)
            st = name_inputs(src, folders);
    }
    if (st == SL_OK) {
        src->kind = kind_named(src->kind_name);
        unsigned runs = params->take_shard ? params->shard_peers : params->shard_count;
        src->sharded = params->take_shard || params->shard_count > 1;
        src->by_file = src->sharded && src->n_files >= runs;
        if (src->sharded && !src->by_file)
            st = stamp_files(src);
    }
    if (st != SL_OK) {
        sl_source_free(src);
        return st;
    }
    *out = src;
    return SL_OK;
}

const char *sl_source_kind(const sl_source *src) { return src->kind_name; }

bool sl_source_rows_have_columns(const sl_source *src) { return src->kind->columns; }

bool sl_source_rows_are_bare_images(const sl_source *src)
{
    return src->kind == &folder_kind || src->kind == &file_kind;
}

bool sl_source_reads_lines(const sl_source *src)
{
    const char *k = src->kind_name;
    return strcmp(k, "jsonl") == 0 || strcmp(k, "json") == 0 || strcmp(k, "csv") == 0 ||
           strcmp(k, "openai-batch") == 0;
}

bool sl_source_shards_by_file(const sl_source *src) { return src->by_file; }

bool sl_source_ids_have_folders(const sl_source *src) { return src->ids_have_folders; }

char *sl_source_origin(const sl_source *src, size_t input, int64_t at)
{
    const char *f = input < src->n_files ? src->files[input] : "?";
    const char *k = src->kind_name;
    if (at < 0 || strcmp(k, "folder") == 0 || strcmp(k, "file") == 0)
        return sl_strdup(f);
    return sl_asprintf(strcmp(k, "webdataset") == 0 ? "%s at byte %lld"
                       : strcmp(k, "parquet") == 0 || strcmp(k, "arrow") == 0 ? "%s row %lld"
                                                    : "%s:%lld",
                       f, (long long)at);
}

size_t sl_source_num_files(const sl_source *src) { return src->n_files; }

const char *sl_source_file(const sl_source *src, size_t i, const char **name)
{
    *name = src->names[i];
    return src->files[i];
}

/* Whether this run reads shard k (SL_SHARD_*), asked once per shard. */
static sl_status select_shard(sl_source *src, uint64_t k, int *take)
{
    if (!src->p.take_shard) {
        *take = k % src->p.shard_count == src->p.shard_index ? SL_SHARD_TAKE : SL_SHARD_SKIP;
        return SL_OK;
    }
    if (!src->asked || k != src->shard) {
        sl_status st = src->p.take_shard(src->p.take_shard_user, k, false, &src->take);
        if (st != SL_OK)
            return st;
        src->asked = true;
        src->shard = k;
    }
    *take = src->take;
    return SL_OK;
}

/* The stream has ended: take_shard learns how many shards there are. */
static sl_status tell_end(sl_source *src, uint64_t n_shards)
{
    if (!src->p.take_shard || src->ended)
        return SL_OK;
    src->ended = true;
    int ignored;
    return src->p.take_shard(src->p.take_shard_user, n_shards, true, &ignored);
}

/* Shards by item are runs of positions in the stream every run (or rank)
 * reads whole, each at its own time: a local file cut or rewritten between
 * two runs' reads of it gives them streams of different lengths, and the
 * items after it fall in other shards on each (rows lost with exit 0, or
 * written twice). Each file's size and time of change are kept as the run
 * began (every rank starts together) and checked when it is opened and when
 * it ends: changed, the run ends. A file in a bucket is not checked. */
static sl_status stamp_files(sl_source *src)
{
    if (!(src->stamps = sl_calloc(src->n_files ? src->n_files : 1, sizeof *src->stamps)))
        return sl_fail(SL_ERR_NOMEM, "out of memory opening the inputs");
    for (size_t i = 0; i < src->n_files; i++) {
        struct stat sb;
        if (sl_s3_is_url(src->files[i]) || src->hf_names || stat(src->files[i], &sb) != 0 ||
            !S_ISREG(sb.st_mode))
            continue;
        src->stamps[i] = (file_stamp){true, sb.st_size, sb.st_mtim};
    }
    return SL_OK;
}

static sl_status check_unchanged(const sl_source *src, size_t i)
{
    const file_stamp *was = src->stamps ? &src->stamps[i] : NULL;
    if (!was || !was->known)
        return SL_OK;
    struct stat sb;
    char now[96];
    if (stat(src->files[i], &sb) != 0)
        snprintf(now, sizeof now, "%s", strerror(errno));
    else if (sb.st_size != was->size)
        snprintf(now, sizeof now, "%lld bytes now", (long long)sb.st_size);
    else if (sb.st_mtim.tv_sec != was->mtime.tv_sec || sb.st_mtim.tv_nsec != was->mtime.tv_nsec)
        snprintf(now, sizeof now, "rewritten since");
    else
        return SL_OK;
    return sl_fail(SL_ERR_IO, "input '%s' changed while the job ran (%lld bytes when it began, %s); "
                              "its items are shared out by their place in the input "
                              "(--input-shard-size) and another run or rank may have read it as "
                              "it was: run it again once the input stays as it is (it resumes)",
                   src->files[i], (long long)was->size, now);
}

/* s as JSON text: escaped (core/utf8.h) when its bytes are not UTF-8, as
 * ids are; NULL out of memory. */
static json_t *json_text(const char *s)
{
    if (!sl_utf8_needs_escape(s, strlen(s)))
        return json_string(s);
    char *escaped = sl_utf8_escape(s, strlen(s));
    json_t *j = escaped ? json_string(escaped) : NULL;
    sl_free(escaped);
    return j;
}

/* Input i's Hive partition folders (sl_hive_partitions), the columns its
 * rows gain, in src->partitions (NULL when it has none). */
static sl_status open_partitions(sl_source *src, size_t i)
{
    json_decref(src->partitions);
    src->partitions = NULL;
    if (!src->below || src->below[i] == 0)
        return SL_OK;
    char **keys, **values;
    size_t n;
    if (sl_hive_partitions(src->files[i] + src->below[i], &keys, &values, &n) != 0)
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", src->files[i]);
    bool ok = n == 0 || (src->partitions = json_object()) != NULL;
    for (size_t k = 0; ok && k < n; k++) {
        json_t *key = json_text(keys[k]);
        ok = key && json_object_set_new(src->partitions, json_string_value(key),
                                        values[k] ? json_text(values[k]) : json_null()) == 0;
        json_decref(key);
    }
    sl_hive_partitions_free(keys, values, n);
    return ok ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", src->files[i]);
}

/* The open file's partition columns into item's pass-through ones; a
 * column of the file's own by that name keeps its value. Each row gets its
 * own copies: rows go to other threads. */
static sl_status add_partitions(sl_source *src, sl_source_item *item)
{
    if (!src->partitions)
        return SL_OK;
    bool ok = item->extra || (item->extra = json_object()) != NULL;
    const char *key;
    json_t *value;
    json_object_foreach(src->partitions, key, value) {
        if (ok && !json_object_get(item->extra, key))
            ok = json_object_set_new(item->extra, key, json_copy(value)) == 0;
    }
    return ok ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", item->id ? item->id : "?");
}

/* The next item of every shard, selected or not. */
static sl_status next_item(sl_source *src, sl_source_item *item, bool *done)
{
    sl_source_item_clear(item);
    *done = false;
    for (;;) {
        item->at = -1;
        if (!src->reader) {
            int take = SL_SHARD_TAKE;
            while (src->by_file && src->next_file < src->n_files) {
                sl_status st = select_shard(src, src->next_file, &take);
                if (st != SL_OK)
                    return st;
                if (take != SL_SHARD_SKIP)
                    break;
                src->next_file++;
            }
            if (take == SL_SHARD_NONE) {
                *done = true;
                return SL_OK;
            }
            if (src->next_file == src->n_files) {
                *done = true;
                return src->by_file ? tell_end(src, src->n_files) : SL_OK;
            }
            const char *f = src->files[src->next_file], *name = src->names[src->next_file];
            item->input = src->next_file++;
            char *open_error = NULL;
            /* Every kind reads a file in a bucket in place, by ranged GETs
             * (io/ranged.h): nothing is copied to disk. */
            sl_fault("source.open", f); /* tests: a pause to change the file in */
            bool open_cut = false;
            sl_status st = src->kind->open(f, name, &src->p, &src->reader, &open_error, &open_cut);
            if (st == SL_OK)
                st = check_unchanged(src, item->input);
            if (st != SL_OK) {
                sl_free(open_error);
                return st;
            }
            if (!open_error && src->kind->types && (st = add_types(src, f)) != SL_OK)
                return st;
            /* A file that fails at open is one failed row, under its
             * partition folders as its rows would have been. */
            if ((st = open_partitions(src, item->input)) != SL_OK) {
                sl_free(open_error);
                return st;
            }
            if (open_error) {
                item->error = open_error;
                item->error_status = SL_ERR_IO; /* the file could not be opened and read */
                item->cut_short = open_cut;
                if (!(item->id = sl_strdup(*name ? name : base_name(f))) ||
                    !(item->path = sl_strdup(f)))
                    return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", f);
                return add_partitions(src, item);
            }
        }
        bool end = false;
        sl_status st = src->kind->next(src->reader, item, &end);
        item->input = src->next_file - 1;
        item->shard = src->by_file ? (int64_t)item->input : -1;
        if (st == SL_OK && end)
            st = check_unchanged(src, item->input);
        if (st == SL_OK && !end)
            st = add_partitions(src, item);
        if (st != SL_OK || !end)
            return st;
        src->kind->close(src->reader);
        src->reader = NULL;
        json_decref(src->partitions);
        src->partitions = NULL;
    }
}

/* The column shapes the reader's file declares, merged into src's: a
 * column two files give different shapes is left to the values (null),
 * unless one shape holds both (io/parquet_shape.h: decimals of other
 * precisions or scales). */
static sl_status add_types(sl_source *src, const char *file)
{
    json_t *mine = json_object();
    if (!mine || (!src->types && !(src->types = json_object()))) {
        json_decref(mine);
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", file);
    }
    sl_status st = src->kind->types(src->reader, mine);
    const char *name;
    json_t *shape;
    json_object_foreach(mine, name, shape) {
        json_t *had = json_object_get(src->types, name), *both = NULL;
        if (st != SL_OK || (had && (json_is_null(had) || json_equal(had, shape))))
            continue;
        if ((had && !sl_pq_shape_merge(had, shape, &both)) ||
            json_object_set_new(src->types, name, had ? (both ? both : json_null()) : json_incref(shape)) != 0)
            st = sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", file);
    }
    json_decref(mine);
    return st;
}

const json_t *sl_source_column_types(const sl_source *src) { return src->types; }

/* *id escaped (core/utf8.h) when it needs it, the text it was in *raw
 * (NULL when it needed none, or is NULL). */
static sl_status escape_id(char **id, char **raw)
{
    *raw = NULL;
    if (!*id || !sl_utf8_needs_escape(*id, strlen(*id)))
        return SL_OK;
    char *escaped = sl_utf8_escape(*id, strlen(*id));
    if (!escaped)
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", *id);
    *raw = *id;
    *id = escaped;
    return SL_OK;
}

/* An id that is not valid UTF-8 (a file name's bytes) goes out escaped
 * (core/utf8.h): JSON and Parquet hold text, and replacing the bad bytes
 * with U+FFFD made two names that differ only there one id. The raw id is
 * the alternative: an earlier sluice recorded the row in the ledger so. */
static sl_status escape_ids(sl_source_item *item)
{
    char *raw;
    /* A manifest line's NAME:LINE, escaped as its failed row's id was. */
    sl_status st = escape_id(&item->alt_id, &raw);
    sl_free(raw);
    if (st != SL_OK || (st = escape_id(&item->id, &raw)) != SL_OK || !raw)
        return st;
    if (item->alt_id)
        sl_free(raw);
    else
        item->alt_id = raw;
    return SL_OK;
}

sl_status sl_source_next(sl_source *src, sl_source_item *item, bool *done)
{
    for (;;) {
        sl_status st = next_item(src, item, done);
        if (st == SL_OK && !*done)
            st = escape_ids(item);
        if (st != SL_OK || !src->sharded || src->by_file)
            return st;
        /* Shards by item are runs of positions in the stream every run (or
         * rank) reads whole: one whose listing failed midway would count
         * the items after it where the others do not, and take or skip
         * them as the wrong shards: rows lost with no failed row, or
         * read twice. Ending this run is the one safe answer (the next
         * run lists again). */
        if (*done == false && item->cut_short) {
            st = sl_fail(SL_ERR_IO, "input '%s': %s; its items are shared out by their place in "
                                    "the input (--input-shard-size) and this run would miss the "
                                    "rest of its share: run it again (it resumes)",
                         item->path ? item->path
                         : item->input < src->n_files ? src->files[item->input] : item->id,
                         item->error);
            sl_source_item_clear(item);
            return st;
        }
        if (*done)
            return tell_end(src, (src->ordinal + src->p.shard_size - 1) / src->p.shard_size);
        uint64_t shard = src->ordinal++ / src->p.shard_size;
        int take;
        if ((st = select_shard(src, shard, &take)) != SL_OK)
            return st;
        if (take == SL_SHARD_NONE) {
            sl_source_item_clear(item);
            *done = true;
            return SL_OK;
        }
        if (take == SL_SHARD_TAKE) {
            item->shard = (int64_t)shard;
            return SL_OK;
        }
    }
}

/* Items of `total` that fall in this run's shards when shards are runs of
 * shard_size items. */
static int64_t selected_of(int64_t total, const sl_source_params *p)
{
    if (total < 0 || p->shard_count <= 1)
        return total;
    int64_t size = p->shard_size, n = 0;
    for (int64_t start = (int64_t)p->shard_index * size; start < total;
         start += (int64_t)p->shard_count * size)
        n += total - start < size ? total - start : size;
    return n;
}

struct sl_source_counter {
    sl_source *src; /* a fresh source over the files of the one it was made from */
};

static char **strings_copy(char *const *from, size_t n)
{
    char **to = sl_calloc(n ? n : 1, sizeof *to);
    for (size_t i = 0; to && i < n; i++)
        if (!(to[i] = sl_strdup(from[i]))) {
            sl_strings_free(to, i);
            return NULL;
        }
    return to;
}

/* A fresh source over the files src expanded, read from the start with
 * params p: nothing is expanded or resolved again (an s3:// folder is
 * listed again as it is read: keeping the run's listing for another reader
 * would keep every key one listed ahead of the other in memory). */
static sl_status source_reopen(const sl_source *src, const sl_source_params *p, sl_source **out)
{
    *out = NULL;
    sl_source *c = sl_calloc(1, sizeof *c);
    size_t n = src->n_files;
    bool ok = c != NULL;
    if (ok) {
        c->p = *p;
        c->kind = src->kind;
        c->kind_name = src->kind_name;
        c->ids_have_folders = src->ids_have_folders;
        c->n_files = n;
        ok = (c->files = strings_copy(src->files, n)) &&
             (c->lexical = strings_copy(src->lexical, n)) &&
             (!src->hf_names || (c->hf_names = strings_copy(src->hf_names, n))) &&
             (!src->below || ((c->below = sl_malloc(n * sizeof *c->below)) &&
                              memcpy(c->below, src->below, n * sizeof *c->below))) &&
             (c->names = sl_calloc(n ? n : 1, sizeof *c->names));
    }
    for (size_t i = 0; ok && i < n; i++) {
        /* Each name points into its lexical path (sl_input_names). */
        c->names[i] = c->lexical[i] + (src->names[i] - src->lexical[i]);
    }
    if (!ok) {
        if (c && !c->files)
            c->n_files = 0; /* nothing copied to free */
        sl_source_free(c);
        return sl_fail(SL_ERR_NOMEM, "out of memory copying the inputs");
    }
    unsigned runs = p->take_shard ? p->shard_peers : p->shard_count;
    c->sharded = p->take_shard || p->shard_count > 1;
    c->by_file = c->sharded && n >= runs;
    *out = c;
    return SL_OK;
}

sl_status sl_source_reopen(const sl_source *src, sl_source **out)
{
    sl_source_params p = src->p;
    p.take_shard = NULL; /* the whole input: no shard handed out or skipped */
    p.take_shard_user = NULL;
    p.shard_index = p.shard_count = 0;
    p.quiet = true;
    return source_reopen(src, &p, out);
}

sl_status sl_source_counter_new(const sl_source *src, sl_source_counter **out)
{
    *out = NULL;
    sl_source_counter *c = sl_calloc(1, sizeof *c);
    if (!c)
        return sl_fail(SL_ERR_NOMEM, "out of memory for the input count");
    sl_source_params p = src->p;
    p.take_shard = NULL; /* static shards are counted as read; handed-out ones, all */
    p.take_shard_user = NULL;
    p.unsorted_folders = true; /* a second sorted listing beside the run's doubled its memory */
    p.quiet = true;            /* the run's own read warns (each warning was said twice) */
    sl_status st = source_reopen(src, &p, &c->src);
    if (st != SL_OK) {
        sl_free(c);
        return st;
    }
    *out = c;
    return SL_OK;
}

int64_t sl_source_counter_run(sl_source_counter *c, const atomic_bool *stop)
{
    sl_source *src = c->src;
    if (!src)
        return -1; /* run once already */
    int64_t total = 0;
    if (src->kind->count) {
        for (size_t i = 0; i < src->n_files && total >= 0; i++) {
            int take = SL_SHARD_TAKE;
            if (src->by_file && (select_shard(src, i, &take) != SL_OK || take != SL_SHARD_TAKE))
                continue;
            int64_t k = atomic_load(stop) ? -1 : src->kind->count(src->files[i], &src->p, stop);
            total = k < 0 ? -1 : total + k;
        }
        if (!src->by_file)
            total = selected_of(total, &src->p);
    } else {
        sl_source_item item = {0};
        bool done = false;
        while (!done && total >= 0) {
            if (atomic_load(stop) || sl_source_next(src, &item, &done) != SL_OK)
                total = -1;
            else if (!done)
                total++;
        }
        sl_source_item_clear(&item);
    }
    /* What it held goes now. */
    sl_source_free(src);
    c->src = NULL;
    return total;
}

void sl_source_counter_free(sl_source_counter *c)
{
    if (!c)
        return;
    sl_source_free(c->src);
    sl_free(c);
}

/* A conversation turn's text into *out: a string, or the text parts of a
 * list of content parts joined by newlines; NULL when it has none. False
 * when out of memory. */
static bool turn_text(const json_t *content, char **out)
{
    *out = NULL;
    if (json_is_string(content))
        return !json_string_length(content) || (*out = sl_strdup(json_string_value(content))) != NULL;
    sl_buf text = {0};
    size_t k;
    json_t *part;
    json_array_foreach(content, k, part) {
        const json_t *t = json_object_get(part, "text"), *type = json_object_get(part, "type");
        if (!json_is_string(t) || !json_string_length(t) ||
            (json_is_string(type) && strcmp(json_string_value(type), "text") != 0))
            continue;
        if ((text.len && !sl_buf_append(&text, "\n", 1)) ||
            !sl_buf_append(&text, json_string_value(t), json_string_length(t))) {
            sl_buf_free(&text);
            return false;
        }
    }
    if (!text.len)
        return true;
    if (!sl_buf_append(&text, "", 1)) { /* its NUL */
        sl_buf_free(&text);
        return false;
    }
    *out = (char *)text.data;
    return true;
}

const char *sl_source_id_column(const sl_source_params *p, const char *fallback)
{
    if (!p->id_column)
        return fallback;
    return strcmp(p->id_column, "none") == 0 ? NULL : p->id_column;
}

char *sl_source_id_column_error(const char *file, const char *column, bool absent)
{
    return sl_asprintf("%s: %s id column '%s' (--id-column %s)%s: name %s, or drop --id-column "
                       "for ids FILE:ROW", file, absent ? "no" : "the", column, column,
                       absent ? "" : " is not a top-level string, integer or decimal column",
                       absent ? "a column of the file that holds the row ids" : "one that is");
}

json_t *sl_source_uint64_id(uint64_t u)
{
    char text[24]; /* 20 digits at most */
    snprintf(text, sizeof text, "%" PRIu64, u);
    return json_string(text);
}

sl_status sl_source_row_id(const json_t *value, const char *name, int64_t at,
                           sl_source_item *item, bool *take)
{
    size_t digits_len;
    const char *digits = sl_json_decimal_text(value, &digits_len); /* a decimal column's */
    bool text = digits || (json_is_string(value) && json_string_length(value));
    if (digits)
        item->id = sl_strndup(digits, digits_len);
    else if (text)
        item->id = sl_strdup(json_string_value(value));
    else if (json_is_integer(value))
        item->id = sl_asprintf("%lld", (long long)json_integer_value(value));
    else
        item->id = sl_asprintf("%s:%lld", name, (long long)at);
    if (!item->id)
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", name);
    /* The row's place is its id until the column gives one: a line that
     * fails before its columns are read (past max_line_bytes) is recorded
     * under it, and a resume must find that row done. */
    if ((text || json_is_integer(value)) &&
        !(item->alt_id = sl_asprintf("%s:%lld", name, (long long)at)))
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", name);
    /* The output's `id` holds the value; an empty string goes too (as a
     * manifest's `id` always has), a null or another type passes through. */
    *take = json_is_string(value) || json_is_integer(value);
    return SL_OK;
}

bool sl_source_column_under(const char *column, const char *name)
{
    size_t n = strlen(name);
    return strncmp(column, name, n) == 0 && (column[n] == '\0' || column[n] == '.');
}

const char *sl_source_prompt_use(const sl_source_params *p, size_t k)
{
    if (k == 0)
        return p->prompt_column ? p->prompt_column : "prompt";
    return k - 1 < p->n_text_columns ? p->text_columns[k - 1] : NULL;
}

bool sl_source_column_in_prompt(const sl_source_params *p, const char *column)
{
    const char *use;
    for (size_t k = 0; (use = sl_source_prompt_use(p, k)) != NULL; k++)
        if (sl_source_column_under(column, use) || sl_source_column_under(use, column))
            return true;
    return false;
}

bool sl_source_prompt_text_bad(const char *column, const char *s, size_t len, char *why, size_t size)
{
    size_t bad = sl_utf8_valid_prefix(s, len);
    if (bad == len)
        return false;
    snprintf(why, size, "column '%.60s' holds byte 0x%02X at byte %zu, which is not UTF-8: the "
             "prompt would reach the model altered (re-encode the file as UTF-8)", column,
             (unsigned char)s[bad], bad);
    return true;
}

const json_t *sl_source_prompt_value(const json_t *extra, const sl_source_params *p)
{
    const char *name = p->prompt_column ? p->prompt_column : "prompt";
    return sl_json_column(extra, name, strlen(name));
}

sl_status sl_source_prompt_of(const json_t *value, sl_source_item *item)
{
    const json_t *content = json_is_array(value) ? NULL : value;
    size_t k;
    json_t *turn;
    json_array_foreach(value, k, turn) { /* a conversation: its first human turn */
        const char *who = json_string_value(json_object_get(turn, "from"));
        const json_t *said = json_object_get(turn, "value");
        if (!who) {
            who = json_string_value(json_object_get(turn, "role"));
            said = json_object_get(turn, "content");
        }
        if (who && (strcmp(who, "human") == 0 || strcmp(who, "user") == 0)) {
            content = said;
            break;
        }
    }
    if ((!json_is_string(content) && !json_is_array(content)) || sl_json_decimal_text(content, NULL))
        return SL_OK; /* a number (a decimal is carried as a string) is no prompt, as before */
    if (!turn_text(content, &item->prompt))
        return sl_fail(SL_ERR_NOMEM, "out of memory reading the prompt of '%s'", item->id ? item->id : "");
    return SL_OK;
}
