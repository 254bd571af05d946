/* core/file.h — files: opening an input that must be a regular file,
 * reading a whole file into memory (image files, kept image bytes) up to a
 * limit, and the checked write, sync and rename that every output
 * part and its folder go through (io/shard.h, io/jsonl_sink.h,
 * io/parquet_write.h), so an error is never lost and the test faults of
 * core/fault.h ("write", "fsync", "rename") reach each of them. Any thread.
 * The caller frees what sl_read_file() returns with sl_free(). */
#ifndef SL_CORE_FILE_H
#define SL_CORE_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "sluice/status.h"

/* Opens `path` for reading as an input file: never blocks on a FIFO or a
 * device (they are opened non-blocking, then refused), and refuses all but a
 * regular file. *fd (close() it) is blocking again; *size is its size from
 * fstat. SL_ERR_NOT_FOUND / SL_ERR_IO with a message that names `path` and
 * the cause (for a name not found whose other Unicode normal form, NFC or
 * NFD, exists, saying so); SL_ERR_INVALID_ARG "not a regular file" naming what it is (a
 * FIFO, a folder, ...). On failure *fd is -1. */
sl_status sl_file_open_regular(const char *path, int *fd, uint64_t *size);

/* What a file of `mode` (stat's st_mode) is, for a message that refuses it:
 * "a folder", "a FIFO (named pipe)", ..., "not a plain file". */
const char *sl_file_kind(unsigned mode);

/* Reads the regular file `path` whole (sl_file_open_regular). A file of more
 * than `max_bytes` (from fstat, before a byte is read, or as read when it
 * grows meanwhile) is SL_ERR_TOO_LARGE "'path' is N bytes, over the limit of
 * M bytes" (the caller may add the setting that sets M). Else
 * SL_ERR_NOT_FOUND / SL_ERR_IO / SL_ERR_INVALID_ARG / SL_ERR_NOMEM with a
 * message that names `path` and the cause. On failure *data is NULL. */
sl_status sl_read_file(const char *path, uint64_t max_bytes, uint8_t **data, size_t *len);

/* Writes all `len` bytes to `fd` (the file `path`), retrying short writes
 * and EINTR. SL_ERR_IO naming `path` and the cause ("No space left on
 * device"); part of the data may then be in the file, so its content is
 * unknown and it must not be published. */
sl_status sl_file_write_all(int fd, const void *data, size_t len, const char *path);

/* fsync(fd) of the file `path`: SL_ERR_IO naming it and the cause. After a
 * failed sync the data may be lost even if a later sync succeeds: the caller
 * gives the file up rather than trying again. */
sl_status sl_file_sync(int fd, const char *path);

/* Makes the folder's entries (a file created or renamed in it) durable:
 * opens and fsyncs `dir`. SL_ERR_IO naming it and the cause; a file system
 * that cannot sync folders (EINVAL) is not an error. */
sl_status sl_file_sync_dir(const char *dir);

/* Creates the temporary `path` (a file of ours, renamed into place when
 * complete), open for reading and writing, with `mode` less the umask:
 * whatever is there first (a killed run's temporary, or a symlink another
 * user of a shared output folder put there) is removed, and the file is
 * made anew with O_EXCL and O_NOFOLLOW, so what sluice writes never goes
 * through a link into a file elsewhere (truncating it). The descriptor
 * (close() it), or -1 with errno set: EEXIST when something came back at
 * `path` meanwhile. */
int sl_file_create_temp(const char *path, unsigned mode);
/* Why sl_file_create_temp failed, for a message: strerror(err), but for
 * EEXIST (a file there that could not be removed, or that came back: in a
 * folder others may write in, another user's) what to do about it. */
const char *sl_file_temp_error(int err);

/* rename(from, to): SL_ERR_IO naming both and the cause. */
sl_status sl_file_rename(const char *from, const char *to);

#endif
