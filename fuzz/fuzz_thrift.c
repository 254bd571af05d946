/* fuzz/fuzz_thrift.c — the Thrift compact-protocol reader on arbitrary bytes:
 * a walk that reads every field by its type (nested structs and lists
 * included), the generic skip, and the two Parquet structures decoded from
 * it (FileMetaData, as the reader's footer, and a page header). Besides not
 * crashing, what they promise: the reader never moves past its input, and
 * decoding a footer allocates at most a small multiple of its bytes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "core/alloc.h"
#include "io/parquet_read.h"
#include "io/thrift_compact.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void walk(sl_tc_reader *r, int type, int depth);

static void walk_struct(sl_tc_reader *r, int depth)
{
    int type;
    int16_t id;
    sl_tc_read_struct_begin(r);
    while (sl_tc_read_field(r, &type, &id))
        walk(r, type, depth + 1);
    sl_tc_read_struct_end(r);
}

static void walk(sl_tc_reader *r, int type, int depth)
{
    if (depth > 40) { /* past the reader's own depth limit: let it refuse */
        sl_tc_skip(r, type);
        return;
    }
    size_t len;
    switch (type) {
    case SL_TC_I16:
    case SL_TC_I32: (void)sl_tc_read_i32(r); break;
    case SL_TC_I64: (void)sl_tc_read_i64(r); break;
    case SL_TC_DOUBLE: (void)sl_tc_read_double(r); break;
    case SL_TC_BINARY: {
        const uint8_t *s = sl_tc_read_binary(r, &len);
        if (s && (s < r->start || s + len > r->end))
            abort();
        break;
    }
    case SL_TC_LIST: {
        int et;
        size_t n = sl_tc_read_list_begin(r, &et);
        for (size_t i = 0; i < n && !r->err; i++) {
            if (et == SL_TC_TRUE || et == SL_TC_FALSE)
                (void)sl_tc_read_bool_elem(r);
            else
                walk(r, et, depth + 1);
        }
        break;
    }
    case SL_TC_STRUCT: walk_struct(r, depth); break;
    default: sl_tc_skip(r, type);
    }
}

static void check_bounds(const sl_tc_reader *r, size_t size)
{
    if (r->p < r->start || r->p > r->end || sl_tc_reader_pos(r) > size)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_tc_reader r;
    sl_tc_reader_init(&r, data, size);
    walk_struct(&r, 0);
    check_bounds(&r, size);

    sl_tc_reader_init(&r, data, size);
    sl_tc_skip(&r, SL_TC_STRUCT);
    check_bounds(&r, size);

    int64_t base = sl_alloc_live_bytes();
    sl_alloc_peak_reset();
    (void)sl_pq_footer_check(data, size);
    int64_t peak = sl_alloc_peak_bytes() - base;
    /* Structures of a footer in memory: a small multiple of its bytes. The
     * 16x + 1 MiB of column names plus a few dozen bytes per schema element
     * and chunk stay well under this. */
    if (peak > 64 * (int64_t)size + (3 << 20)) {
        fprintf(stderr, "fuzz_thrift: a %zu-byte footer allocated %lld bytes at its peak\n", size, (long long)peak);
        abort();
    }
    if (sl_alloc_live_bytes() != base)
        abort(); /* it freed everything */
    (void)sl_pq_page_header_check(data, size);
    return 0;
}
