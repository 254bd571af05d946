/* io/ranged.c — see ranged.h. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/file.h"
#include "io/fetch.h"
#include "io/ranged.h"
#include "io/s3.h"
#include "io/source_parse.h"

/* A read-ahead block: `len` bytes of the file from `off` (its room is the
 * largest block). */
typedef struct block {
    uint8_t *data;
    uint64_t off;
    size_t len;
    uint64_t used; /* when last read (r->tick), for dropping the oldest */
    bool valid;
} block;

struct sl_ranged {
    char *path;
    int fd;              /* a local file; -1 for a remote one */
    const sl_s3 *s3;     /* an object's store */
    char etag[SL_S3_ETAG_MAX]; /* ... the version its first read saw: later reads ask
                                  for it, so an object replaced meanwhile fails them */
    bool http;           /* an http(s) URL */
    sl_fetch_version version; /* ... the version its first read saw (io/fetch.h) */
    sl_ranged_params p;
    int64_t size;        /* -1 until known */
    uint8_t *tail;       /* a remote file's last tail_len bytes, from tail_off */
    size_t tail_len;
    uint64_t tail_off;
    uint64_t requests, bytes;
    bool no_ranges;      /* an http(s) server answered a Range with a 200 */
    size_t first_block;  /* read-ahead: a fetch after a jump (0: none) */
    size_t most_block;   /* ... and the most one fetch of a run grows to */
    int n_blocks;
    block *blocks;
    uint64_t tick;
    uint64_t run_end;    /* where the last block fetched ends, */
    size_t run_len;      /* and its length */
};

sl_ranged_params sl_ranged_default_params(void)
{
    sl_fetch_params f = sl_fetch_default_params();
    return (sl_ranged_params){.timeout_ms = f.timeout_ms, .retries = f.retries, .max_bytes = 0};
}

static bool is_http(const char *path)
{
    char scheme[16];
    sl_url_scheme(path, scheme);
    return strcmp(scheme, "http") == 0 || strcmp(scheme, "https") == 0;
}

sl_status sl_ranged_open_with(const char *path, const sl_ranged_params *params, sl_ranged **out)
{
    *out = NULL;
    sl_ranged *r = sl_calloc(1, sizeof *r);
    if (!r || !(r->path = sl_strdup(path))) {
        sl_free(r);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", path);
    }
    r->p = params ? *params : sl_ranged_default_params();
    r->fd = -1;
    r->size = -1;
    if (sl_s3_is_url(path)) {
        if (!(r->s3 = sl_s3_shared())) {
            sl_ranged_free(r);
            return SL_ERR_INVALID_ARG; /* the environment is wrong: the message is set */
        }
        *out = r;
        return SL_OK;
    }
    if (is_http(path)) {
        r->http = true;
        *out = r;
        return SL_OK;
    }
    uint64_t size = 0;
    sl_status st = sl_file_open_regular(path, &r->fd, &size);
    if (st == SL_ERR_INVALID_ARG) { /* not a regular file: the input's fault, not the call's */
        char why[768]; /* sl_fail writes where sl_last_error reads */
        snprintf(why, sizeof why, "%s", sl_last_error());
        st = sl_fail(SL_ERR_IO, "%s", why);
    }
    r->size = (int64_t)size;
    if (st != SL_OK) {
        sl_ranged_free(r);
        return st;
    }
    *out = r;
    return SL_OK;
}

sl_status sl_ranged_open(const char *path, sl_ranged **out)
{
    return sl_ranged_open_with(path, NULL, out);
}

static bool remote(const sl_ranged *r) { return r->s3 != NULL || r->http; }

bool sl_ranged_is_remote(const sl_ranged *r) { return remote(r); }
const char *sl_ranged_path(const sl_ranged *r) { return r->path; }
uint64_t sl_ranged_requests(const sl_ranged *r) { return r->requests; }
uint64_t sl_ranged_bytes_read(const sl_ranged *r) { return r->bytes; }
bool sl_ranged_ignores_ranges(const sl_ranged *r) { return r->no_ranges; }

/* One request to the store or server: len bytes from offset (or the last
 * len when from_end), within max_bytes; the size learned from the answer. */
static sl_status get(sl_ranged *r, uint8_t *dst, size_t len, uint64_t offset, bool from_end,
                     size_t *got)
{
    *got = 0;
    if (r->size >= 0 && !from_end && (uint64_t)r->size - offset < len)
        len = (size_t)((uint64_t)r->size - offset); /* the caller checked offset < size */
    if (r->p.max_bytes && (r->bytes > r->p.max_bytes || len > r->p.max_bytes - r->bytes))
        return sl_fail(SL_ERR_TOO_LARGE,
                       "cannot read '%s': %zu more bytes at offset %llu would pass the "
                       "%llu-byte bound on what one input may read (--max-download-bytes), "
                       "%llu read so far",
                       r->path, len, (unsigned long long)offset,
                       (unsigned long long)r->p.max_bytes, (unsigned long long)r->bytes);
    r->requests++;
    sl_status st;
    if (r->s3) {
        uint64_t total = 0;
        st = sl_s3_read_same(r->s3, r->path, offset, len, from_end, dst, got, &total, r->etag);
        if (st == SL_OK)
            r->size = (int64_t)total;
    } else {
        sl_fetch_params fp = sl_fetch_default_params();
        fp.timeout_ms = r->p.timeout_ms;
        fp.retries = r->p.retries;
        int64_t total = -1;
        bool no_ranges = false;
        st = sl_fetch_range(r->path, &fp, offset, len, from_end, dst, got, &total, &no_ranges,
                            &r->version);
        r->no_ranges = r->no_ranges || no_ranges;
        if (st == SL_OK)
            r->size = total;
    }
    r->bytes += *got;
    return st;
}

sl_status sl_ranged_size(sl_ranged *r, uint64_t *size)
{
    if (r->size < 0) { /* a remote file: its tail, and so its size */
        if (!r->tail && !(r->tail = sl_malloc(SL_RANGED_TAIL)))
            return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->path);
        size_t got = 0;
        sl_status st = get(r, r->tail, SL_RANGED_TAIL, 0, true, &got);
        if (st != SL_OK)
            return st;
        if (got > (uint64_t)r->size)
            return sl_fail(SL_ERR_IO, "reading '%s': the store sent %zu bytes of a %llu-byte "
                                      "object", r->path, got, (unsigned long long)r->size);
        r->tail_len = got;
        r->tail_off = (uint64_t)r->size - got;
    }
    *size = (uint64_t)r->size;
    return SL_OK;
}

static sl_status read_file(sl_ranged *r, uint8_t *p, size_t len, uint64_t offset, size_t *got)
{
    while (len > 0) {
        r->requests++;
        int err = sl_fault("ranged.read", r->path); /* tests: a disk's EIO midway */
        ssize_t n = err ? -1 : pread(r->fd, p, len, (off_t)offset);
        if (n < 0 && !err && errno == EINTR)
            continue;
        if (n < 0)
            return sl_fail(SL_ERR_IO, "cannot read '%s' at offset %llu: %s", r->path,
                           (unsigned long long)offset, strerror(err ? err : errno));
        if (n == 0)
            break;
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
        *got += (size_t)n;
        r->bytes += (uint64_t)n;
    }
    return SL_OK;
}

/* A read as asked, without the read-ahead blocks. */
static sl_status read_direct(sl_ranged *r, uint8_t *dst, size_t len, uint64_t offset,
                             size_t *got)
{
    *got = 0;
    if (!remote(r))
        return read_file(r, dst, len, offset, got);
    if (r->size >= 0 && offset >= (uint64_t)r->size)
        return SL_OK;
    if (r->tail && offset >= r->tail_off) { /* inside the kept tail */
        uint64_t at = offset - r->tail_off;
        size_t n = at < r->tail_len ? r->tail_len - (size_t)at : 0;
        *got = n < len ? n : len;
        memcpy(dst, r->tail + at, *got);
        return SL_OK;
    }
    return get(r, dst, len, offset, false, got);
}

/* A block holding the byte at `offset`: a kept one, or one fetched into
 * the least recently used from offset on, twice as long as the last when
 * it goes on from where that ended (a sequential run), else first_block. */
static sl_status block_at(sl_ranged *r, uint64_t offset, block **out)
{
    block *lru = &r->blocks[0];
    for (int i = 0; i < r->n_blocks; i++) {
        block *b = &r->blocks[i];
        if (b->valid && b->off <= offset && offset - b->off < b->len) {
            b->used = ++r->tick;
            *out = b;
            return SL_OK;
        }
        if (!b->valid || (lru->valid && b->used < lru->used))
            lru = b;
    }
    size_t want = r->first_block;
    if (offset == r->run_end && r->run_len)
        want = r->run_len < r->most_block / 2 ? 2 * r->run_len : r->most_block;
    lru->valid = false;
    sl_status st = read_direct(r, lru->data, want, offset, &lru->len);
    if (st != SL_OK)
        return st;
    lru->off = offset;
    lru->used = ++r->tick;
    lru->valid = true;
    r->run_end = offset + lru->len;
    r->run_len = want;
    *out = lru;
    return SL_OK;
}

sl_status sl_ranged_read(sl_ranged *r, void *dst, size_t len, uint64_t offset, size_t *got)
{
    *got = 0;
    if (len == 0)
        return SL_OK;
    if (!r->most_block || len >= r->most_block)
        return read_direct(r, dst, len, offset, got);
    uint8_t *p = dst;
    while (len > 0) {
        if (r->size >= 0 && offset >= (uint64_t)r->size)
            break;
        block *b;
        sl_status st = block_at(r, offset, &b);
        if (st != SL_OK)
            return st;
        if (b->len == 0)
            break; /* past the end (a file of unknown size) */
        size_t at = (size_t)(offset - b->off);
        size_t n = b->len - at < len ? b->len - at : len;
        memcpy(p, b->data + at, n);
        p += n;
        len -= n;
        offset += n;
        *got += n;
    }
    return SL_OK;
}

static void drop_blocks(sl_ranged *r)
{
    for (int i = 0; i < r->n_blocks; i++)
        sl_free(r->blocks[i].data);
    sl_free(r->blocks);
    r->blocks = NULL;
    r->n_blocks = 0;
    r->first_block = r->most_block = 0;
    r->run_end = r->run_len = 0;
}

sl_status sl_ranged_set_readahead(sl_ranged *r, size_t first, size_t most, int blocks)
{
    drop_blocks(r);
    if (first == 0 || blocks < 1)
        return SL_OK;
    most = most < first ? first : most;
    if (!(r->blocks = sl_calloc((size_t)blocks, sizeof *r->blocks)))
        return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->path);
    r->n_blocks = blocks;
    for (int i = 0; i < blocks; i++)
        if (!(r->blocks[i].data = sl_malloc(most))) {
            drop_blocks(r);
            return sl_fail(SL_ERR_NOMEM, "out of memory for %d blocks of %zu bytes reading '%s'",
                           blocks, most, r->path);
        }
    r->first_block = first;
    r->most_block = most;
    return SL_OK;
}

void sl_ranged_free(sl_ranged *r)
{
    if (!r)
        return;
    if (r->fd >= 0)
        close(r->fd);
    drop_blocks(r);
    sl_free(r->tail);
    sl_free(r->path);
    sl_free(r);
}
