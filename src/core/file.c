/* core/file.c — see core/file.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/file.h"

sl_status sl_read_file(const char *path, uint8_t **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return sl_fail(errno == ENOENT ? SL_ERR_NOT_FOUND : SL_ERR_IO, "%s: cannot open: %s",
                       path, strerror(errno));
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    sl_status st = SL_OK;
    for (;;) {
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 1 << 16;
            uint8_t *grown = sl_realloc(buf, ncap);
            if (!grown) {
                st = sl_fail(SL_ERR_NOMEM, "%s: out of memory reading the file", path);
                break;
            }
            buf = grown;
            cap = ncap;
        }
        size_t got = fread(buf + n, 1, cap - n, fp);
        n += got;
        if (got == 0) {
            if (ferror(fp))
                st = sl_fail(SL_ERR_IO, "%s: read error: %s", path, strerror(errno));
            break;
        }
    }
    fclose(fp);
    if (st != SL_OK) {
        sl_free(buf);
        return st;
    }
    *data = buf;
    *len = n;
    return SL_OK;
}

/* An injected write error acts as a disk that fills: what fits goes in
 * (here half), then the error. */
static void write_half(int fd, const uint8_t *p, size_t len)
{
    ssize_t n = write(fd, p, len / 2);
    (void)n;
}

sl_status sl_file_write_all(int fd, const void *data, size_t len, const char *path)
{
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n;
        int err = sl_fault("write", path);
        if (err) {
            if (err != EINTR)
                write_half(fd, p, len);
            errno = err;
            n = -1;
        } else {
            n = write(fd, p, len);
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return sl_fail(SL_ERR_IO, "cannot write '%s': %s", path,
                           n < 0 ? strerror(errno) : "the disk took nothing (full?)");
        p += n;
        len -= (size_t)n;
    }
    return SL_OK;
}

sl_status sl_file_sync(int fd, const char *path)
{
    int err = sl_fault("fsync", path);
    if (err || fsync(fd) != 0)
        return sl_fail(SL_ERR_IO, "cannot sync '%s' to disk: %s", path,
                       strerror(err ? err : errno));
    return SL_OK;
}

sl_status sl_file_sync_dir(const char *dir)
{
    /* As PostgreSQL does: a folder that cannot be opened for reading (EACCES)
     * or a file system that cannot sync folders (EINVAL, EBADF) is no error,
     * since nothing more can be done there; any other failure (EIO) is. */
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 && errno == EACCES)
        return SL_OK;
    if (fd < 0)
        return sl_fail(SL_ERR_IO, "cannot open folder '%s' to sync it: %s", dir, strerror(errno));
    int err = sl_fault("fsync", dir);
    if (!err && fsync(fd) != 0 && errno != EINVAL && errno != EBADF)
        err = errno;
    close(fd);
    if (err)
        return sl_fail(SL_ERR_IO, "cannot sync folder '%s' to disk: %s", dir, strerror(err));
    return SL_OK;
}

sl_status sl_file_rename(const char *from, const char *to)
{
    int err = sl_fault("rename", to);
    if (err || rename(from, to) != 0)
        return sl_fail(SL_ERR_IO, "cannot rename '%s' to '%s': %s", from, to,
                       strerror(err ? err : errno));
    return SL_OK;
}
