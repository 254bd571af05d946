/* io/source_parse.h — the pure text rules behind the input sources, kept
 * apart so they are tested without files: CSV records (RFC 4180 quoting),
 * brace lists in shard names, WebDataset key/extension splitting, the URL
 * scheme of a manifest value, and include/exclude glob filtering. No I/O, no
 * global state; every returned array and string is the caller's, freed with
 * the matching *_free() below. */
#ifndef SL_IO_SOURCE_PARSE_H
#define SL_IO_SOURCE_PARSE_H

#include <stdbool.h>
#include <stddef.h>

/* Splits one CSV record s[0..len) (no trailing newline; quoted fields may
 * hold newlines, commas and "" for a quote) into *fields / *n (each field a
 * NUL-terminated copy). Returns 0 on success; 1 when a quoted field is still
 * open at the end (the record continues on the next line: append "\n" and
 * the next line, then call again); -1 on malformed input (a quote inside an
 * unquoted field, text after a closing quote) with the cause in err. */
int sl_csv_split(const char *s, size_t len, char ***fields, size_t *n, char *err, size_t errlen);
void sl_csv_fields_free(char **fields, size_t n);

/* Expands brace lists: "data-{000..127}.tar" (numeric ranges; zero-padded to
 * the wider endpoint when either has a leading zero; descending allowed),
 * "{a,b}" (alternatives), several groups (cartesian product, left to right).
 * Text without braces expands to itself. Returns 0, or -1 with the cause in
 * err for an unbalanced brace or more than `max` results. */
int sl_brace_expand(const char *pattern, size_t max, char ***out, size_t *n, char *err,
                    size_t errlen);
void sl_strings_free(char **strings, size_t n);

/* WebDataset naming: the key is the member path up to the first dot of its
 * basename ("a/b/000123.seg.jpg" -> "a/b/000123"), the extension the rest
 * ("seg.jpg"). False for names with no key (basename starts with a dot or
 * has no dot). */
bool sl_wds_split(const char *name, size_t *key_len, const char **ext);

/* The scheme of a URL value in lower case ("http", "file"), or "" for a plain
 * path; a Windows-like "C:\x" counts as a path. scheme has room for 16. */
void sl_url_scheme(const char *value, char scheme[16]);

/* True when rel passes the filters: it matches some include glob (or there
 * are none) and no exclude glob. fnmatch(3) without FNM_PATHNAME, so '*'
 * crosses '/', as in "**" elsewhere. */
bool sl_glob_filter(const char *rel, const char *const *include, size_t n_include,
                    const char *const *exclude, size_t n_exclude);

#endif
