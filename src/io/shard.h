/* io/shard.h — one output shard file: written under a temporary name in the
 * output folder and renamed into place (then the folder fsynced) only when
 * published, so a reader never sees a partial shard. Clearing an
 * unpublished shard removes the temporary file. Used by every sink. */
#ifndef SL_IO_SHARD_H
#define SL_IO_SHARD_H

#include <stdbool.h>
#include "sluice/status.h"

typedef struct sl_shard {
    char *dir, *final_path, *tmp_path;
    bool published;
} sl_shard;

/* Creates `dir` (and parents) if needed and names dir/name and its
 * temporary. SL_ERR_EXISTS when dir/name exists and !overwrite. */
sl_status sl_shard_init(sl_shard *shard, const char *dir, const char *name, bool overwrite);

/* Renames the (closed, synced) temporary file to the final name, then syncs
 * the folder; SL_ERR_IO when either fails (`published` tells whether the
 * rename happened: a failed folder sync leaves the file in place). */
sl_status sl_shard_publish(sl_shard *shard);

void sl_shard_clear(sl_shard *shard);

/* The part files of an output folder: part-NNNNN.jsonl, part-NNNNN.parquet
 * and part-NNNNN.tar (N: five or more digits). */
typedef struct sl_part_scan {
    long count;      /* part files found */
    long max_number; /* the highest N; -1 when none */
} sl_part_scan;

/* The N of a part file's name "part-N.jsonl" / "part-N.parquet" /
 * "part-N.tar" (N: five to fifteen digits), or -1 for another name. */
long sl_shard_part_number(const char *name);

/* The N of an errors part's name "errors-N.jsonl" (--errors-file: a part's
 * failed rows, numbered as the part), or -1 for any other name. */
long sl_shard_errors_number(const char *name);

/* Lists dir's part files (a missing dir has none). */
sl_status sl_shard_scan_parts(const char *dir, sl_part_scan *out);

/* Calls each(user, name) for every part file of dir, in no order (a missing
 * dir has none); an error `each` returns ends the walk and is returned. */
sl_status sl_shard_each_part(const char *dir, sl_status (*each)(void *user, const char *name),
                             void *user);

/* Removes dir's part files and the errors parts beside them,
 * errors-N.jsonl (--overwrite). */
sl_status sl_shard_remove_parts(const char *dir);

/* Removes the temporary files (.part-*.tmp-PID, .errors-*.tmp-PID) that a killed run left in
 * dir; returns how many (-1 when dir cannot be read). */
long sl_shard_remove_temps(const char *dir);

/* Removes the errors parts (errors-N.jsonl) of dir whose part N is not
 * there: the errors part is renamed first, so a run killed before its
 * part's rename (or a part deleted by hand) leaves one whose rows the
 * next run writes again. Call once the ledger is reconciled, so that
 * every part it holds is in place. Returns how many (-1: dir unreadable). */
long sl_shard_remove_orphan_errors(const char *dir);

/* mkdir -p. On failure (SL_ERR_IO) errno is the failing call's (ENOTDIR
 * when path is there but not a folder), for the caller to tell a path it
 * cannot use (EROFS, EACCES, ...) from a failing disk. */
sl_status sl_make_dirs(const char *path);

#endif
