/* io/wds_tar.h — how sluice writes a WebDataset tar, said once for the
 * sink's parts (io/wds_sink.c) and the copies --retry-failed makes of them
 * (io/part_filter_tar.c), so the same members give the same bytes: pax
 * (plain ustar headers unless a member needs more), no compression, 64 KiB
 * blocks with the last one not padded, regular files of mode 0644 owned by
 * 0:0 with mtime 0. Both take libarchive handles the caller owns; any
 * thread, one call at a time per handle. */
#ifndef SL_IO_WDS_TAR_H
#define SL_IO_WDS_TAR_H

#include <stdint.h>

#include <archive.h>
#include <archive_entry.h>

/* libarchive writes whole blocks of this size (the last one cut short). */
enum { SL_WDS_TAR_BLOCK = 64 << 10 };

/* Sets a new write handle's format and blocking (before its open): the
 * first libarchive status that is not ARCHIVE_OK, else ARCHIVE_OK. */
int sl_wds_tar_format(struct archive *a);

/* Writes the header of member `name` of `size` bytes, `e` cleared and
 * reused for it: libarchive's status. */
int sl_wds_tar_header(struct archive *a, struct archive_entry *e, const char *name,
                      int64_t size);

#endif
