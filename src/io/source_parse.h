/* io/source_parse.h — the pure text rules behind the input sources, kept
 * apart so they are tested (and fuzzed) without files: CSV records (RFC 4180
 * quoting) and header names, brace lists in shard names, the names of inputs
 * in row ids (paths from the inputs' common folder), WebDataset
 * key/extension splitting, the URL scheme of a manifest value, the path
 * of a file:// URL, and include/exclude glob filtering. No I/O, no global
 * state; every returned array and string is the caller's, freed with
 * sl_free() or the matching *_free() below. */
#ifndef SL_IO_SOURCE_PARSE_H
#define SL_IO_SOURCE_PARSE_H

#include <stdbool.h>
#include <stddef.h>

/* Splits one CSV record s[0..len) (no trailing newline; quoted fields may
 * hold newlines, commas and "" for a quote) into *fields / *n (each field a
 * NUL-terminated copy). Returns 0 on success; 1 when a quoted field is still
 * open at the end (the record continues on the next line: append the line
 * end, CRLF or LF as it was, and the next line, then call again); -1 on
 * malformed input (a quote inside an unquoted field, text after a closing
 * quote) or more than max_fields fields, with the cause in err. */
int sl_csv_split(const char *s, size_t len, size_t max_fields, char ***fields, size_t *n,
                 char *err, size_t errlen);
void sl_csv_fields_free(char **fields, size_t n);

/* Makes a CSV header's names[0..n) distinct as DuckDB does, so no column's
 * values are lost under another's name: a name already taken by an earlier
 * column becomes NAME_1 (NAME_2 when its NAME_1 was made already, and so
 * on), and is itself made distinct again when that too was taken
 * ("a,a_1,a" is a, a_1, a_1_1). Names are compared byte for byte; a renamed
 * one is freed and replaced. Returns 0, or -1 out of memory (the names
 * then still each the caller's, some perhaps renamed). */
int sl_csv_unique_names(char **names, size_t n);

/* Where a CSV record stands after some of its bytes, so a reader can find
 * where a record ends without keeping it (a record too long to keep is
 * skipped to its end). Start each record at SL_CSV_FIELD_START, feed its
 * lines through sl_csv_scan() with the line ends between them; the
 * record goes on past a line end only in SL_CSV_QUOTED, as sl_csv_split's 1.
 * SL_CSV_BAD (a stray quote) lasts to the record's end. */
enum { SL_CSV_FIELD_START, SL_CSV_UNQUOTED, SL_CSV_QUOTED, SL_CSV_QUOTE_IN_QUOTED, SL_CSV_BAD };
int sl_csv_scan(int state, const char *s, size_t len);

/* Expands brace lists: "data-{000..127}.tar" (numeric ranges; zero-padded to
 * the wider endpoint when either has a leading zero; descending allowed),
 * "{a,b}" (alternatives), several groups (cartesian product, left to right).
 * Text without braces expands to itself. Returns 0, or -1 with the cause in
 * err for an unbalanced brace, a pattern longer than SL_BRACE_MAX_PATTERN,
 * more than `max` results, or results longer than SL_BRACE_MAX_BYTES in all
 * (the memory a pattern may cost is bounded). */
#define SL_BRACE_MAX_PATTERN 4096
#define SL_BRACE_MAX_BYTES (16 << 20)
int sl_brace_expand(const char *pattern, size_t max, char ***out, size_t *n, char *err,
                    size_t errlen);
void sl_strings_free(char **strings, size_t n);

/* `path` as an absolute path, lexically: relative to `cwd` when it does not
 * start with '/', with empty and "." components dropped and ".." taking the
 * component before it away (symlinks are not resolved: this names inputs,
 * it does not find them). "/" for the root; NULL when out of memory. */
char *sl_path_lexical(const char *cwd, const char *path);

/* The names of inputs in row ids: each of paths[0..n) (absolute, lexical, as
 * sl_path_lexical() makes them) relative to the common folder of them all.
 * Files (`folders` false): the common folder of their folders, so one file,
 * or files side by side, are named by their base names. Folders: their
 * common folder, so one folder (or a folder that holds the others) is named
 * "". Each (*names)[i] points into paths[i]; free the array with sl_free(). */
int sl_input_names(const char *const *paths, size_t n, bool folders, const char ***names);

/* WebDataset naming: the key is the member path up to the first dot of its
 * basename ("a/b/000123.seg.jpg" -> "a/b/000123"), the extension the rest
 * ("seg.jpg"). False for names with no key (basename starts with a dot or
 * has no dot). */
bool sl_wds_split(const char *name, size_t *key_len, const char **ext);

/* The length of name's compression suffix (.gz, .zst, .zstd, .bz2, .xz, any
 * case; what manifests and tar shards may have), or 0. */
size_t sl_compression_suffix_len(const char *name);
/* Whether name, without a compression suffix, ends in suffix (any case). */
bool sl_base_ends_with(const char *name, const char *suffix);
/* Whether name is a tar shard: .tar, with a compression suffix or not, or .tgz. */
bool sl_tar_name(const char *name);

/* The scheme of a URL value in lower case ("http", "file"), or "" for a plain
 * path; a Windows-like "C:\x" counts as a path. scheme has room for 16. */
void sl_url_scheme(const char *value, char scheme[16]);

/* A file:// URL's path (url begins "file://", any case; file://localhost/
 * is file:///), its %XX escapes decoded (RFC 8089, RFC 3986: what Python's
 * Path.as_uri() and browsers write for a space or a non-ASCII name). Any
 * other character stays as it is, '+' too (a query's space, not a path's).
 * Manifests and batch files share it, so both read a URL alike. 0: *path
 * set (sl_free); 1: not file:///absolute, a malformed escape or %00 (a name
 * cannot hold a NUL): *why says which, naming the URL (sl_free); -1: out
 * of memory. */
int sl_file_url_path(const char *url, char **path, char **why);

/* The Hive-style partition folders of `rel`, a file's path below the
 * dataset folder it was found in ("lang=en/year=2024/part-0.parquet"), as
 * Spark, Hive and pyarrow's write_to_dataset make them: each folder named
 * KEY=VALUE (split at its first '=', KEY not empty) gives (*keys)[i] and
 * (*values)[i], both %XX-decoded as Hive escapes them (a malformed escape
 * or %00 stays as written), in the order of the path; a key twice keeps the
 * deeper folder's value. Spark's __HIVE_DEFAULT_PARTITION__ (a null) is a
 * NULL value. The file's own name is not a folder. Returns 0 (*n 0 and the
 * arrays NULL when none; free with sl_hive_partitions_free) or -1 out of
 * memory. */
int sl_hive_partitions(const char *rel, char ***keys, char ***values, size_t *n);
void sl_hive_partitions_free(char **keys, char **values, size_t n);

/* True when rel passes the filters: it matches some include glob (or there
 * are none) and no exclude glob. fnmatch(3) without FNM_PATHNAME, so '*'
 * crosses '/', as in "**" elsewhere. */
bool sl_glob_filter(const char *rel, const char *const *include, size_t n_include,
                    const char *const *exclude, size_t n_exclude);

#endif
