/* core/file.c — see core/file.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/file.h"

/* What a file that is not a regular one is, for the message. */
const char *sl_file_kind(unsigned mode)
{
    mode_t m = (mode_t)mode;
    if (S_ISDIR(m))
        return "a folder";
    if (S_ISFIFO(m))
        return "a FIFO (named pipe)";
    if (S_ISSOCK(m))
        return "a socket";
    if (S_ISCHR(m))
        return "a character device";
    if (S_ISBLK(m))
        return "a block device";
    return "not a plain file";
}

/* A name that is not there, though the same name in Unicode's other normal
 * form is: manifests are mostly NFC, while macOS writes names NFD (café as
 * cafe + U+0301) and tar and rsync keep its bytes. The two look the same in
 * any message, so the failure says which one exists. */
static sl_status not_found(const char *path, int err)
{
    static const struct {
        GNormalizeMode mode;
        const char *name;
    } forms[] = {{G_NORMALIZE_NFC, "NFC"}, {G_NORMALIZE_NFD, "NFD, as macOS writes names"}};
    bool ascii = true;
    for (const char *c = path; *c && ascii; c++)
        ascii = (unsigned char)*c < 0x80;
    for (size_t i = 0; !ascii && i < sizeof forms / sizeof *forms; i++) {
        gchar *other = g_utf8_normalize(path, -1, forms[i].mode); /* NULL: not UTF-8 */
        bool there = other && strcmp(other, path) != 0 && access(other, F_OK) == 0;
        g_free(other);
        if (there)
            return sl_fail(SL_ERR_NOT_FOUND, "%s: cannot open: %s; the same name in another "
                                             "Unicode form (%s) exists, its letters spelled "
                                             "in other bytes: rename the files to the list's "
                                             "form (convmv -f utf8 -t utf8 --nfc --notest) or "
                                             "write the list's paths in theirs",
                           path, strerror(err), forms[i].name);
    }
    return sl_fail(SL_ERR_NOT_FOUND, "%s: cannot open: %s", path, strerror(err));
}

sl_status sl_file_open_regular(const char *path, int *fd_out, uint64_t *size)
{
    *fd_out = -1;
    *size = 0;
    /* O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer,
     * forever, with no way to stop the worker; non-blocking it opens at
     * once and fstat tells it apart. A regular file ignores the flag, but
     * it is cleared anyway so later reads are plain ones. */
    int fd;
    do
        fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    while (fd < 0 && errno == EINTR);
    if (fd < 0 && errno == ENOENT)
        return not_found(path, errno);
    if (fd < 0)
        return sl_fail(SL_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int err = errno;
        close(fd);
        return sl_fail(SL_ERR_IO, "%s: cannot stat: %s", path, strerror(err));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return sl_fail(SL_ERR_INVALID_ARG, "%s: not a regular file but %s: only regular files "
                                           "are read as inputs", path, sl_file_kind(sb.st_mode));
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags >= 0)
        (void)fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    *fd_out = fd;
    *size = (uint64_t)sb.st_size;
    return SL_OK;
}

static sl_status too_large(const char *path, uint64_t size, bool at_least, uint64_t max)
{
    return sl_fail(SL_ERR_TOO_LARGE, "'%s' is %s%llu bytes, over the limit of %llu bytes", path,
                   at_least ? "at least " : "", (unsigned long long)size, (unsigned long long)max);
}

sl_status sl_read_file(const char *path, uint64_t max_bytes, uint8_t **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    int fd;
    uint64_t size;
    sl_status st = sl_file_open_regular(path, &fd, &size);
    if (st != SL_OK)
        return st;
    int err = sl_fault("read", path);
    if (err) {
        close(fd);
        return sl_fail(SL_ERR_IO, "%s: read error: %s", path, strerror(err));
    }
    /* The size from fstat refuses a file too large before any memory is
     * taken for it; the reads still stop at the limit, for a file that
     * grows while it is read (or a file system that reports 0). */
    if (size > max_bytes || size >= SIZE_MAX) {
        close(fd);
        return too_large(path, size, false, max_bytes);
    }
    /* One byte more than the size, so the end is seen without growing. */
    size_t cap = size ? (size_t)size + 1 : (size_t)1 << 16;
    uint8_t *buf = sl_malloc(cap);
    size_t n = 0;
    if (!buf)
        st = sl_fail(SL_ERR_NOMEM, "%s: out of memory reading its %llu bytes", path,
                     (unsigned long long)size);
    while (st == SL_OK) {
        if (n > max_bytes) {
            st = too_large(path, n, true, max_bytes);
            break;
        }
        if (n == cap) {
            size_t ncap = cap <= SIZE_MAX / 2 ? cap * 2 : SIZE_MAX;
            uint8_t *grown = ncap > cap ? sl_realloc(buf, ncap) : NULL;
            if (!grown) {
                st = sl_fail(SL_ERR_NOMEM, "%s: out of memory reading the file", path);
                break;
            }
            buf = grown;
            cap = ncap;
        }
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            st = sl_fail(SL_ERR_IO, "%s: read error: %s", path, strerror(errno));
        if (got <= 0)
            break;
        n += (size_t)got;
    }
    close(fd);
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

int sl_file_create_temp(const char *path, unsigned mode)
{
    /* The names of temporaries are known in advance (.part-N.EXT.tmp-PID,
     * ._summary.json.tmp): O_CREAT|O_TRUNC alone followed a symlink planted
     * under such a name and overwrote its target with the run's rows. */
    (void)unlink(path); /* whatever stays there makes the O_EXCL open fail */
    int fd;
    do
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, (mode_t)mode);
    while (fd < 0 && errno == EINTR);
    return fd;
}

const char *sl_file_temp_error(int err)
{
    if (err == EEXIST)
        return "a file stands at that name that sluice cannot remove, or another process made "
               "it again at once (another user's, in a folder others may write in: write to a "
               "folder of your own)";
    return strerror(err);
}

sl_status sl_file_rename(const char *from, const char *to)
{
    int err = sl_fault("rename", to);
    if (err || rename(from, to) != 0)
        return sl_fail(SL_ERR_IO, "cannot rename '%s' to '%s': %s", from, to,
                       strerror(err ? err : errno));
    return SL_OK;
}
