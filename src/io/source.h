/* io/source.h — the caption job's inputs as a stream of items, whatever holds
 * them: a folder (sorted recursive walk, include/exclude globs), a manifest
 * (.jsonl / .csv rows naming a file or URL), WebDataset tar shards (libarchive;
 * samples grouped by key), or Parquet files (an image struct or a path/URL
 * column). docs/inputs.md has the rules (ids, pass-through, URL policy). A bad
 * input (broken line, bad tar header, truncated Parquet, a manifest line past
 * its limit) becomes an item with `error` set and the stream goes on. Ids are
 * unique across the inputs unless their data repeats one (a manifest's id
 * column, a tar key that comes back): sl_source_open() refuses inputs that
 * name one file twice. One thread per source; a source reopened from it
 * (sl_source_reopen, sl_source_counter_new) is another source, for another
 * thread, sharing nothing with it.
 * The caller owns each item it receives and clears it with
 * sl_source_item_clear(). */
#ifndef SL_IO_SOURCE_H
#define SL_IO_SOURCE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "sluice/status.h"

typedef struct sl_source sl_source;

typedef struct sl_source_params {
    const char *format;          /* NULL or "auto": from the inputs; or folder, file, jsonl, csv,
                                    webdataset, parquet, openai-batch (never guessed) */
    const char *const *include;  /* folder: fnmatch globs on the relative path */
    size_t n_include;
    const char *const *exclude;
    size_t n_exclude;
    const char *image_column;    /* NULL: sl_source_auto_image_columns (Parquet:
                                    also image.bytes, lists); "A,B": several
                                    columns, a row's images in that order
                                    (sl_split_image_columns) */
    const char *prompt_column;   /* NULL: "prompt" when present */
    /* Other columns whose text goes into a prompt (the fields of a prompt
     * template: {topic}): a value there, or in the prompt column, whose
     * bytes are not UTF-8 fails its row (CSV, Parquet, Arrow) rather than
     * reach the model as U+FFFD. */
    const char *const *text_columns;
    size_t n_text_columns;
    const char *id_column;       /* the row id's column (manifests, Parquet, Arrow); NULL:
                                    "id" in a manifest, none in Parquet/Arrow (FILE:ROW);
                                    "none": none anywhere (FILE:LINE) */
    const char *image_root;      /* NULL: a relative image path is under its manifest's (or
                                    Parquet file's) folder; else under this folder or s3:// prefix */
    bool allow_file_urls;        /* file:// values in data read local files */
    size_t max_item_bytes;       /* tar members and Parquet cells larger than this fail */
    /* Input shards: deterministic units of work. With several input files
     * and at least shard_count of them, shard k is file k (sorted, as
     * expanded); otherwise shard k is items [k*shard_size, (k+1)*shard_size)
     * of the stream. Only shards with k % shard_count == shard_index are
     * read: N runs with 0/N .. N-1/N cover every item exactly once. */
    unsigned shard_index;
    unsigned shard_count;        /* 0 or 1: all shards */
    unsigned shard_size;         /* items per shard when not by file (default 1000) */
    /* Shards handed out as the run goes (MPI, dist/dist.h): when take_shard
     * is set, shard_index and shard_count are unused; shards are laid out as
     * for shard_count = shard_peers runs, and as the stream comes to shard k
     * (k increasing, each once) the source asks take_shard(user, k, false,
     * &take) whether to read it: SL_SHARD_SKIP, SL_SHARD_TAKE, or
     * SL_SHARD_NONE (no later shard is this run's: the stream ends there).
     * At the stream's end it calls take_shard(user, n, true, &take), n the
     * number of shards the input holds. An error it returns ends the read
     * with that error. Called on the reading thread. */
    sl_status (*take_shard)(void *user, uint64_t shard, bool end, int *take);
    void *take_shard_user;
    unsigned shard_peers;
    size_t max_line_bytes;       /* a longer JSONL line or CSV record is a failed row (1 MiB) */
    size_t max_columns;          /* a manifest row with more columns is a failed row (10000) */
    /* An input file read over http(s) (a dataset on the hub, io/hf.h): its
     * requests' time per try and tries after the first (30000 ms and 2, as
     * io/fetch.h; --download-timeout, --download-retries). */
    long fetch_timeout_ms;
    int fetch_retries;
    /* Folders listed in the system's order (an s3:// folder in the
     * store's, not a walk's), their names never held (the progress
     * count's: it needs their number, not their order). */
    bool unsorted_folders;
    /* No warnings about a file's contents (a column left out): a second
     * look (sl_source_reopen), whose source the run reads warns. */
    bool quiet;
} sl_source_params;

enum { SL_SHARD_SKIP, SL_SHARD_TAKE, SL_SHARD_NONE };

/* A row's images when its image column holds a list (a JSONL array, a
 * Parquet list): at most this many, as an engine request takes
 * (SL_MAX_IMAGES); a longer or empty list is a failed item. */
#define SL_SOURCE_MAX_IMAGES 16

/* One image of such a list: a file path or URL, or the bytes. */
typedef struct sl_source_image {
    char *path;      /* NULL when data is set */
    uint8_t *data;
    size_t len;
    char *name;      /* with data: what messages call the bytes (see sl_source_item), or NULL */
} sl_source_image;

sl_source_params sl_source_default_params(void);

/* Splits an image_column of several comma-separated names into names
 * (copies, sl_free each; *n of them). SL_ERR_INVALID_ARG naming spec: an
 * empty name, one named twice, or more than SL_SOURCE_MAX_IMAGES. */
sl_status sl_split_image_columns(const char *spec, char *names[SL_SOURCE_MAX_IMAGES], size_t *n);

typedef struct sl_source_item {
    char *id;        /* the row id (and seed key) */
    char *path;      /* file path or http(s) URL to read; NULL when data is set */
    uint8_t *data;   /* the encoded image, when the source holds it */
    size_t len;
    char *name;      /* with data: where the bytes were, for messages ("FILE: member
                        'KEY.jpg'", "FILE row N, column 'image'"), or NULL: the id */
    /* A list of images (1..SL_SOURCE_MAX_IMAGES, in order) in place of
     * path/data, which are then NULL: one row, its images sent together. */
    sl_source_image *images;
    size_t n_images;
    json_t *extra;   /* pass-through columns (an object), or NULL */
    char *prompt;    /* per-row prompt, or NULL */
    char *error;     /* set: this item failed at read, with why */
    sl_status error_status; /* with error, its cause (its sl_status_class() labels the
                               failure): SL_ERR_INVALID_ARG the row's own data (a null or
                               empty image, a refused URL, a malformed value),
                               SL_ERR_TOO_LARGE past a size limit, SL_ERR_NOT_FOUND a file
                               it names that is not there, SL_ERR_IO a file or store that
                               could not be read; SL_OK (not set) reads as SL_ERR_IO */
    size_t input;    /* where it was read: the input file's number (sl_source_origin) */
    int64_t at;      /* and the place in it: a manifest line, the byte offset of a tar
                        sample, a Parquet row; -1 for none */
    int64_t shard;   /* the input shard it is in; -1 when the input is not sharded */
    struct sl_batch_req *batch; /* openai-batch: the line's request (io/batch_line.h), set
                                   on every item of that kind, failed ones too */
    bool cut_short;  /* with error: the input's reading stopped here (a listing or a
                        read of its bytes that failed midway), its later items unread */
    char *alt_id;    /* another id an earlier run may have recorded the row under, or
                        NULL; the read stage counts the row done under either. A
                        manifest or batch line whose id came from its data (an id
                        column, a custom_id): "NAME:LINE", the id the line has when it
                        fails before its id is read (past max_line_bytes, not JSON); a
                        Parquet or Arrow row's from id_column: "NAME:ROW" */
} sl_source_item;

/* Opens inputs[0..n): each is brace-expanded, then globbed when it holds
 * glob characters; every name must be of one kind. Each input file is named
 * in ids by its path from the common folder of all the inputs (one file, or
 * files side by side: its base name); several input folders likewise (one
 * folder: ids are paths inside it). SL_ERR_NOT_FOUND when nothing matches,
 * SL_ERR_INVALID_ARG for mixed kinds, a bad pattern, or one file reached
 * twice (two spellings or links, a glob and a name, a folder inside another
 * input folder), the message naming both inputs. */
sl_status sl_source_open(const char *const *inputs, size_t n, const sl_source_params *params,
                         sl_source **out);

/* The next item into *item (cleared first); *done at the end. Only running
 * out of memory fails. */
sl_status sl_source_next(sl_source *src, sl_source_item *item, bool *done);

/* What the input files opened so far declare of their pass-through columns
 * (Parquet and Arrow files: their schemas): an object of column name (as in
 * item->extra) -> shape (io/parquet_shape.h's JSON: "int64", {"list":
 * "string"}, ...), or null where two files differ (the values say) and
 * no shape holds both (sl_pq_shape_merge: decimals of other scales); a
 * column of a type that passes as null has none. NULL when none was opened
 * or the kind declares nothing. Owned by src, until it is freed. */
const json_t *sl_source_column_types(const sl_source *src);

/* True when shards are whole input files (see sl_source_params). */
bool sl_source_shards_by_file(const sl_source *src);
/* The kind chosen: "folder", "jsonl", "csv", "webdataset", "parquet" or
 * "openai-batch". */
const char *sl_source_kind(const sl_source *src);
/* True when rows are read as lines or records (JSONL, a JSON array, CSV, a
 * batch file): the kinds max_line_bytes bounds. */
bool sl_source_reads_lines(const sl_source *src);
/* True when rows have columns --id-column can name (manifests, Parquet,
 * Arrow); false where ids are paths, tar keys or custom_id. */
bool sl_source_rows_have_columns(const sl_source *src);
/* True when every row is an image file alone (a folder of images, image
 * files named one by one): no row holds a column a prompt could fill. */
bool sl_source_rows_are_bare_images(const sl_source *src);
/* True when some ids name a folder above their input file, or which input
 * folder they are in (inputs in several folders): ids that sluice before
 * this rule made from base names alone, so a resume ledger of such a job
 * written then holds other ids. */
bool sl_source_ids_have_folders(const sl_source *src);

/* A fresh source over the files src expanded when it opened, reading the
 * whole input from the start (no shards: under MPI no shard is asked of
 * rank 0, which would take it from this rank's run, and every rank and
 * every --input-shard run sees the same first rows): globs, folders of
 * inputs and hf://datasets/ references are not expanded or resolved again
 * (an s3:// folder is listed again as read). Call it on src's thread before
 * src is read; the copy is the caller's (sl_source_free) and may outlive
 * src, and is quiet (src warns of what it reads). SL_ERR_NOMEM only. */
sl_status sl_source_reopen(const sl_source *src, sl_source **out);

/* The count of an open source's items, for "N of T" progress: made by the
 * thread that owns src, before src is read (a copy of its expanded files,
 * so the count resolves nothing again and counts the files the run reads;
 * an s3:// folder it lists anew, keeping no key);
 * then run and freed on another thread, which src's
 * thread never touches meanwhile. It counts what a run of the same params
 * without take_shard reads: this run's static shards (shard_index of
 * shard_count), or, with take_shard (MPI), the whole input. The caller
 * owns it (sl_source_counter_free); it may outlive src. SL_ERR_NOMEM only. */
typedef struct sl_source_counter sl_source_counter;
sl_status sl_source_counter_new(const sl_source *src, sl_source_counter **out);
/* How many items, as cheaply as the kind allows (Parquet footers, batch
 * lines, tar headers; a folder's or manifest's items walked); stops early
 * with -1 when *stop becomes true. -1 when unknown, or run before. */
int64_t sl_source_counter_run(sl_source_counter *c, const atomic_bool *stop);
void sl_source_counter_free(sl_source_counter *c);

/* Where an item was read, for messages: FILE:LINE (manifests), FILE at byte
 * N (WebDataset), FILE row N (Parquet), the input (folders, files that fail
 * to open), from its `input` and `at`. The caller frees it with sl_free();
 * NULL when out of memory. */
char *sl_source_origin(const sl_source *src, size_t input, int64_t at);

/* The hub datasets the inputs were read from, each pinned to the commit its
 * revision named when the source opened: a JSON array of "ORG/NAME@COMMIT"
 * (distinct, in input order; the caller's); NULL when the inputs hold no
 * hf://datasets/ reference, or out of memory. */
json_t *sl_source_dataset_commits(const sl_source *src);

void sl_source_item_clear(sl_source_item *item);
void sl_source_free(sl_source *src);

#endif
