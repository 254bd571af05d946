/* io/ranged.c — see ranged.h. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "io/ranged.h"
#include "io/s3.h"

struct sl_ranged {
    char *path;
    int fd;              /* a local file; -1 for an object */
    const sl_s3 *s3;     /* an object's store */
    int64_t size;        /* -1 until known */
    uint8_t *tail;       /* an object's last tail_len bytes, from tail_off */
    size_t tail_len;
    uint64_t tail_off;
    uint64_t requests;
};

sl_status sl_ranged_open(const char *path, sl_ranged **out)
{
    *out = NULL;
    sl_ranged *r = sl_calloc(1, sizeof *r);
    if (!r || !(r->path = sl_strdup(path))) {
        sl_free(r);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", path);
    }
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
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    sl_status st = SL_OK;
    if (r->fd < 0)
        st = sl_fail(errno == ENOENT ? SL_ERR_NOT_FOUND : SL_ERR_IO, "cannot open '%s': %s", path,
                     strerror(errno));
    else if (fstat(r->fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        st = sl_fail(SL_ERR_IO, "'%s' is not a regular file", path);
    else
        r->size = sb.st_size;
    if (st != SL_OK) {
        sl_ranged_free(r);
        return st;
    }
    *out = r;
    return SL_OK;
}

bool sl_ranged_is_remote(const sl_ranged *r) { return r->s3 != NULL; }
const char *sl_ranged_path(const sl_ranged *r) { return r->path; }
uint64_t sl_ranged_requests(const sl_ranged *r) { return r->requests; }

sl_status sl_ranged_size(sl_ranged *r, uint64_t *size)
{
    if (r->size < 0) { /* an object: its tail, and so its size */
        if (!r->tail && !(r->tail = sl_malloc(SL_RANGED_TAIL)))
            return sl_fail(SL_ERR_NOMEM, "out of memory reading '%s'", r->path);
        uint64_t total = 0;
        size_t got = 0;
        r->requests++;
        sl_status st = sl_s3_read(r->s3, r->path, 0, SL_RANGED_TAIL, true, r->tail, &got, &total);
        if (st != SL_OK)
            return st;
        if (got > total)
            return sl_fail(SL_ERR_IO, "reading '%s': the store sent %zu bytes of a %llu-byte "
                                      "object", r->path, got, (unsigned long long)total);
        r->size = (int64_t)total;
        r->tail_len = got;
        r->tail_off = total - got;
    }
    *size = (uint64_t)r->size;
    return SL_OK;
}

static sl_status read_file(sl_ranged *r, uint8_t *p, size_t len, uint64_t offset, size_t *got)
{
    while (len > 0) {
        r->requests++;
        ssize_t n = pread(r->fd, p, len, (off_t)offset);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return sl_fail(SL_ERR_IO, "cannot read '%s' at offset %llu: %s", r->path,
                           (unsigned long long)offset, strerror(errno));
        if (n == 0)
            break;
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
        *got += (size_t)n;
    }
    return SL_OK;
}

sl_status sl_ranged_read(sl_ranged *r, void *dst, size_t len, uint64_t offset, size_t *got)
{
    *got = 0;
    if (len == 0)
        return SL_OK;
    if (!r->s3)
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
    uint64_t total = 0;
    r->requests++;
    sl_status st = sl_s3_read(r->s3, r->path, offset, len, false, dst, got, &total);
    if (st == SL_OK)
        r->size = (int64_t)total;
    return st;
}

void sl_ranged_free(sl_ranged *r)
{
    if (!r)
        return;
    if (r->fd >= 0)
        close(r->fd);
    sl_free(r->tail);
    sl_free(r->path);
    sl_free(r);
}
