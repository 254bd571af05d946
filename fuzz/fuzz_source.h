/* fuzz/fuzz_source.h — what the input-source fuzz targets share: a private
 * temporary folder (made once, removed at exit) to hold the input as a file,
 * and a walk over every item of a source that checks what io/source.h
 * promises of each (an id; a path, bytes, a list of images or an error; a
 * place). */
#ifndef SL_FUZZ_SOURCE_H
#define SL_FUZZ_SOURCE_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "io/source_impl.h"

static char fuzz_dir[64];

static inline int fuzz_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static inline void fuzz_cleanup(void) { nftw(fuzz_dir, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS); }

/* The private folder, made on first use. */
static inline const char *fuzz_tmpdir(void)
{
    if (!fuzz_dir[0]) {
        snprintf(fuzz_dir, sizeof fuzz_dir, "/tmp/sluice-fuzz-XXXXXX");
        if (!mkdtemp(fuzz_dir))
            abort();
        atexit(fuzz_cleanup);
    }
    return fuzz_dir;
}

/* Writes data to fuzz_tmpdir()/name; the path is static. */
static inline const char *fuzz_file(const char *name, const uint8_t *data, size_t size)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", fuzz_tmpdir(), name);
    FILE *f = fopen(path, "wb");
    if (!f || (size && fwrite(data, 1, size, f) != size))
        abort();
    fclose(f);
    return path;
}

/* The input as a tar the fuzzer can change: a copy (free()) in which each
 * member header, found by walking the headers' sizes, has its checksum
 * recomputed. libarchive refuses a header whose checksum is wrong, and a
 * fuzzer that changes a name, a type or a size almost never fixes the sum
 * too: without this its every change to a header reached only "damaged
 * tar". An input whose first byte is 0xff keeps its sums, so damaged
 * headers are still tried. */
static inline uint8_t *fuzz_tar_with_sums(const uint8_t *data, size_t size)
{
    uint8_t *b = malloc(size ? size : 1);
    if (!b)
        abort();
    memcpy(b, data, size);
    if (size && b[0] == 0xff)
        return b;
    for (size_t at = 0; at + 512 <= size;) {
        uint8_t *h = b + at;
        unsigned sum = 0;
        memset(h + 148, ' ', 8);
        for (size_t k = 0; k < 512; k++)
            sum += h[k];
        if (sum == 8 * ' ') { /* a zero block (the end): no header to sum */
            memset(h + 148, 0, 8);
            at += 512;
            continue;
        }
        char text[8];
        snprintf(text, sizeof text, "%06o", sum & 0777777);
        memcpy(h + 148, text, 7); /* six digits, a NUL, then the space */
        uint64_t member = 0;      /* octal, as a header that is not base-256 holds it */
        for (size_t k = 124; k < 136 && h[k] >= '0' && h[k] <= '7'; k++)
            member = member * 8 + (uint64_t)(h[k] - '0');
        if (member > size)
            break;
        at += 512 + (size_t)(member + 511) / 512 * 512;
    }
    return b;
}

/* Reads every item of `input`; returns how many. Aborts when an item breaks
 * a promise, or when the cheap count disagrees and `count_exact`. */
static inline long fuzz_walk(const char *input, const sl_source_params *p, int count_exact)
{
    sl_source *src;
    sl_source_counter *counter;
    if (sl_source_open(&input, 1, p, &src) != SL_OK)
        return -1;
    if (sl_source_counter_new(src, &counter) != SL_OK)
        abort();
    long n = 0;
    sl_source_item it = {0};
    for (;;) {
        bool done = false;
        if (sl_source_next(src, &it, &done) != SL_OK || done)
            break;
        bool list = it.n_images > 0;
        if (!it.id || (!it.path && !it.data && !list && !it.error) || (it.data && it.path) ||
            (list && (it.path || it.data || !it.images)) ||
            (list && !it.error && it.n_images > SL_SOURCE_MAX_IMAGES))
            abort();
        for (size_t k = 0; !it.error && k < it.n_images; k++)
            if (!it.images[k].path == !it.images[k].data) /* exactly one of them */
                abort();
        char *where = sl_source_origin(src, it.input, it.at);
        if (!where || strncmp(where, input, strlen(input)) != 0)
            abort();
        sl_free(where);
        n++;
    }
    sl_source_item_clear(&it);
    sl_source_free(src);
    atomic_bool stop = false;
    int64_t counted = sl_source_counter_run(counter, &stop);
    sl_source_counter_free(counter);
    if (count_exact && counted != n)
        abort();
    return n;
}

#endif
