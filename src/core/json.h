/* core/json.h — jansson helpers shared by the sinks and tools. JSON strings
 * must be UTF-8; file names, generated text and Parquet columns are bytes. */
#ifndef SL_CORE_JSON_H
#define SL_CORE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

/* A JSON string of s[0..n), invalid UTF-8 bytes replaced by U+FFFD; json
 * null when s is NULL; NULL when out of memory. The caller owns the value. */
json_t *sl_json_text(const char *s, size_t n);

/* A data value's JSON number: NaN and the infinities, which JSON has no
 * form for (and jansson's json_real() refuses, returning NULL as if out of
 * memory), are null; NULL only when out of memory. */
json_t *sl_json_real(double d);
/* sl_json_real of a float32 value as the double nearest its shortest text
 * (what reads back as the same float): a FLOAT column's 0.1 is 0.1, not
 * the float's exact 0.10000000149011612. */
json_t *sl_json_real_float(float f);
/* Likewise for an IEEE half (a Parquet FLOAT16, an Arrow float16) held
 * exactly in f: the double nearest the half's shortest text, which reads
 * back as the same half (0.1, where the float's shortest is 0.099975586). */
json_t *sl_json_real_half(float f);

/* A decimal's exact text (sl_decimal_text's) as a value sl_json_dump
 * writes as that JSON number, its digits and scale kept (1.10, not the
 * double's 1.1; 38 digits, not 17): a jansson string of a marker that
 * begins with NUL (C text reads it as "") and holds a byte no UTF-8 text
 * does, so that no data string (all UTF-8) is taken for one, and the text.
 * Other code takes its number with sl_json_decimal_text. The caller owns
 * it; NULL when out of memory. */
json_t *sl_json_decimal(const char *text, size_t len);
/* The text of a value sl_json_decimal made (NUL-terminated, borrowed as
 * json_string_value's), and its length in *len (optional); NULL when v is
 * not one. */
const char *sl_json_decimal_text(const json_t *v, size_t *len);
/* v's number as a double: a real's, an integer's, or a decimal's nearest;
 * false (*out untouched) when v is none of these. */
bool sl_json_number(const json_t *v, double *out);

/* json_loadb() of a data row (a manifest line, a sidecar), lenient where
 * valid data would otherwise be lost: a number no jansson value holds (an
 * integer past int64, a 64-bit hash; a real past double, 1e400) is valid
 * JSON, and NaN, Infinity and -Infinity are what Python's json.dumps writes
 * for such floats; a row that fails for these is read again with each
 * integer so large a double (as an Arrow uint64 past 2^63 is) and each
 * huge real, NaN and infinity null. Strings are untouched. The caller
 * owns the value; NULL with *err as json_loadb's first try. */
json_t *sl_json_load_data(const char *text, size_t len, size_t flags, json_error_t *err);
/* sl_json_load_data, but an integer past int64 is a string of its digits
 * as written: a row id's exact text (a 64-bit hash), which the double
 * would round (2^64-1 and 2^64-2 one value). */
json_t *sl_json_load_digits(const char *text, size_t len, size_t flags, json_error_t *err);

/* Rewrites a jansson error that names jansson's own flags (a \u0000 in a
 * string "is not allowed without JSON_ALLOW_NUL"), or a byte that is not
 * UTF-8 ("unable to decode byte 0xe9"), in words a user can act on. The
 * load functions above do it already (their err may be NULL: nothing
 * then). */
void sl_json_explain(json_error_t *err);

/* " (re-encode the file as UTF-8)" when err is a byte that is not UTF-8,
 * else "": for a message about a file's JSON, which its user can fix so;
 * a server's answer or a stage's value is not theirs to re-encode. */
const char *sl_json_file_hint(const json_error_t *err);

/* What a JSON value is, for messages: "an array", "a string", "a number",
 * "true", "false", "null" (an object: "an object"). */
const char *sl_json_kind(const json_t *v);

/* json_dump_callback() as jansson 2.14 writes (JSON_INDENT, JSON_COMPACT,
 * JSON_ENSURE_ASCII, JSON_SORT_KEYS, JSON_ENCODE_ANY, JSON_ESCAPE_SLASH,
 * JSON_REAL_PRECISION; objects in their keys' order; no JSON_EMBED), but a
 * real without JSON_REAL_PRECISION is the shortest text that reads back as
 * it: jansson writes 17 digits, so a Parquet double 19.99 passed through
 * came out 19.989999999999998. 0; -2 when memory ran out (an object's
 * keys are listed first), else -1 when out returns non-zero or v cannot be
 * encoded. */
int sl_json_dump_callback(const json_t *v, size_t flags, json_dump_callback_t out, void *arg);

/* v as JSON text (sl_json_dump_callback with `flags`) in sluice's
 * allocator: the caller frees it with sl_free(). *len (optional) is its
 * length. NULL when out of memory or when v cannot be encoded. */
char *sl_json_dump(const json_t *v, size_t flags, size_t *len);

/* The column of `row` (an object) named by name[0..n): its key of that
 * name, else the dotted path through nested objects ("source.site" is key
 * "site" of object "source"; a path with an empty part names nothing).
 * NULL when there is none (or out of memory). The value is row's:
 * borrowed, as json_object_get's. */
json_t *sl_json_column(const json_t *row, const char *name, size_t n);

#endif
