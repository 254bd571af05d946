/* dist/wire.c — see wire.h. */
#include <string.h>

#include "core/alloc.h"
#include "dist/wire.h"

static bool reserve(wire_buf *b, size_t n)
{
    if (b->oom)
        return false;
    if (b->cap - b->len >= n)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < n)
        cap *= 2;
    uint8_t *grown = sl_realloc(b->data, cap);
    if (!grown) {
        b->oom = true;
        return false;
    }
    b->data = grown;
    b->cap = cap;
    return true;
}

void wire_put_bytes(wire_buf *b, const void *p, size_t n)
{
    if (n && reserve(b, n)) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
    }
}

void wire_put_u8(wire_buf *b, uint8_t v) { wire_put_bytes(b, &v, 1); }

void wire_put_i64(wire_buf *b, int64_t v)
{
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)((uint64_t)v >> (8 * i));
    wire_put_bytes(b, le, 8);
}

void wire_put_str(wire_buf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    wire_put_i64(b, (int64_t)n);
    wire_put_bytes(b, s ? s : "", n);
    wire_put_u8(b, 0);
}

void wire_reset(wire_buf *b)
{
    b->len = 0;
    b->oom = false;
}

void wire_free(wire_buf *b)
{
    sl_free(b->data);
    *b = (wire_buf){0};
}

wire_reader wire_read(const void *data, size_t len)
{
    const uint8_t *p = data;
    return (wire_reader){.at = p, .end = p + len};
}

const void *wire_get_bytes(wire_reader *r, size_t n)
{
    if (r->bad || (size_t)(r->end - r->at) < n) {
        r->bad = true;
        return NULL;
    }
    const void *p = r->at;
    r->at += n;
    return p;
}

uint8_t wire_get_u8(wire_reader *r)
{
    const uint8_t *p = wire_get_bytes(r, 1);
    return p ? *p : 0;
}

int64_t wire_get_i64(wire_reader *r)
{
    const uint8_t *p = wire_get_bytes(r, 8);
    uint64_t v = 0;
    for (int i = 0; p && i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return (int64_t)v;
}

const char *wire_get_str(wire_reader *r)
{
    int64_t n = wire_get_i64(r);
    if (n < 0 || (uint64_t)n >= (uint64_t)(r->end - r->at))
        r->bad = true;
    const char *s = r->bad ? NULL : wire_get_bytes(r, (size_t)n + 1);
    if (!s || s[n] != '\0' || memchr(s, '\0', (size_t)n)) {
        r->bad = true;
        return "";
    }
    return s;
}
