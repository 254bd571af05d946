/* core/file.c — see core/file.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
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
