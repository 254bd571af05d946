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

/* Renames the (closed, synced) temporary file to the final name. */
sl_status sl_shard_publish(sl_shard *shard);

void sl_shard_clear(sl_shard *shard);

/* mkdir -p. */
sl_status sl_make_dirs(const char *path);

#endif
