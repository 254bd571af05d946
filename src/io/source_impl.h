/* io/source_impl.h — what the source kinds share (internal to source*.c):
 * each kind reads one input file (or folder) at a time through a reader. */
#ifndef SL_IO_SOURCE_IMPL_H
#define SL_IO_SOURCE_IMPL_H

#include "core/error.h"
#include "io/ranged.h"
#include "io/source.h"

typedef struct source_reader source_reader;

typedef struct source_kind {
    const char *name;
    /* Opens one input; `name` is its name in ids (sl_source_open), valid
     * while the reader is. Failing to open is an error item (*open_error
     * set, owned by the caller), never a failed run, except out of memory.
     * *cut_short (false on entry) as an item's: set when the open failed
     * reading the file's bytes or listing (the store or the disk refused),
     * not on what they hold nor for a file that is not there: another run
     * may read it whole and count its items where this one counts one. */
    sl_status (*open)(const char *file, const char *name, const sl_source_params *p,
                      source_reader **out, char **open_error, bool *cut_short);
    sl_status (*next)(source_reader *r, sl_source_item *item, bool *done);
    void (*close)(source_reader *r);
    /* Optional: a cheap count for one input; -1 unknown. */
    int64_t (*count)(const char *file, const sl_source_params *p, const atomic_bool *stop);
    /* Optional: the shapes (io/parquet_shape.h's JSON) of the pass-through
     * columns an open reader's file declares, set in `into` (an object of
     * this file's) under their names in item->extra (a name twice: the
     * last, as in item->extra); a column whose shape is unknown is left
     * out. SL_ERR_NOMEM only. */
    sl_status (*types)(const source_reader *r, json_t *into);
    /* Whether its rows have columns --id-column can name (a manifest's,
     * a Parquet or Arrow file's); false where ids are paths, tar keys or
     * custom_id, and --id-column is refused. Last and without a default:
     * -Wmissing-field-initializers (-Wextra) makes each kind say. */
    bool columns;
} source_kind;

extern const source_kind sl_source_webdataset;
extern const source_kind sl_source_parquet;
extern const source_kind sl_source_arrow;

/* The image columns looked for, in this order, when --image-column is not
 * given: "images" is a list's usual name (Hugging Face's Sequence(Image())),
 * "file_name" the Hugging Face ImageFolder's metadata.jsonl/.csv column,
 * "URL" LAION's. */
extern const char *const sl_source_auto_image_columns[];
extern const size_t sl_source_n_auto_image_columns;

/* Sets item->path from a manifest/Parquet value: a path relative to
 * base_dir, an http(s) URL, or (allowed) a file:// URL; item->data from a
 * data: URL, item->name then `where` (the file, row or line and column:
 * the bytes are the input's, named where they are, as a tar member's), or
 * NULL; else item->error. */
sl_status sl_source_locate(const char *value, const char *base_dir, const sl_source_params *p,
                           const char *where, sl_source_item *item);

/* A Parquet or Arrow string cell s[0..n) (a path or URL) as a C string for
 * sl_source_locate, in *out (the caller frees it). A NUL byte in it would
 * end the path there ('a.jpg<NUL>x' read a.jpg): then *out is NULL and
 * item fails naming `where` (the file, row and column). SL_ERR_NOMEM
 * only. */
sl_status sl_source_cell_text(const char *s, size_t n, const char *where, sl_source_item *item,
                              char **out);

/* Sets item->prompt from a row's prompt column value: a non-empty string,
 * or a conversation (LLaVA's and ShareGPT's [{"from": "human", "value":
 * ...}, {"from": "gpt", ...}], or chat messages [{"role": "user",
 * "content": TEXT or [{"type": "text", "text": ...}, ...]}]): its first
 * human/user turn's text, as it is (LLaVA's <image> marker stays: see
 * --image-placeholder). Anything else leaves item->prompt NULL (the job's
 * prompt). SL_ERR_NOMEM only. */
sl_status sl_source_prompt_of(const json_t *value, sl_source_item *item);

/* sl_source_locate for the path of an image struct whose bytes are null
 * (null_bytes) or empty: a dataset saved without embedding its images
 * keeps only the paths they had where it was made. A local path that is
 * not there fails item naming `where` (the row and column) and saying so,
 * rather than as a bare "cannot open" at decode. A data: URL's bytes are
 * named `name` (sl_source_locate's where): a list's image is named by the
 * list's place, the decode adds which image it is. */
sl_status sl_source_locate_unembedded(const char *value, const char *base_dir,
                                      const sl_source_params *p, const char *where,
                                      const char *name, bool null_bytes, sl_source_item *item);

/* The column a row's id comes from: p->id_column, or fallback when it is
 * not set ("id" for a manifest, NULL for a Parquet or Arrow file); NULL
 * for "none" (or no fallback): the row's place is its id. */
const char *sl_source_id_column(const sl_source_params *p, const char *fallback);

/* The message that fails a Parquet or Arrow file for its id column: absent,
 * or not a top-level string or integer column (sl_free it; NULL when out
 * of memory). */
char *sl_source_id_column_error(const char *file, const char *column, bool absent);

/* An unsigned 64-bit id column's value past INT64_MAX, which a JSON
 * integer (json_int_t) cannot hold and a double would round (2^64-1 and
 * 2^64-2 one value): its exact decimal text, a string sl_source_row_id
 * takes as the id. NULL when out of memory. */
json_t *sl_source_uint64_id(uint64_t u);

/* Sets item->id from the id column's value in a row (NULL: none): a
 * non-empty string, an integer or a decimal (its exact text,
 * sl_json_decimal), item->alt_id then NAME:AT (the row's
 * place); else NAME:AT. *take: the value is to be taken out of the row's
 * columns (a string or an integer: the output's `id` holds it); a null or
 * another type passes through. SL_ERR_NOMEM only. */
sl_status sl_source_row_id(const json_t *value, const char *name, int64_t at,
                           sl_source_item *item, bool *take);

/* The prompt column's value in a row's columns (p->prompt_column, or
 * "prompt"; a dotted name may reach into a struct: core/json.h's
 * sl_json_column); NULL when absent. */
const json_t *sl_source_prompt_value(const json_t *extra, const sl_source_params *p);

/* Sets item->images from a list of n values (each located as
 * sl_source_locate does, relative to base_dir); an empty or too long list,
 * or a value that cannot be located, is item->error naming the list's place
 * (`where`, e.g. FILE:LINE) and the image's index. */
sl_status sl_source_locate_list(const char *const *values, size_t n, const char *base_dir,
                                const sl_source_params *p, const char *where,
                                sl_source_item *item);

/* How an input file read over http(s) is read (fetch_timeout_ms,
 * fetch_retries): for the kinds that read through io/ranged.h. */
sl_ranged_params sl_source_ranged_params(const sl_source_params *p);

/* The expanded input files of an open source, in reading order, and each
 * one's name in ids (for tests and fuzz targets). */
size_t sl_source_num_files(const sl_source *src);
const char *sl_source_file(const sl_source *src, size_t i, const char **name);

/* Whether column is name or a field inside it ("meta.topic" of "meta"). */
bool sl_source_column_under(const char *column, const char *name);
/* The k-th column (a dotted path) whose value goes into a prompt: the
 * prompt column (k 0), then the template fields; NULL past the last. */
const char *sl_source_prompt_use(const sl_source_params *p, size_t k);
/* Whether the text of column (a dotted name: a column, a struct's field,
 * a list's leaf) goes into a prompt: it is the prompt column or a template
 * field, or inside one ({meta}'s "meta.topic"), or one reaches into it
 * ({meta.topic}'s "meta", as it does when meta is a string). */
bool sl_source_column_in_prompt(const sl_source_params *p, const char *column);

/* Whether s[0..len), the text of `column` (a value's name: "topic",
 * "meta.topic", "tags[1]") that goes into a prompt, is not UTF-8: it would
 * reach the model as U+FFFD. Why then, into why: "column 'topic' holds
 * byte 0xE9 at byte 3, which is not UTF-8: ...". */
bool sl_source_prompt_text_bad(const char *column, const char *s, size_t len, char *why, size_t size);

/* item->error = formatted message, caused by the row's own data
 * (item->error_status SL_ERR_INVALID_ARG); always returns SL_OK unless out
 * of memory. A failure to read the file or store, or past a size limit,
 * names its cause with sl_source_item_fail_status. */
sl_status sl_source_item_fail(sl_source_item *item, const char *fmt, ...)
    SL_PRINTF(2, 3);
sl_status sl_source_item_fail_status(sl_source_item *item, sl_status cause, const char *fmt, ...)
    SL_PRINTF(3, 4);

#endif
