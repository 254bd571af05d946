/* core/utf8.h — making byte strings safe for JSON: generated tokens and
 * file names are bytes, and may not be valid UTF-8. */
#ifndef SL_CORE_UTF8_H
#define SL_CORE_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* True when s[0..len) is valid UTF-8 (no overlongs, surrogates or > U+10FFFF). */
bool sl_utf8_valid(const char *s, size_t len);

/* The length of the longest valid UTF-8 prefix of s[0..len) (a token's
 * piece may end inside a character the next token completes). */
size_t sl_utf8_valid_prefix(const char *s, size_t len);

/* A NUL-terminated copy of s[0..len) with each invalid byte replaced by
 * U+FFFD. Free with sl_free(); NULL when out of memory. */
char *sl_utf8_sanitize(const char *s, size_t len);

/* A NUL-terminated copy of s[0..len) that is valid UTF-8 and tells apart
 * any two inputs: each invalid byte, and each byte of a U+FFFD already
 * there, is written as U+FFFD and the byte in two upper-case hex digits
 * ("caf\xE9" becomes "caf\uFFFDE9"); valid text without U+FFFD stays as
 * it is. For names that are ids (file names are bytes). Free with
 * sl_free(); NULL when out of memory. */
char *sl_utf8_escape(const char *s, size_t len);

/* Whether sl_utf8_escape() would change s[0..len). */
bool sl_utf8_needs_escape(const char *s, size_t len);

#endif
