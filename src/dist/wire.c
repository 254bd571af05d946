/* dist/wire.c — see wire.h. */
#include <string.h>

#include "dist/wire.h"

void wire_put_bytes(wire_buf *b, const void *p, size_t n)
{
    if (!b->oom && !sl_buf_append(&b->buf, p, n))
        b->oom = true;
}

void wire_put_u8(wire_buf *b, uint8_t v) { wire_put_bytes(b, &v, 1); }

static void little_endian(int64_t v, uint8_t le[8])
{
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)((uint64_t)v >> (8 * i));
}

void wire_put_i64(wire_buf *b, int64_t v)
{
    uint8_t le[8];
    little_endian(v, le);
    wire_put_bytes(b, le, 8);
}

void wire_set_i64(wire_buf *b, size_t at, int64_t v)
{
    if (!b->oom && at + 8 <= b->buf.len)
        little_endian(v, b->buf.data + at);
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
    b->buf.len = 0;
    b->oom = false;
}

void wire_free(wire_buf *b)
{
    sl_buf_free(&b->buf);
    b->oom = false;
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
