/* io/part_filter.h — one committed output part read back and rewritten, for
 * --retry-failed (job/retry.c): which of its rows failed, and the same part
 * without the rows of some ids. The formats are the sinks' (io/sink.h):
 * part-N.jsonl (a JSON object a line), part-N.parquet (as parquet_sink.c
 * writes it: flat columns, and nested ones whose shapes its metadata holds,
 * written again from their JSON; a null struct comes back as one of null
 * fields, as io/parquet_json.h says), part-N.tar (WebDataset: KEY.json holding the
 * row, then KEY.EXT members of the same sample), told apart by the name's
 * extension; errors-N.jsonl files are JSONL. A row failed when its "error"
 * is a non-null value; its id is its "id" string. Files are read as a
 * stream: memory does not grow with a part's rows. Thread rules: none
 * shared; one call at a time per file. Errors name the file and the cause
 * (SL_ERR_DECODE: a row that is not the output's, e.g. no "id"). */
#ifndef SL_IO_PART_FILTER_H
#define SL_IO_PART_FILTER_H

#include <stdbool.h>

#include "ledger/idset.h"
#include "sluice/status.h"

/* Called with each failed row's id (borrowed for the call); an error it
 * returns ends the walk and is returned. */
typedef sl_status (*sl_part_id_fn)(void *user, const char *id);

/* Calls each(user, id) for every row of `path` whose error is set, in file
 * order; an id comes once per such row (with --rows-per-task a failed
 * input's tasks are rows of one id). */
sl_status sl_part_failed_ids(const char *path, sl_part_id_fn each, void *user);

/* Writes `tmp_path` (created, or replaced) as `path` without the rows whose
 * id `drop` holds (every row of that id: all its tasks), in the same format
 * and order (a Parquet copy compressed with `parquet_codec`, a name as
 * --compression takes; NULL: the writer's default), and fsyncs it;
 * *removed = the rows left out, *kept = the rows written. With nothing to
 * drop the copy is still made (the caller skips the call when it knows).
 * On error tmp_path is removed. The caller renames tmp_path over path
 * (io/shard.h's way: rename, then sync the folder). */
sl_status sl_part_filter(const char *path, const char *tmp_path, sl_idset *drop,
                         const char *parquet_codec, long *removed, long *kept);

/* *rows = the rows `path` holds: a JSONL part's whole lines (a last line
 * cut before its line break is none), a Parquet part's count from its
 * footer, a tar part's samples (a tar cut short is an error). Memory does
 * not grow with the rows; a JSONL or tar part is read through. */
sl_status sl_part_count_rows(const char *path, long *rows);

/* The tar format's halves (io/part_filter_tar.c), called by the two above
 * for a name ending in ".tar". */
sl_status sl_part_failed_ids_tar(const char *path, sl_part_id_fn each, void *user);
sl_status sl_part_filter_tar(const char *path, const char *tmp_path, sl_idset *drop,
                             long *removed, long *kept);
sl_status sl_part_count_rows_tar(const char *path, long *rows);

#endif
