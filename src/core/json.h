/* core/json.h — jansson helpers shared by the sinks and tools. JSON strings
 * must be UTF-8; file names, generated text and Parquet columns are bytes. */
#ifndef SL_CORE_JSON_H
#define SL_CORE_JSON_H

#include <stddef.h>
#include <jansson.h>

/* A JSON string of s[0..n), invalid UTF-8 bytes replaced by U+FFFD; json
 * null when s is NULL; NULL when out of memory. The caller owns the value. */
json_t *sl_json_text(const char *s, size_t n);

#endif
