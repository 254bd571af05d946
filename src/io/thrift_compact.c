/* io/thrift_compact.c — Thrift compact protocol writer and reader. */
#include <string.h>

#include "core/alloc.h"
#include "io/thrift_compact.h"

/* ---- writer ------------------------------------------------------------ */

void sl_tc_writer_init(sl_tc_writer *w)
{
    memset(w, 0, sizeof *w);
}

void sl_tc_writer_free(sl_tc_writer *w)
{
    if (!w)
        return;
    sl_free(w->buf);
    w->buf = NULL;
    w->len = w->cap = 0;
}

static void put(sl_tc_writer *w, const void *data, size_t n)
{
    if (w->err)
        return;
    if (w->len + n > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + n)
            cap *= 2;
        uint8_t *buf = sl_realloc(w->buf, cap);
        if (!buf) {
            w->err = true;
            return;
        }
        w->buf = buf;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, data, n);
    w->len += n;
}

void sl_tc_write_byte(sl_tc_writer *w, uint8_t v)
{
    put(w, &v, 1);
}

size_t sl_tc_encode_varint(uint64_t v, uint8_t out[10])
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

void sl_tc_write_varint(sl_tc_writer *w, uint64_t v)
{
    uint8_t tmp[10];
    put(w, tmp, sl_tc_encode_varint(v, tmp));
}

void sl_tc_write_i64(sl_tc_writer *w, int64_t v)
{
    sl_tc_write_varint(w, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

void sl_tc_write_double(sl_tc_writer *w, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, 8);
    uint8_t tmp[8];
    for (int i = 0; i < 8; i++)
        tmp[i] = (uint8_t)(bits >> (8 * i));
    put(w, tmp, 8);
}

void sl_tc_write_binary(sl_tc_writer *w, const void *data, size_t len)
{
    sl_tc_write_varint(w, len);
    if (len)
        put(w, data, len);
}

void sl_tc_write_struct_begin(sl_tc_writer *w)
{
    if (w->depth >= SL_TC_MAX_DEPTH) {
        w->err = true;
        return;
    }
    w->last_id[w->depth++] = 0;
}

void sl_tc_write_struct_end(sl_tc_writer *w)
{
    sl_tc_write_byte(w, SL_TC_STOP);
    if (w->depth > 0)
        w->depth--;
    else
        w->err = true;
}

void sl_tc_write_field(sl_tc_writer *w, int type, int16_t id)
{
    if (w->depth == 0) {
        w->err = true;
        return;
    }
    int16_t *last = &w->last_id[w->depth - 1];
    int delta = id - *last;
    if (delta > 0 && delta <= 15) {
        sl_tc_write_byte(w, (uint8_t)(delta << 4 | type));
    } else {
        sl_tc_write_byte(w, (uint8_t)type);
        sl_tc_write_i64(w, id);
    }
    *last = id;
}

void sl_tc_write_list_begin(sl_tc_writer *w, int elem_type, size_t count)
{
    if (count < 15) {
        sl_tc_write_byte(w, (uint8_t)(count << 4 | (size_t)elem_type));
    } else {
        sl_tc_write_byte(w, (uint8_t)(0xF0 | elem_type));
        sl_tc_write_varint(w, count);
    }
}

void sl_tc_write_bool_field(sl_tc_writer *w, int16_t id, bool v)
{
    sl_tc_write_field(w, v ? SL_TC_TRUE : SL_TC_FALSE, id);
}

void sl_tc_write_i32_field(sl_tc_writer *w, int16_t id, int32_t v)
{
    sl_tc_write_field(w, SL_TC_I32, id);
    sl_tc_write_i64(w, v);
}

void sl_tc_write_i64_field(sl_tc_writer *w, int16_t id, int64_t v)
{
    sl_tc_write_field(w, SL_TC_I64, id);
    sl_tc_write_i64(w, v);
}

void sl_tc_write_binary_field(sl_tc_writer *w, int16_t id, const void *data, size_t len)
{
    sl_tc_write_field(w, SL_TC_BINARY, id);
    sl_tc_write_binary(w, data, len);
}

void sl_tc_write_string_field(sl_tc_writer *w, int16_t id, const char *s)
{
    sl_tc_write_binary_field(w, id, s, strlen(s));
}

/* ---- reader ------------------------------------------------------------ */

void sl_tc_reader_init(sl_tc_reader *r, const void *data, size_t len)
{
    memset(r, 0, sizeof *r);
    r->start = r->p = data;
    r->end = r->p + len;
}

size_t sl_tc_reader_pos(const sl_tc_reader *r)
{
    return (size_t)(r->p - r->start);
}

static uint8_t get_byte(sl_tc_reader *r)
{
    if (r->err || r->p >= r->end) {
        r->err = true;
        return 0;
    }
    return *r->p++;
}

uint64_t sl_tc_read_varint(sl_tc_reader *r)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        uint8_t b = get_byte(r);
        if (r->err)
            return 0;
        if (shift == 63 && b > 1) /* more than 64 bits */
            break;
        v |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80))
            return v;
    }
    r->err = true;
    return 0;
}

int64_t sl_tc_read_i64(sl_tc_reader *r)
{
    uint64_t u = sl_tc_read_varint(r);
    return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
}

int32_t sl_tc_read_i32(sl_tc_reader *r)
{
    int64_t v = sl_tc_read_i64(r);
    if (v < INT32_MIN || v > INT32_MAX) {
        r->err = true;
        return 0;
    }
    return (int32_t)v;
}

double sl_tc_read_double(sl_tc_reader *r)
{
    if (r->err || r->end - r->p < 8) {
        r->err = true;
        return 0;
    }
    uint64_t bits = 0;
    for (int i = 0; i < 8; i++)
        bits |= (uint64_t)r->p[i] << (8 * i);
    r->p += 8;
    double d;
    memcpy(&d, &bits, 8);
    return d;
}

bool sl_tc_read_bool_elem(sl_tc_reader *r)
{
    return get_byte(r) == SL_TC_TRUE;
}

const uint8_t *sl_tc_read_binary(sl_tc_reader *r, size_t *len)
{
    uint64_t n = sl_tc_read_varint(r);
    *len = 0;
    if (r->err || n > (uint64_t)(r->end - r->p)) {
        r->err = true;
        return NULL;
    }
    const uint8_t *data = r->p;
    r->p += n;
    *len = (size_t)n;
    return data;
}

void sl_tc_read_struct_begin(sl_tc_reader *r)
{
    if (r->depth >= SL_TC_MAX_DEPTH) {
        r->err = true;
        return;
    }
    r->last_id[r->depth++] = 0;
}

void sl_tc_read_struct_end(sl_tc_reader *r)
{
    if (r->depth > 0)
        r->depth--;
    else
        r->err = true;
}

bool sl_tc_read_field(sl_tc_reader *r, int *type, int16_t *id)
{
    *type = SL_TC_STOP;
    *id = 0;
    if (r->depth == 0)
        r->err = true;
    uint8_t b = get_byte(r);
    if (r->err || b == SL_TC_STOP)
        return false;
    int16_t *last = &r->last_id[r->depth - 1];
    int delta = b >> 4;
    if (delta) {
        *id = (int16_t)(*last + delta);
    } else {
        int64_t v = sl_tc_read_i64(r);
        if (v < INT16_MIN || v > INT16_MAX)
            r->err = true;
        *id = (int16_t)v;
    }
    *type = b & 0x0F;
    if (*type > SL_TC_STRUCT)
        r->err = true;
    if (r->err)
        return false;
    *last = *id;
    return true;
}

size_t sl_tc_read_list_begin(sl_tc_reader *r, int *elem_type)
{
    uint8_t b = get_byte(r);
    uint64_t n = b >> 4;
    if (n == 15)
        n = sl_tc_read_varint(r);
    *elem_type = b & 0x0F;
    /* Every element takes at least one byte, so a count past the remaining
     * input is corrupt (and would make a caller allocate for nothing). */
    if (r->err || n > (uint64_t)(r->end - r->p) || *elem_type > SL_TC_STRUCT) {
        r->err = true;
        return 0;
    }
    return (size_t)n;
}

static void skip_value(sl_tc_reader *r, int type, int nesting)
{
    if (r->err)
        return;
    if (nesting > SL_TC_MAX_DEPTH) { /* lists in lists: bound the recursion */
        r->err = true;
        return;
    }
    switch (type) {
    case SL_TC_TRUE:
    case SL_TC_FALSE:
        return; /* a bool field's value is in its header */
    case SL_TC_BYTE:
        get_byte(r);
        return;
    case SL_TC_I16:
    case SL_TC_I32:
    case SL_TC_I64:
        sl_tc_read_varint(r);
        return;
    case SL_TC_DOUBLE:
        sl_tc_read_double(r);
        return;
    case SL_TC_BINARY: {
        size_t len;
        sl_tc_read_binary(r, &len);
        return;
    }
    case SL_TC_LIST:
    case SL_TC_SET: {
        int et;
        size_t n = sl_tc_read_list_begin(r, &et);
        if (et == SL_TC_TRUE || et == SL_TC_FALSE)
            et = SL_TC_BYTE; /* bool elements are one byte each */
        for (size_t i = 0; i < n && !r->err; i++)
            skip_value(r, et, nesting + 1);
        return;
    }
    case SL_TC_MAP: {
        uint64_t n = sl_tc_read_varint(r);
        if (n == 0)
            return;
        uint8_t kv = get_byte(r);
        int kt = kv >> 4, vt = kv & 0x0F;
        if (kt == SL_TC_TRUE || kt == SL_TC_FALSE)
            kt = SL_TC_BYTE;
        if (vt == SL_TC_TRUE || vt == SL_TC_FALSE)
            vt = SL_TC_BYTE;
        if (n > (uint64_t)(r->end - r->p))
            r->err = true;
        for (uint64_t i = 0; i < n && !r->err; i++) {
            skip_value(r, kt, nesting + 1);
            skip_value(r, vt, nesting + 1);
        }
        return;
    }
    case SL_TC_STRUCT: {
        sl_tc_read_struct_begin(r);
        int ft;
        int16_t id;
        while (sl_tc_read_field(r, &ft, &id))
            skip_value(r, ft, nesting + 1);
        sl_tc_read_struct_end(r);
        return;
    }
    default:
        r->err = true;
    }
}

void sl_tc_skip(sl_tc_reader *r, int type)
{
    skip_value(r, type, 0);
}
