/* io/unzip.h — compressed bytes (gzip, zstd, bzip2, xz) inflated as they are
 * read, for compressed manifests and WebDataset shards. Ours, not
 * libarchive's filters: those hand on nothing of the block (up to 64 KiB)
 * they were filling when the input is cut short, so the last ~500 complete
 * lines before the cut of a truncated list.jsonl.gz were lost with the
 * broken tail. Here every byte a decoder has made is handed on before the
 * error that stops it.
 *
 * Streams one after another (pigz, `cat a.gz b.gz`, zstd frames, xz's
 * concatenated streams, with or without the zero Stream Padding xz allows
 * between them) read as one; after a whole stream, bytes that cannot begin
 * another (tar's zero padding) are ignored, as gzip(1) does. Memory is
 * fixed by the format's window (xz's is capped: SL_UNZIP_XZ_MEMLIMIT).
 *
 * The caller reads the compressed bytes and owns them and the output buffer;
 * an sl_unzip is one thread's, freed with sl_unzip_free. */
#ifndef SL_IO_UNZIP_H
#define SL_IO_UNZIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/status.h"

typedef enum sl_unzip_kind {
    SL_UNZIP_GZIP,
    SL_UNZIP_ZSTD,
    SL_UNZIP_BZIP2,
    SL_UNZIP_XZ,
} sl_unzip_kind;

/* An xz stream whose window needs more than this is refused (xz -9 needs
 * 65 MiB to read). */
#define SL_UNZIP_XZ_MEMLIMIT_MIB 256
#define SL_UNZIP_XZ_MEMLIMIT ((uint64_t)SL_UNZIP_XZ_MEMLIMIT_MIB << 20)

/* The compression whose magic bytes b[0..n) begin with (6 bytes tell every
 * kind; fewer tell those with shorter magic); false: none of them. */
bool sl_unzip_sniff(const uint8_t *b, size_t n, sl_unzip_kind *kind);

/* "gzip", "zstd", "bzip2", "xz". */
const char *sl_unzip_name(sl_unzip_kind kind);

typedef struct sl_unzip sl_unzip;

sl_status sl_unzip_new(sl_unzip_kind kind, sl_unzip **out);
void sl_unzip_free(sl_unzip *z);

/* Inflates from *in (*in_len bytes; both are advanced past what was used)
 * into out[0..cap), *made bytes. in_end: nothing follows *in (the file
 * ended). Returns SL_OK with *made > 0; or SL_OK with *made 0 when it needs
 * more input (*in_len is then 0) or at the end (in_end, every stream whole);
 * or SL_ERR_DECODE once every byte made before a fault has been handed on:
 * "truncated gzip input (the compressed data ends at byte N)", "gzip data
 * damaged near byte N: why", or, when the data may be whole but reading it
 * needs what is refused (memory, a zstd window past libzstd's default
 * bound, an xz one past SL_UNZIP_XZ_MEMLIMIT), "cannot read the xz data at
 * byte N: why"; N counted from the first byte fed. The fault stays: later
 * calls return it again. */
sl_status sl_unzip_run(sl_unzip *z, const uint8_t **in, size_t *in_len, bool in_end, uint8_t *out,
                       size_t cap, size_t *made);

#endif
