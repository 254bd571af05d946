/* io/dir_source.h — the images under a folder, recursively, in a stable
 * order (byte-wise sorted names, depth first), streamed: memory grows with
 * the depth and the largest single directory, never with the whole tree.
 * Files are chosen by image or video extension (case-insensitive); a Mac's
 * metadata (sl_is_mac_metadata) is skipped. Symlinked files are followed;
 * symlinked directories are not (no cycles), with a warning. A subdirectory
 * that cannot be read is returned as an entry with `error` set, so the job
 * records it instead of silently skipping it. One thread at a time. */
#ifndef SL_IO_DIR_SOURCE_H
#define SL_IO_DIR_SOURCE_H

#include <stdbool.h>
#include "sluice/status.h"

typedef struct sl_dir_source sl_dir_source;

typedef struct sl_dir_entry {
    const char *path;  /* root joined with rel */
    const char *rel;   /* path relative to root: the row id */
    const char *error; /* NULL, or why this path could not be listed */
} sl_dir_entry;

/* Fails with SL_ERR_NOT_FOUND / SL_ERR_INVALID_ARG when root is missing or
 * not a directory. The source owns nothing of the caller's. `sorted`
 * false gives the same entries in the order the system lists them,
 * holding no names (an open directory per level): for a count. */
sl_status sl_dir_source_open(const char *root, bool sorted, sl_dir_source **out);

/* Files are chosen by want(rel, user) instead of by image or video
 * extension from now on (a Mac's metadata still skipped); it sees every
 * other file's path relative to root. user is the caller's, kept until
 * sl_dir_source_free. */
void sl_dir_source_choose(sl_dir_source *src, bool (*want)(const char *rel, void *user),
                          void *user);

/* No warnings from now on (a symlinked folder left out): a second walk of
 * a folder the run walks too, such as the progress count's, says nothing
 * the run's own walk will not. */
void sl_dir_source_quiet(sl_dir_source *src);

/* *entry is the next input, or NULL at the end. The entry stays valid until
 * the next call. */
sl_status sl_dir_source_next(sl_dir_source *src, const sl_dir_entry **entry);

void sl_dir_source_free(sl_dir_source *src);

/* True when the name ends in an extension of an image the image decoder
 * takes or of a video (sluice/video.h). */
bool sl_is_media_name(const char *name);

/* True for the metadata a Mac leaves beside files, never images: an
 * AppleDouble file ("._x.jpg", a resource fork) or anything in a
 * "__MACOSX" folder (zip archives made on a Mac). `rel`: a '/'-separated
 * path or a single name. */
bool sl_is_mac_metadata(const char *rel);

#endif
