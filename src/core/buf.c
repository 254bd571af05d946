#include "core/buf.h"

#include <string.h>

#include "core/alloc.h"

bool sl_buf_reserve(sl_buf *b, size_t extra) { return sl_buf_reserve_within(b, extra, SIZE_MAX); }

bool sl_buf_reserve_within(sl_buf *b, size_t extra, size_t most)
{
    if (b->cap - b->len >= extra)
        return true;
    if (extra > SIZE_MAX / 2 - b->len || b->len + extra - b->cap > most)
        return false;
    size_t need = b->len + extra, cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    if (cap - b->cap > most)
        cap = need;
    uint8_t *data = sl_realloc(b->data, cap);
    if (!data)
        return false;
    b->data = data;
    b->cap = cap;
    return true;
}

bool sl_buf_append(sl_buf *b, const void *data, size_t len)
{
    if (!sl_buf_reserve(b, len))
        return false;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    return true;
}

size_t sl_capped_write(char *ptr, size_t size, size_t n, void *capped)
{
    sl_capped *c = capped;
    size_t add = size * n;
    if (add > c->max - c->buf.len)
        c->too_big = true;
    else if (!sl_buf_append(&c->buf, ptr, add))
        c->nomem = true;
    return c->too_big || c->nomem ? 0 : add;
}

void sl_buf_free(sl_buf *b)
{
    sl_free(b->data);
    memset(b, 0, sizeof *b);
}
