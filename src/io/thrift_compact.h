/* io/thrift_compact.h — the Thrift compact protocol, only what Parquet's footer
 * and page headers need: a writer appending to a growable buffer, and a reader
 * over a byte range that can skip fields it does not know. No sets or maps are
 * written; the reader skips them. Errors are sticky: after the first, every
 * call does nothing and `err` stays true, so callers check it once at the end.
 * One thread per object. The writer's buffer is sl_malloc'd and freed by
 * sl_tc_writer_free(); the reader only borrows its input. */
#ifndef SL_IO_THRIFT_COMPACT_H
#define SL_IO_THRIFT_COMPACT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Compact-protocol type codes (field headers and list element types). */
enum {
    SL_TC_STOP = 0, SL_TC_TRUE = 1, SL_TC_FALSE = 2, SL_TC_BYTE = 3, SL_TC_I16 = 4,
    SL_TC_I32 = 5, SL_TC_I64 = 6, SL_TC_DOUBLE = 7, SL_TC_BINARY = 8, SL_TC_LIST = 9,
    SL_TC_SET = 10, SL_TC_MAP = 11, SL_TC_STRUCT = 12,
};
#define SL_TC_MAX_DEPTH 32

typedef struct sl_tc_writer {
    uint8_t *buf;
    size_t len, cap;
    int16_t last_id[SL_TC_MAX_DEPTH];
    int depth;
    bool err;
} sl_tc_writer;

void sl_tc_writer_init(sl_tc_writer *w);
void sl_tc_writer_free(sl_tc_writer *w);
/* Structs: begin, fields, end (writes the stop byte). A nested struct field is
 * sl_tc_write_field(w, SL_TC_STRUCT, id) then begin ... end. */
void sl_tc_write_struct_begin(sl_tc_writer *w);
void sl_tc_write_struct_end(sl_tc_writer *w);
void sl_tc_write_field(sl_tc_writer *w, int type, int16_t id);
void sl_tc_write_list_begin(sl_tc_writer *w, int elem_type, size_t count);
/* Raw values (list elements, or after sl_tc_write_field). */
void sl_tc_write_byte(sl_tc_writer *w, uint8_t v);
void sl_tc_write_varint(sl_tc_writer *w, uint64_t v);
/* ULEB128 (the varint of Thrift compact and of Parquet's RLE headers) into
 * out; returns the bytes used (at most 10). */
size_t sl_tc_encode_varint(uint64_t v, uint8_t out[10]);
void sl_tc_write_i64(sl_tc_writer *w, int64_t v); /* zigzag varint; also i16/i32 */
void sl_tc_write_double(sl_tc_writer *w, double v);
void sl_tc_write_binary(sl_tc_writer *w, const void *data, size_t len);
/* Whole fields. */
void sl_tc_write_bool_field(sl_tc_writer *w, int16_t id, bool v);
void sl_tc_write_i32_field(sl_tc_writer *w, int16_t id, int32_t v);
void sl_tc_write_i64_field(sl_tc_writer *w, int16_t id, int64_t v);
void sl_tc_write_binary_field(sl_tc_writer *w, int16_t id, const void *data, size_t len);
void sl_tc_write_string_field(sl_tc_writer *w, int16_t id, const char *s);

typedef struct sl_tc_reader {
    const uint8_t *start, *p, *end;
    int16_t last_id[SL_TC_MAX_DEPTH];
    int depth;
    bool err;
} sl_tc_reader;

void sl_tc_reader_init(sl_tc_reader *r, const void *data, size_t len);
void sl_tc_read_struct_begin(sl_tc_reader *r);
void sl_tc_read_struct_end(sl_tc_reader *r);
/* Next field header of the current struct: false at its stop byte (or on an
 * error). Boolean fields carry their value in *type (SL_TC_TRUE/FALSE). */
bool sl_tc_read_field(sl_tc_reader *r, int *type, int16_t *id);
/* Returns the element count (0 on error); checks it fits in the input. */
size_t sl_tc_read_list_begin(sl_tc_reader *r, int *elem_type);
uint64_t sl_tc_read_varint(sl_tc_reader *r);
int64_t sl_tc_read_i64(sl_tc_reader *r);
int32_t sl_tc_read_i32(sl_tc_reader *r); /* error when out of i32 range */
double sl_tc_read_double(sl_tc_reader *r);
bool sl_tc_read_bool_elem(sl_tc_reader *r); /* a bool list element */
/* Borrowed pointer into the input; *len set. NULL (and len 0) on error. */
const uint8_t *sl_tc_read_binary(sl_tc_reader *r, size_t *len);
/* Skips one value of `type` (a field's value, or a list element). */
void sl_tc_skip(sl_tc_reader *r, int type);
/* Bytes consumed so far. */
size_t sl_tc_reader_pos(const sl_tc_reader *r);

#endif
