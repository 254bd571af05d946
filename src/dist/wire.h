/* dist/wire.h — the bytes of the messages between the ranks of one job and
 * its coordinator (dist/coord.h): little-endian integers and length-prefixed
 * strings appended to a growing buffer, read back with bounds checks (a
 * message that is short or malformed reads as an error, never past its
 * end). The buffer owns its bytes; a reader borrows the bytes it reads. */
#ifndef SL_DIST_WIRE_H
#define SL_DIST_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

typedef struct wire_buf {
    sl_buf buf;
    bool oom;          /* an append failed: the message is incomplete */
} wire_buf;

void wire_put_u8(wire_buf *b, uint8_t v);
void wire_put_i64(wire_buf *b, int64_t v);
/* Overwrites the integer written at byte `at` (a count known only after
 * what it counts was appended). */
void wire_set_i64(wire_buf *b, size_t at, int64_t v);
/* A string as its length and bytes (NULL as the empty string). */
void wire_put_str(wire_buf *b, const char *s);
void wire_put_bytes(wire_buf *b, const void *p, size_t n);
void wire_reset(wire_buf *b);
void wire_free(wire_buf *b);

typedef struct wire_reader {
    const uint8_t *at, *end;
    bool bad;          /* read past the end, or a string without its NUL */
} wire_reader;

wire_reader wire_read(const void *data, size_t len);
uint8_t wire_get_u8(wire_reader *r);
int64_t wire_get_i64(wire_reader *r);
/* A string written by wire_put_str, pointing into the message ("" when bad). */
const char *wire_get_str(wire_reader *r);
/* n bytes, pointing into the message (NULL when bad). */
const void *wire_get_bytes(wire_reader *r, size_t n);

#endif
