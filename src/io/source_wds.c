/* io/source_wds.c — WebDataset tar shards through libarchive. Members are
 * grouped into samples by key (io/source_parse.h: sl_wds_split); a sample
 * ends when the key changes, so a shard is read once, front to back, holding
 * one sample. A damaged header or truncated member ends the shard with an
 * error item naming the shard and byte offset. Member names are ids only:
 * nothing is ever extracted. A shard in S3 is streamed by ranged GETs
 * (remote_* below), never copied to disk; a compressed one is inflated here
 * (unzip_read, io/unzip.h), so a truncated one keeps every sample before
 * the cut. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/file.h"
#include "core/json.h"
#include "io/dir_source.h"
#include "io/ranged.h"
#include "io/s3.h"
#include "io/source_impl.h"
#include "io/source_parse.h"
#include "io/unzip.h"

/* --- a shard's bytes: in S3, or compressed ------------------------------------------------ */

/* The first GET of a shard, and of each run of reads after a jump. */
#define REMOTE_FIRST_BLOCK (64u << 10)
/* GETs double while reading runs on, up to this (the one buffer's size). */
#define REMOTE_MAX_BLOCK (8u << 20)
/* A local compressed shard is read, and inflated, this much at a time. */
#define Z_BLOCK (64u << 10)

/* libarchive reads every shard through these callbacks, so a read that
 * fails is known as one (`failed`: the item's cut_short) wherever the shard
 * is: a local one by pread(2), one in S3 by ranged GETs in turn into one
 * buffer (a GET that fails is retried by io/s3.h, and only that block is
 * asked for again). A skip over a member's data at least as long as the
 * next read would be is a jump instead, so a walk over the headers (the
 * count) fetches the ranges around them, not the members.
 *
 * A compressed shard (.tar.gz, .tgz, .tar.zst, .tar.bz2, .tar.xz; local or
 * remote) is inflated here (io/unzip.h), not by libarchive: its filters
 * hand on nothing of a 64 KiB block they were filling when the input is cut
 * short, so the complete samples in the last block before a truncation were
 * lost with the broken tail. Here every byte inflated reaches the tar reader
 * before the error does. */
typedef struct remote {
    sl_ranged *io;   /* a shard in S3 or on the hub; NULL: a local one, in fd */
    int fd;
    const char *path; /* ... its name (the reader's), for the test fault point */
    uint8_t *buf;
    size_t block;    /* the next GET's size */
    uint64_t pos;    /* the next byte to ask for */
    uint64_t size;   /* a local shard's size (one in S3 knows its own) */
    bool z_started;  /* the first bytes seen: compressed, or passed on as they are */
    bool z_plain;    /* named .gz (...) but not compressed: passed on as they are */
    sl_unzip *z;
    const uint8_t *in; /* the compressed bytes read and not yet inflated */
    size_t in_len;
    bool raw_eof;      /* the shard ended after them */
    uint8_t *out;
    bool failed;       /* a read of the shard's bytes failed (the store, the disk), not
                          what they hold: another try may get further */
    bool missing;      /* ... and the store said the object is not there */
} remote;

/* The next run of the shard's bytes as stored: *got 0 at its end. */
static int raw_read(struct archive *a, remote *s, const void **out, size_t *got)
{
    *out = s->buf;
    if (s->io) {
        sl_status st = sl_ranged_read(s->io, s->buf, s->block, s->pos, got);
        if (st != SL_OK) {
            s->failed = true;
            s->missing = st == SL_ERR_NOT_FOUND;
            archive_set_error(a, EIO, "%s", sl_last_error());
            return ARCHIVE_FATAL;
        }
        s->pos += *got;
        if (s->block < REMOTE_MAX_BLOCK)
            s->block *= 2;
        return ARCHIVE_OK;
    }
    ssize_t n = -1;
    int err = sl_fault("tar.read", s->path); /* tests: a disk's EIO midway */
    while (!err && (n = pread(s->fd, s->buf, s->block, (off_t)s->pos)) < 0)
        if (errno != EINTR)
            err = errno;
    if (err) {
        s->failed = true;
        archive_set_error(a, err, "read error: %s", strerror(err));
        return ARCHIVE_FATAL;
    }
    *got = (size_t)n;
    s->pos += *got;
    return ARCHIVE_OK;
}

static la_ssize_t remote_read(struct archive *a, void *user, const void **out)
{
    size_t got;
    int rc = raw_read(a, user, out, &got);
    return rc == ARCHIVE_OK ? (la_ssize_t)got : rc;
}

static la_int64_t remote_skip(struct archive *a, void *user, la_int64_t request)
{
    (void)a;
    remote *s = user;
    if (request < (la_int64_t)s->block)
        return 0; /* libarchive reads through it instead */
    /* A jump stops at the shard's end: libarchive reads for the rest, finds
     * none and says "Truncated input file", so a member cut short, or a
     * header claiming more than follows, is a break, not the end. */
    uint64_t size;
    if (s->io ? sl_ranged_size(s->io, &size) != SL_OK : (size = s->size, false))
        return 0; /* unknown: read through it */
    if (s->pos >= size)
        return 0;
    if ((uint64_t)request > size - s->pos)
        request = (la_int64_t)(size - s->pos);
    s->pos += (uint64_t)request;
    if (s->io)
        s->block = REMOTE_FIRST_BLOCK;
    return request;
}

/* Inflates what comes next: as soon as some bytes are out, they go to the
 * tar reader; an input cut short, or damaged, fails the read after them. */
static la_ssize_t unzip_read(struct archive *a, void *user, const void **out)
{
    remote *s = user;
    if (!s->z_started || s->z_plain) {
        /* The first bytes say the compression (a plain tar named .tar.gz is
         * read as libarchive would have read it). */
        size_t got;
        int rc = raw_read(a, s, out, &got);
        if (rc != ARCHIVE_OK || s->z_started)
            return rc == ARCHIVE_OK ? (la_ssize_t)got : rc;
        s->z_started = true;
        sl_unzip_kind kind;
        if (!sl_unzip_sniff(s->buf, got, &kind)) {
            s->z_plain = true; /* libarchive's own filters bid on it */
            return (la_ssize_t)got;
        }
        if (sl_unzip_new(kind, &s->z) != SL_OK) {
            archive_set_error(a, ENOMEM, "%s", sl_last_error());
            return ARCHIVE_FATAL;
        }
        s->in = s->buf;
        s->in_len = got;
    }
    for (;;) {
        if (s->in_len == 0 && !s->raw_eof) {
            const void *in;
            if (raw_read(a, s, &in, &s->in_len) != ARCHIVE_OK)
                return ARCHIVE_FATAL;
            s->in = in;
            s->raw_eof = s->in_len == 0;
        }
        size_t made;
        if (sl_unzip_run(s->z, &s->in, &s->in_len, s->raw_eof, s->out, Z_BLOCK, &made) != SL_OK) {
            archive_set_error(a, EIO, "%s", sl_last_error());
            return ARCHIVE_FATAL;
        }
        if (made > 0 || s->raw_eof) {
            *out = s->out;
            return (la_ssize_t)made;
        }
    }
}

static void remote_free(remote *s)
{
    if (!s)
        return;
    sl_ranged_free(s->io);
    if (!s->io && s->fd >= 0)
        close(s->fd);
    sl_unzip_free(s->z);
    sl_free(s->out);
    sl_free(s->buf);
    sl_free(s);
}

/* .tar.gz, .tgz, .tar.zst, .tar.bz2, .tar.xz: inflated by unzip_read. */
static bool compressed_name(const char *file)
{
    size_t n = strlen(file);
    return sl_compression_suffix_len(file) > 0 || (n >= 4 && strcasecmp(file + n - 4, ".tgz") == 0);
}

/* EIO only for a read the disk or the store refused (wds_open's cut_short). */
static int open_errno(sl_status st)
{
    return st == SL_ERR_NOMEM ? ENOMEM : st == SL_ERR_NOT_FOUND ? ENOENT
                                        : st == SL_ERR_IO ? EIO : EINVAL;
}

/* Opens `file` (a path, or an s3:// or http(s) URL: a dataset's shard on
 * the hub, io/hf.h) in a, read through *rem (a compressed one inflated by
 * unzip_read); the libarchive status. */
static int open_in(struct archive *a, const char *file, const sl_source_params *p, remote **rem)
{
    *rem = NULL;
    char scheme[16];
    sl_url_scheme(file, scheme);
    bool local = !sl_s3_is_url(file) && strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0;
    bool unzip = compressed_name(file);
    remote *s = sl_calloc(1, sizeof *s);
    if (s) {
        s->fd = -1;
        s->path = file;
    }
    size_t cap = local ? Z_BLOCK : REMOTE_MAX_BLOCK;
    if (!s || !(s->buf = sl_malloc(cap)) || (unzip && !(s->out = sl_malloc(Z_BLOCK)))) {
        archive_set_error(a, ENOMEM, "out of memory");
        remote_free(s);
        return ARCHIVE_FATAL;
    }
    sl_status st;
    if (local) {
        /* Opened as every input file is (open() of a FIFO would wait for
         * a writer forever). */
        st = sl_file_open_regular(file, &s->fd, &s->size);
        s->block = Z_BLOCK;
    } else {
        sl_ranged_params rp = sl_source_ranged_params(p);
        st = sl_ranged_open_with(file, &rp, &s->io);
        s->block = REMOTE_FIRST_BLOCK;
    }
    if (st != SL_OK) {
        archive_set_error(a, open_errno(st), "%s", sl_last_error());
        remote_free(s);
        return ARCHIVE_FATAL;
    }
    *rem = s;
    if (unzip) /* no skip: inflating is reading */
        return archive_read_open2(a, s, NULL, unzip_read, NULL, NULL);
    return archive_read_open2(a, s, NULL, remote_read, remote_skip, NULL);
}

/* --- reading a shard ------------------------------------------------------------------- */

struct source_reader {
    struct archive *a;
    remote *rem;            /* the shard's bytes */
    char *file;
    const char *name;       /* the shard's name in ids */
    const sl_source_params *p;
    sl_source_item pending; /* the sample being gathered; id is its key */
    int64_t pending_offset; /* where its first member's header is */
    bool has_pending, ended;
    /* The header of the next sample's first member, its data not read yet:
     * read once the pending sample is out, so that a shard never holds two
     * samples' members (two 200 MB images stood outside the budget). */
    struct archive_entry *held;
    char *end_error;        /* the shard broke: one last error item */
    int64_t end_offset;
    /* --image-column: the members (by extension: "png", "0.jpg") that are a
     * sample's images, in order (gathered in its item's images); 0: its
     * first image member. */
    char *columns[SL_SOURCE_MAX_IMAGES];
    size_t n_columns;
};

/* Which of the named image members `ext` is; -1: none (or none named). */
static int named_column(const source_reader *r, const char *ext)
{
    for (size_t k = 0; k < r->n_columns; k++)
        if (strcasecmp(r->columns[k], ext) == 0)
            return (int)k;
    return -1;
}


/* An image member or a video's: the extensions a folder's files take
 * (io/dir_source.h), so the shards sluice writes (io/wds_sink.c: .gif,
 * .tif, ...) read back. */
static bool is_image_ext(const char *ext)
{
    const char *last = strrchr(ext, '.');
    last = last ? last + 1 : ext;
    char name[32];
    snprintf(name, sizeof name, "x.%s", last);
    return strlen(last) < 16 && sl_is_media_name(name);
}

static void wds_close(source_reader *r)
{
    if (!r)
        return;
    if (r->a)
        archive_read_free(r->a);
    remote_free(r->rem);
    sl_source_item_clear(&r->pending);
    for (size_t k = 0; k < r->n_columns; k++)
        sl_free(r->columns[k]);
    sl_free(r->end_error);
    sl_free(r->file);
    sl_free(r);
}

/* Plain tar, or gzip, zstd, bzip2 or xz over it, each by name: filter_all
 * would also hand a shard that looks like lrzip, lzop or grzip to an
 * outside program of that name. */
static void support_tar(struct archive *a)
{
    archive_read_support_filter_gzip(a);
    archive_read_support_filter_zstd(a);
    archive_read_support_filter_bzip2(a);
    archive_read_support_filter_xz(a);
    archive_read_support_format_tar(a);
}

static struct archive *open_archive(const char *file, const sl_source_params *p, remote **rem)
{
    *rem = NULL;
    struct archive *a = archive_read_new();
    if (!a)
        return NULL;
    support_tar(a);
    if (open_in(a, file, p, rem) != ARCHIVE_OK) {
        archive_read_free(a);
        remote_free(*rem);
        *rem = NULL;
        return NULL;
    }
    return a;
}

static sl_status wds_open(const char *file, const char *name, const sl_source_params *p,
                          source_reader **out, char **open_error, bool *cut_short)
{
    source_reader *r = sl_calloc(1, sizeof *r);
    if (!r || !(r->file = sl_strdup(file))) {
        sl_free(r);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
    }
    r->p = p;
    r->name = name;
    if (p->image_column) {
        sl_status st = strchr(p->image_column, ',')
                           ? sl_split_image_columns(p->image_column, r->columns, &r->n_columns)
                           : (r->columns[0] = sl_strdup(p->image_column)) ? SL_OK : SL_ERR_NOMEM;
        if (st != SL_OK) { /* the names were checked before the run: only memory fails */
            wds_close(r);
            return sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
        }
        r->n_columns += !strchr(p->image_column, ',');
    }
    if (!(r->a = archive_read_new())) {
        wds_close(r);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
    }
    support_tar(r->a);
    if (open_in(r->a, file, p, &r->rem) != ARCHIVE_OK) {
        /* libarchive says "Unrecognized archive format" (EILSEQ, its
         * ARCHIVE_ERRNO_FILE_FORMAT) when no reader bids on the bytes: said
         * as what it means for a shard. */
        const char *why = archive_error_string(r->a);
        struct stat sb;
        uint64_t size = 0;
        if (archive_errno(r->a) == EILSEQ)
            why = r->rem && (r->rem->io ? sl_ranged_size(r->rem->io, &size) == SL_OK && !size
                                        : fstat(r->rem->fd, &sb) == 0 && sb.st_size == 0)
                      ? "empty file (0 bytes), not a tar archive"
                      : "not a tar archive (nor one compressed with gzip, zstd, bzip2 or xz)";
        *open_error = sl_asprintf("cannot open shard '%s': %s", file, why);
        *cut_short = r->rem ? r->rem->failed && !r->rem->missing : archive_errno(r->a) == EIO;
        wds_close(r);
        return *open_error ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", file);
    }
    *out = r;
    return SL_OK;
}

/* Reads the current member's data (size known from its header). */
static int read_member(struct archive *a, struct archive_entry *e, int64_t size, uint8_t **out)
{
    uint8_t *buf = sl_malloc(size > 0 ? (size_t)size + 1 : 1);
    if (!buf)
        return ARCHIVE_FATAL;
    int64_t got = 0;
    while (got < size) {
        la_ssize_t n = archive_read_data(a, buf + got, (size_t)(size - got));
        if (n == 0 && archive_entry_sparse_count(e) > 0) {
            /* A sparse member (GNU tar --sparse) that ends in a hole: the
             * hole is zeros, which libarchive does not hand out past the
             * last stored block. Taken for a short read, it ended the
             * shard there, every later sample lost. */
            memset(buf + got, 0, (size_t)(size - got));
            got = size;
            break;
        }
        if (n < 0 || (n == 0 && got < size)) {
            sl_free(buf);
            return n < 0 ? (int)n : ARCHIVE_FATAL;
        }
        got += n;
    }
    buf[size] = '\0';
    *out = buf;
    return ARCHIVE_OK;
}

/* Whether a member of this extension adds to its sample: its first image,
 * .json, .txt, .cls. The others' data is skipped, not read (in S3, a jump
 * past it: a shard's .npy or .mp4 members are never fetched). */
static bool member_used(const source_reader *r, const sl_source_item *s, const char *ext)
{
    const char *last = strrchr(ext, '.');
    last = last ? last + 1 : ext;
    if (r->n_columns) { /* the named members are the images; other images are skipped */
        int k = named_column(r, ext);
        if (k >= 0)
            return !s->images || !s->images[k].data;
        if (is_image_ext(ext))
            return false;
    } else if (is_image_ext(ext)) {
        return !s->data;
    }
    return strcasecmp(last, "json") == 0 || strcasecmp(last, "txt") == 0 ||
           strcasecmp(last, "cls") == 0;
}

/* Whether entry e is a member a sample may hold: a file, or a hard link
 * (tar's type '1', a second name of an earlier member; libarchive gives it
 * no file type of its own), or a symbolic link (which fails its sample
 * when the sample would read it, rather than leave the sample out). */
static bool is_member(struct archive_entry *e)
{
    return archive_entry_filetype(e) == AE_IFREG || archive_entry_filetype(e) == AE_IFLNK ||
           archive_entry_hardlink(e);
}

/* What a decode error calls a member's bytes: the sample's id names the
 * sample, not which of its members failed. */
static char *member_called(const source_reader *r, const char *name)
{
    return sl_asprintf("%s: member '%s'", r->file, name);
}

/* Adds one member to the pending sample. */
static sl_status add_member(source_reader *r, const char *name, const char *ext, uint8_t *data,
                            size_t len)
{
    sl_source_item *s = &r->pending;
    const char *last = strrchr(ext, '.');
    last = last ? last + 1 : ext;
    if (!s->extra && !(s->extra = json_object()))
        goto nomem;
    int k = named_column(r, ext);
    if (k >= 0) {
        if (!s->images && !(s->images = sl_calloc(r->n_columns, sizeof *s->images)))
            goto nomem;
        s->n_images = r->n_columns;
        char *called = member_called(r, name);
        if (!called)
            goto nomem;
        s->images[k] = (sl_source_image){NULL, data, len, called};
        return SL_OK;
    }
    if (!r->n_columns && is_image_ext(ext)) {
        if (!s->data) { /* the first image of a sample is its image */
            if (!(s->name = member_called(r, name)))
                goto nomem;
            s->data = data;
            s->len = len;
            return SL_OK;
        }
    } else if (strcasecmp(last, "json") == 0) {
        json_error_t jerr;
        json_t *o = sl_json_load_data((const char *)data, len, JSON_DECODE_ANY, &jerr);
        if (!json_is_object(o)) {
            if (!s->error && o)
                sl_source_item_fail(s, "%s: member '%s': not a JSON object but %s", r->file, name,
                                    sl_json_kind(o));
            else if (!s->error)
                sl_source_item_fail(s, "%s: member '%s': invalid JSON: %s%s", r->file, name,
                                    jerr.text, sl_json_file_hint(&jerr));
        } else {
            json_object_update(s->extra, o);
        }
        json_decref(o);
    } else if (strcasecmp(last, "txt") == 0) {
        /* a prompt (--prompt-column txt, {txt}) would reach the model as U+FFFD */
        char why[320];
        if (!s->error && sl_source_column_in_prompt(r->p, "txt") &&
            sl_source_prompt_text_bad("txt", (const char *)data, len, why, sizeof why))
            sl_source_item_fail(s, "%s: member '%s': %s", r->file, name, why);
        json_object_set_new(s->extra, "txt", sl_json_text((const char *)data, len));
    } else if (strcasecmp(last, "cls") == 0) {
        char *end;
        long long v = strtoll((const char *)data, &end, 10);
        while (*end == '\n' || *end == '\r' || *end == ' ')
            end++;
        json_object_set_new(s->extra, "cls", len && !*end ? json_integer(v)
                                                          : sl_json_text((const char *)data, len));
    }
    sl_free(data);
    return SL_OK;
nomem:
    sl_free(data);
    return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
}

/* The named image members gathered in *item: its image (one named)
 * or its list (several, in the order named); a member missing fails it,
 * naming the member. */
static void take_columns(source_reader *r, sl_source_item *item)
{
    for (size_t k = 0; k < r->n_columns && !item->error; k++)
        if (!item->images || !item->images[k].data)
            sl_source_item_fail(item, "%s: sample '%s' has no member '%s' (--image-column %s)",
                                r->file, item->id, r->columns[k], r->p->image_column);
    if (!item->error && r->n_columns == 1) { /* one named: the sample's image */
        item->data = item->images[0].data;
        item->len = item->images[0].len;
        item->name = item->images[0].name;
        sl_free(item->images);
        item->images = NULL;
        item->n_images = 0;
    }
}

/* Moves the pending sample (its first member at byte `offset`) into *item. */
static sl_status finish_sample(source_reader *r, int64_t offset, sl_source_item *item)
{
    *item = r->pending;
    r->pending = (sl_source_item){0};
    r->has_pending = false;
    if (r->n_columns)
        take_columns(r, item);
    /* Member names are only ever ids: "../x" or "/etc/x" names no file here. */
    char *id = sl_asprintf("%s/%s", r->name, item->id);
    if (!id)
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    item->at = offset;
    if (!item->data && !item->n_images && !item->error)
        sl_source_item_fail(item, "%s: sample '%s' has no image (.jpg, .png, .webp, .gif, "
                            "...) or video (.mp4, .webm, ...)",
                            r->file, item->id);
    sl_free(item->id);
    item->id = id;
    return SL_OK;
}

/* The member `name` (size bytes, its header at `offset`) could not be read
 * or skipped whole: the shard ends here, with one error item (its id
 * SHARD@offset tells this break from another). */
static sl_status end_at_member(source_reader *r, const char *name, int64_t size, int64_t offset)
{
    r->ended = true;
    r->end_offset = offset;
    r->end_error = sl_asprintf("%s: member '%s' (%lld bytes) at byte %lld is truncated or damaged: "
                               "%s; the rest of the shard is skipped",
                               r->file, name, (long long)size, (long long)offset,
                               archive_error_string(r->a) ? archive_error_string(r->a)
                                                          : "short read");
    if (!r->end_error)
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    /* The unfinished sample is part of the broken tail. */
    sl_source_item_clear(&r->pending);
    r->has_pending = false;
    return SL_OK;
}

static sl_status wds_next(source_reader *r, sl_source_item *item, bool *done)
{
    while (!r->ended) {
        struct archive_entry *e = r->held;
        r->held = NULL;
        int rc = e ? ARCHIVE_OK : archive_read_next_header(r->a, &e);
        if (rc == ARCHIVE_EOF) {
            r->ended = true;
            break;
        }
        if (rc != ARCHIVE_OK && rc != ARCHIVE_WARN) {
            r->ended = true;
            /* After a fatal read libarchive reports no header position (a
             * negative status): the tar bytes read so far say where. */
            r->end_offset = archive_read_header_position(r->a);
            if (r->end_offset < 0)
                r->end_offset = archive_filter_bytes(r->a, 0);
            r->end_error = sl_asprintf("%s: bad tar header at byte %lld: %s; the rest of the "
                                       "shard is skipped",
                                       r->file, (long long)r->end_offset,
                                       archive_error_string(r->a));
            if (!r->end_error)
                return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
            break;
        }
        if (!is_member(e))
            continue;
        const char *name = archive_entry_pathname(e);
        size_t key_len;
        const char *ext;
        if (!name || !sl_wds_split(name, &key_len, &ext) || sl_is_mac_metadata(name))
            continue; /* a Mac's metadata (__MACOSX/...) is no sample */
        bool same = r->has_pending && strlen(r->pending.id) == key_len &&
                    strncmp(r->pending.id, name, key_len) == 0;
        if (r->has_pending && !same) {
            r->held = e;
            return finish_sample(r, r->pending_offset, item);
        }
        if (!same) {
            r->pending = (sl_source_item){0};
            r->pending_offset = archive_read_header_position(r->a);
            if (!(r->pending.id = sl_strndup(name, key_len)))
                return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
            r->has_pending = true;
        }
        int64_t size = archive_entry_size(e);
        int64_t offset = archive_read_header_position(r->a);
        sl_status st = SL_OK;
        const char *link = archive_entry_hardlink(e);
        bool skip = false;
        if (!member_used(r, &r->pending, ext)) {
            skip = true;
        } else if (link && size <= 0) {
            /* Its bytes are the target's, an earlier member's: the shard
             * is read once, front to back, keeping only this sample, so
             * they are gone (going back would mean holding every member
             * or reading the shard again, gzipped or remote ones too). */
            if (!r->pending.error)
                st = sl_source_item_fail(&r->pending, "%s: %s: a hard link to %s inside the tar: "
                                         "sluice reads a shard once, front to back, and cannot "
                                         "go back for the linked member's data; store the file "
                                         "itself (GNU tar: --hard-dereference)",
                                         r->file, name, link);
            skip = true;
        } else if (archive_entry_filetype(e) == AE_IFLNK) {
            /* A symlink has no bytes of its own, and its target is a path
             * outside the shard that sluice never opens (member names are
             * ids only). Left out, its sample vanished without a row. */
            if (!r->pending.error)
                st = sl_source_item_fail(&r->pending, "%s: %s: a symbolic link to '%s' inside the "
                                         "tar, not a file: sluice never follows a member out of "
                                         "the shard; store the file itself (GNU tar: --dereference)",
                                         r->file, name, archive_entry_symlink(e)
                                                            ? archive_entry_symlink(e) : "");
            skip = true;
        } else if (size < 0 || (uint64_t)size > r->p->max_item_bytes) {
            if (!r->pending.error)
                st = sl_source_item_fail_status(&r->pending, SL_ERR_TOO_LARGE,
                                                "%s: member '%s' is %lld bytes, over the "
                                                "limit of %zu",
                                         r->file, name, (long long)size, r->p->max_item_bytes);
            skip = true;
        } else {
            uint8_t *data = NULL;
            if (read_member(r->a, e, size, &data) != ARCHIVE_OK)
                st = end_at_member(r, name, size, offset);
            else
                st = add_member(r, name, ext, data, (size_t)size);
        }
        /* A skip that runs out of shard (a member cut short, or a header
         * claiming more bytes than follow: a pax size of 10^15) is a
         * break as a read's is: unchecked, the next header read found the
         * end and the shard ended as if whole, the samples after the
         * break gone without a word. */
        if (st == SL_OK && skip && archive_read_data_skip(r->a) != ARCHIVE_OK)
            st = end_at_member(r, name, size, offset);
        if (st != SL_OK)
            return st;
    }
    if (r->has_pending)
        return finish_sample(r, r->pending_offset, item);
    if (r->end_error) {
        item->error = r->end_error;
        item->error_status = SL_ERR_IO; /* the shard, damaged or unreadable */
        r->end_error = NULL;
        item->id = sl_asprintf("%s@%lld", r->name, (long long)r->end_offset);
        item->at = r->end_offset;
        /* A damaged shard ends alike for every run; a failed read may not. */
        item->cut_short = r->rem && r->rem->failed;
        return item->id ? SL_OK : sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->file);
    }
    *done = true;
    return SL_OK;
}

/* Counts samples from headers alone (member data is skipped, not read). */
static int64_t wds_count(const char *file, const sl_source_params *p, const atomic_bool *stop)
{
    remote *rem;
    struct archive *a = open_archive(file, p, &rem);
    if (!a)
        return 1; /* the shard gives one error item */
    int64_t n = 0;
    char *key = NULL;
    struct archive_entry *e;
    int rc;
    while ((rc = archive_read_next_header(a, &e)) == ARCHIVE_OK || rc == ARCHIVE_WARN) {
        if (atomic_load(stop)) {
            n = -1;
            break;
        }
        const char *name = archive_entry_pathname(e);
        size_t key_len;
        const char *ext;
        if (!is_member(e) || !name || !sl_wds_split(name, &key_len, &ext) || sl_is_mac_metadata(name))
            continue;
        if (!key || strlen(key) != key_len || strncmp(key, name, key_len) != 0) {
            sl_free(key);
            if (!(key = sl_strndup(name, key_len))) {
                n = -1;
                break;
            }
            n++;
        }
    }
    if (n >= 0 && rc != ARCHIVE_EOF)
        n++; /* the error item for the broken tail */
    sl_free(key);
    archive_read_free(a);
    remote_free(rem);
    return n;
}

const source_kind sl_source_webdataset = {"webdataset", wds_open, wds_next, wds_close, wds_count, NULL,
                                          false};
