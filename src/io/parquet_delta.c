/* DELTA_BINARY_PACKED and BYTE_STREAM_SPLIT, as parquet-format's
 * Encodings.md gives them. Every length in the data is checked against the
 * bytes behind it; nothing is allocated. */
#include "io/parquet_delta.h"
#include "io/parquet_format.h"

#include <string.h>

static uint64_t unzigzag(uint64_t v)
{
    return (v >> 1) ^ (0 - (v & 1));
}

bool sl_delta_init(sl_delta_stream *s, const uint8_t *data, size_t len)
{
    memset(s, 0, sizeof *s);
    const uint8_t *p = data, *end = data + len;
    uint64_t block, minis, total, first;
    if (!sl_pq_read_uleb(&p, end, &block) || !sl_pq_read_uleb(&p, end, &minis) ||
        !sl_pq_read_uleb(&p, end, &total) || !sl_pq_read_uleb(&p, end, &first))
        return false;
    if (block == 0 || block % 128 || block > SL_DELTA_MAX_BLOCK || minis == 0 || minis > SL_DELTA_MAX_MINIBLOCKS ||
        block % minis || (block / minis) % 32)
        return false;
    s->end = end;
    s->p = s->mb = p;
    s->block_size = (uint32_t)block;
    s->miniblocks = (uint32_t)minis;
    s->per_mb = (uint32_t)(block / minis);
    s->mb_index = s->miniblocks; /* the first delta reads a block header */
    s->left = total;
    s->last = unzigzag(first);
    s->first_pending = total > 0;
    return true;
}

uint64_t sl_delta_left(const sl_delta_stream *s)
{
    return s->left;
}

/* A block's header: its min delta, then a bit width per miniblock. Widths
 * of miniblocks the values do not reach may be anything (the format says
 * so): they are checked when a miniblock is used. */
static bool next_block(sl_delta_stream *s)
{
    const uint8_t *q = s->mb;
    uint64_t min;
    if (!sl_pq_read_uleb(&q, s->end, &min) || (size_t)(s->end - q) < s->miniblocks)
        return false;
    memcpy(s->widths, q, s->miniblocks);
    s->min_delta = unzigzag(min);
    s->p = q;
    s->mb = q + s->miniblocks;
    s->mb_index = 0;
    s->mb_used = 0;
    return true;
}

/* Bytes of the current miniblock (all of its values, padding included). */
static size_t mb_bytes(const sl_delta_stream *s)
{
    return (size_t)s->per_mb * s->widths[s->mb_index] / 8;
}

/* Makes a miniblock with a value left current: the next one, or the first
 * of the next block. */
static bool next_value_place(sl_delta_stream *s)
{
    if (s->mb_index < s->miniblocks && s->mb_used < s->per_mb)
        return true;
    if (s->mb_index < s->miniblocks) {
        size_t n = mb_bytes(s);
        if (n > (size_t)(s->end - s->mb))
            return false;
        s->mb += n;
        s->mb_index++;
        s->mb_used = 0;
    }
    if (s->mb_index == s->miniblocks && !next_block(s))
        return false;
    return s->widths[s->mb_index] <= 64;
}

static uint64_t get_bits(const uint8_t *p, size_t bit, unsigned width)
{
    uint64_t v = 0;
    unsigned have = 0;
    while (have < width) {
        unsigned off = bit % 8, take = 8 - off;
        if (take > width - have)
            take = width - have;
        v |= (uint64_t)((p[bit / 8] >> off) & ((1u << take) - 1)) << have;
        have += take;
        bit += take;
    }
    return v;
}

bool sl_delta_read(sl_delta_stream *s, int64_t *out, size_t n)
{
    if (n > s->left)
        return false;
    size_t i = 0;
    if (n && s->first_pending) {
        out[i++] = (int64_t)s->last;
        s->first_pending = false;
        s->left--;
    }
    while (i < n) {
        if (!next_value_place(s))
            return false;
        unsigned w = s->widths[s->mb_index];
        size_t take = s->per_mb - s->mb_used;
        if (take > n - i)
            take = n - i;
        size_t need = ((size_t)(s->mb_used + take) * w + 7) / 8;
        if (need > (size_t)(s->end - s->mb))
            return false;
        for (size_t k = 0; k < take; k++) {
            uint64_t d = w ? get_bits(s->mb, (size_t)(s->mb_used + k) * w, w) : 0;
            s->last += s->min_delta + d; /* unsigned: wraps as the writer's deltas did */
            out[i + k] = (int64_t)s->last;
        }
        s->mb_used += (uint32_t)take;
        s->left -= take;
        i += take;
    }
    return true;
}

bool sl_delta_end(const sl_delta_stream *s, const uint8_t **end)
{
    sl_delta_stream t = *s;
    uint64_t deltas = t.left - (t.first_pending ? 1 : 0);
    while (deltas) {
        if (!next_value_place(&t))
            return false;
        uint64_t take = t.per_mb - t.mb_used;
        if (take > deltas)
            take = deltas;
        t.mb_used += (uint32_t)take;
        deltas -= take;
    }
    if (t.mb_index < t.miniblocks && t.mb_used > 0) { /* the last miniblock, padded whole */
        size_t n = mb_bytes(&t);
        if (n > (size_t)(t.end - t.mb))
            return false;
        t.mb += n;
    }
    *end = t.mb;
    return true;
}

void sl_byte_stream_split_read(const uint8_t *data, size_t count, size_t width, size_t first, size_t n,
                               uint8_t *out)
{
    for (size_t i = 0; i < n; i++)
        for (size_t k = 0; k < width; k++)
            out[i * width + k] = data[k * count + first + i];
}
