/* io/unzip.c — see unzip.h: one loop over four decoders (zlib, libzstd,
 * libbz2, liblzma), each stepped on what input there is and asked again
 * while its last step filled the output (it may hold more). */
#include <bzlib.h>
#include <limits.h>
#include <lzma.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "core/alloc.h"
#include "core/error.h"
#include "io/unzip.h"

/* A number macro as text, so the message says the limit the code uses. */
#define MIB_TEXT_(n) #n
#define MIB_TEXT(n) MIB_TEXT_(n)

struct sl_unzip {
    sl_unzip_kind kind;
    z_stream gz;
    ZSTD_DStream *zs;
    bz_stream bz;
    lzma_stream xz;
    bool ready;      /* the decoder's state was set up (freed at the end) */
    bool between;    /* a whole stream was read: the input may end here */
    bool ignoring;   /* bytes after a whole stream that begin none: passed over */
    bool pending;    /* the last step filled the output: the decoder may hold more */
    uint64_t in_at;  /* input bytes used so far */
    char error[200]; /* set: the fault every call returns */
};

bool sl_unzip_sniff(const uint8_t *b, size_t n, sl_unzip_kind *kind)
{
    static const struct {
        const char *magic;
        size_t len;
        sl_unzip_kind kind;
    } magics[] = {
        {"\x1f\x8b", 2, SL_UNZIP_GZIP},
        {"\x28\xb5\x2f\xfd", 4, SL_UNZIP_ZSTD},
        {"BZh", 3, SL_UNZIP_BZIP2},
        {"\xfd" "7zXZ\0", 6, SL_UNZIP_XZ},
    };
    for (size_t i = 0; i < sizeof magics / sizeof *magics; i++)
        if (n >= magics[i].len && memcmp(b, magics[i].magic, magics[i].len) == 0) {
            /* bzip2's block size digit too: "BZh" alone also begins a plain
             * tar whose first member is named so. */
            if (magics[i].kind == SL_UNZIP_BZIP2 && (n < 4 || b[3] < '1' || b[3] > '9'))
                continue;
            *kind = magics[i].kind;
            return true;
        }
    /* A zstd skippable frame (0x184D2A5?, little-endian) may come first. */
    if (n >= 4 && (b[0] & 0xf0) == 0x50 && b[1] == 0x2a && b[2] == 0x4d && b[3] == 0x18) {
        *kind = SL_UNZIP_ZSTD;
        return true;
    }
    return false;
}

const char *sl_unzip_name(sl_unzip_kind kind)
{
    switch (kind) {
    case SL_UNZIP_GZIP: return "gzip";
    case SL_UNZIP_ZSTD: return "zstd";
    case SL_UNZIP_BZIP2: return "bzip2";
    case SL_UNZIP_XZ: return "xz";
    }
    return "?";
}

/* Whether byte b can begin another stream of z's kind. */
static bool may_begin(const sl_unzip *z, uint8_t b)
{
    switch (z->kind) {
    case SL_UNZIP_GZIP: return b == 0x1f;
    case SL_UNZIP_ZSTD: return b == 0x28 || (b & 0xf0) == 0x50;
    case SL_UNZIP_BZIP2: return b == 'B';
    case SL_UNZIP_XZ: return b == 0xfd;
    }
    return false;
}

static void end_decoder(sl_unzip *z)
{
    if (!z->ready)
        return;
    switch (z->kind) {
    case SL_UNZIP_GZIP: inflateEnd(&z->gz); break;
    case SL_UNZIP_ZSTD: ZSTD_freeDStream(z->zs); break;
    case SL_UNZIP_BZIP2: BZ2_bzDecompressEnd(&z->bz); break;
    case SL_UNZIP_XZ: lzma_end(&z->xz); break;
    }
    z->ready = false;
}

/* Sets up the decoder for a stream's first byte, reusing what it has
 * (a file of many small zstd frames is common): false out of memory. */
static bool start_decoder(sl_unzip *z)
{
    if (z->ready && z->kind == SL_UNZIP_GZIP)
        return inflateReset(&z->gz) == Z_OK;
    if (z->ready && z->kind == SL_UNZIP_ZSTD)
        return !ZSTD_isError(ZSTD_DCtx_reset(z->zs, ZSTD_reset_session_only));
    if (z->ready && z->kind == SL_UNZIP_XZ) /* liblzma reuses an initialized stream */
        return lzma_stream_decoder(&z->xz, SL_UNZIP_XZ_MEMLIMIT, 0) == LZMA_OK;
    end_decoder(z);
    switch (z->kind) {
    case SL_UNZIP_GZIP:
        memset(&z->gz, 0, sizeof z->gz);
        z->ready = inflateInit2(&z->gz, 15 + 16) == Z_OK; /* gzip wrapping only */
        break;
    case SL_UNZIP_ZSTD:
        z->ready = (z->zs = ZSTD_createDStream()) != NULL;
        break;
    case SL_UNZIP_BZIP2:
        memset(&z->bz, 0, sizeof z->bz);
        z->ready = BZ2_bzDecompressInit(&z->bz, 0, 0) == BZ_OK;
        break;
    case SL_UNZIP_XZ:
        z->xz = (lzma_stream)LZMA_STREAM_INIT;
        z->ready = lzma_stream_decoder(&z->xz, SL_UNZIP_XZ_MEMLIMIT, 0) == LZMA_OK;
        break;
    }
    return z->ready;
}

sl_status sl_unzip_new(sl_unzip_kind kind, sl_unzip **out)
{
    *out = NULL;
    sl_unzip *z = sl_calloc(1, sizeof *z);
    if (!z)
        return sl_fail(SL_ERR_NOMEM, "out of memory");
    z->kind = kind;
    if (!start_decoder(z)) {
        sl_free(z);
        return sl_fail(SL_ERR_NOMEM, "out of memory starting a %s decoder", sl_unzip_name(kind));
    }
    *out = z;
    return SL_OK;
}

void sl_unzip_free(sl_unzip *z)
{
    if (!z)
        return;
    end_decoder(z);
    sl_free(z);
}

/* One step of the decoder on in[0..*used) into out[0..*made): *used and
 * *made say what it took and gave; *end: its stream is whole. NULL, or
 * what broke; *refused: not the data but what reading it needs (memory, a
 * window past the bound, options this decoder lacks). */
static const char *step(sl_unzip *z, const uint8_t *in, size_t *used, uint8_t *out, size_t *made,
                        bool *end, bool *refused)
{
    /* zlib and libbz2 count in unsigned int: a step takes at most that. */
    size_t in_len = *used < UINT_MAX ? *used : UINT_MAX, cap = *made < UINT_MAX ? *made : UINT_MAX;
    *end = false;
    *refused = false;
    switch (z->kind) {
    case SL_UNZIP_GZIP: {
        z->gz.next_in = (Bytef *)(uintptr_t)in;
        z->gz.avail_in = (uInt)in_len;
        z->gz.next_out = out;
        z->gz.avail_out = (uInt)cap;
        int rc = inflate(&z->gz, Z_NO_FLUSH);
        *used = in_len - z->gz.avail_in;
        *made = cap - z->gz.avail_out;
        *end = rc == Z_STREAM_END;
        *refused = rc == Z_MEM_ERROR;
        if (rc == Z_MEM_ERROR)
            return "out of memory";
        if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR)
            return z->gz.msg ? z->gz.msg : "inflate failed";
        return NULL;
    }
    case SL_UNZIP_ZSTD: {
        ZSTD_inBuffer ib = {in, in_len, 0};
        ZSTD_outBuffer ob = {out, cap, 0};
        size_t rc = ZSTD_decompressStream(z->zs, &ob, &ib);
        *used = ib.pos;
        *made = ob.pos;
        if (ZSTD_isError(rc)) {
            ZSTD_ErrorCode code = ZSTD_getErrorCode(rc);
            *refused = code == ZSTD_error_memory_allocation ||
                       code == ZSTD_error_frameParameter_windowTooLarge ||
                       code == ZSTD_error_frameParameter_unsupported ||
                       code == ZSTD_error_dictionary_wrong;
            return ZSTD_getErrorName(rc);
        }
        *end = rc == 0;
        return NULL;
    }
    case SL_UNZIP_BZIP2: {
        z->bz.next_in = (char *)(uintptr_t)in;
        z->bz.avail_in = (unsigned)in_len;
        z->bz.next_out = (char *)out;
        z->bz.avail_out = (unsigned)cap;
        int rc = BZ2_bzDecompress(&z->bz);
        *used = in_len - z->bz.avail_in;
        *made = cap - z->bz.avail_out;
        *end = rc == BZ_STREAM_END;
        if (rc == BZ_OK || rc == BZ_STREAM_END)
            return NULL;
        *refused = rc == BZ_MEM_ERROR;
        return rc == BZ_MEM_ERROR ? "out of memory" : "bad bzip2 data";
    }
    case SL_UNZIP_XZ: {
        z->xz.next_in = in;
        z->xz.avail_in = in_len;
        z->xz.next_out = out;
        z->xz.avail_out = cap;
        lzma_ret rc = lzma_code(&z->xz, LZMA_RUN);
        *used = in_len - z->xz.avail_in;
        *made = cap - z->xz.avail_out;
        *end = rc == LZMA_STREAM_END;
        *refused = rc == LZMA_MEMLIMIT_ERROR || rc == LZMA_MEM_ERROR || rc == LZMA_OPTIONS_ERROR;
        switch (rc) {
        case LZMA_OK: case LZMA_STREAM_END: case LZMA_BUF_ERROR: return NULL;
        case LZMA_MEMLIMIT_ERROR:
            return "its window needs more than " MIB_TEXT(SL_UNZIP_XZ_MEMLIMIT_MIB) " MiB of memory";
        case LZMA_MEM_ERROR: return "out of memory";
        case LZMA_FORMAT_ERROR: return "not xz data";
        case LZMA_OPTIONS_ERROR: return "options this xz does not support";
        default: return "bad xz data";
        }
    }
    }
    return "unknown compression";
}

sl_status sl_unzip_run(sl_unzip *z, const uint8_t **in, size_t *in_len, bool in_end, uint8_t *out,
                       size_t cap, size_t *made)
{
    *made = 0;
    const char *name = sl_unzip_name(z->kind);
    while (!z->error[0] && *made < cap) {
        if (*in_len == 0 && !z->pending) {
            if (in_end && !z->between)
                snprintf(z->error, sizeof z->error,
                         "truncated %s input (the compressed data ends at byte %llu)", name,
                         (unsigned long long)z->in_at);
            break;
        }
        if (z->between && *in_len > 0 && z->kind == SL_UNZIP_XZ && !z->ignoring && (*in)[0] == 0) {
            /* xz's Stream Padding: zero bytes between streams, which xz(1)
             * (and libarchive, before) read on past to the next stream. */
            size_t k = 1;
            while (k < *in_len && (*in)[k] == 0)
                k++;
            z->in_at += k;
            *in += k;
            *in_len -= k;
            continue;
        }
        if (z->between && *in_len > 0) {
            z->ignoring = z->ignoring || !may_begin(z, (*in)[0]);
            if (z->ignoring) { /* zero padding after the last stream is no data */
                z->in_at += *in_len;
                *in += *in_len;
                *in_len = 0;
                continue;
            }
            if (!start_decoder(z)) {
                snprintf(z->error, sizeof z->error, "out of memory starting a %s decoder", name);
                break;
            }
            z->between = false;
        }
        size_t used = *in_len, space = cap - *made, n = space;
        bool end, refused;
        const char *why = step(z, *in, &used, out + *made, &n, &end, &refused);
        *in += used;
        *in_len -= used;
        z->in_at += used;
        *made += n;
        if (why) {
            /* A refusal is not damage: the file may be whole (xz -dc reads
             * an xz whose window passes SL_UNZIP_XZ_MEMLIMIT). */
            snprintf(z->error, sizeof z->error,
                     refused ? "cannot read the %s data at byte %llu: %s"
                             : "%s data damaged near byte %llu: %s",
                     name, (unsigned long long)z->in_at, why);
            break;
        }
        z->between = end;
        /* Asked again only while it might hold more: it filled the output,
         * or made progress on input still there. */
        z->pending = !end && n == space;
        if (!end && used == 0 && n == 0 && *in_len > 0) {
            snprintf(z->error, sizeof z->error, "%s data damaged near byte %llu: the decoder "
                     "takes no more of it", name, (unsigned long long)z->in_at);
            break;
        }
    }
    if (*made > 0 || !z->error[0])
        return SL_OK;
    return sl_fail(SL_ERR_DECODE, "%s", z->error);
}
