/* fuzz/fuzz_part_filter_tar.c — --retry-failed's reading and rewriting of a
 * WebDataset part (io/part_filter_tar.c) on a file holding the input. What
 * must hold: a failed copy leaves no file; a copy without every failed id
 * has no failed row left, reads back, and is its own copy (filtering it
 * again drops nothing and gives the same bytes); the counts are not
 * negative. The copy may count fewer rows than were kept: a key repeated
 * around a dropped sample (never in a part sluice wrote) joins two samples
 * into one there. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz_source.h"
#include "io/part_filter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static sl_status add_id(void *user, const char *id)
{
    bool seen;
    int64_t fi, fa;
    if (!id)
        abort();
    return sl_idset_add(user, id, 0, 0, &seen, &fi, &fa);
}

static sl_status count_id(void *user, const char *id)
{
    (void)id;
    ++*(long *)user;
    return SL_OK;
}

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        abort();
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(*len + 1);
    if (!buf || fread(buf, 1, *len, f) != *len)
        abort();
    fclose(f);
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *tar = fuzz_tar_with_sums(data, size);
    const char *in = fuzz_file("part.tar", tar, size);
    free(tar);
    char part[160], copy[160], again[160];
    snprintf(part, sizeof part, "%s", in);
    snprintf(copy, sizeof copy, "%s/copy.tar", fuzz_tmpdir());
    snprintf(again, sizeof again, "%s/again.tar", fuzz_tmpdir());
    sl_idset *drop;
    if (sl_idset_open(&drop) != SL_OK)
        abort();
    long removed = -1, kept = -1;
    if (sl_part_failed_ids_tar(part, add_id, drop) == SL_OK) {
        sl_status st = sl_part_filter_tar(part, copy, drop, &removed, &kept);
        if (st != SL_OK) {
            if (access(copy, F_OK) == 0)
                abort();
        } else {
            long failed = 0, r2 = -1, k2 = -1;
            if (removed < 0 || kept < 0 || sl_part_failed_ids_tar(copy, count_id, &failed) != SL_OK ||
                failed != 0 || sl_part_filter_tar(copy, again, drop, &r2, &k2) != SL_OK ||
                r2 != 0 || k2 > kept)
                abort();
            size_t n1, n2;
            uint8_t *b1 = slurp(copy, &n1), *b2 = slurp(again, &n2);
            if (n1 != n2 || memcmp(b1, b2, n1) != 0)
                abort();
            free(b1);
            free(b2);
        }
    } else if (sl_part_filter_tar(part, copy, drop, &removed, &kept) != SL_OK &&
               access(copy, F_OK) == 0) {
        abort();
    }
    unlink(copy);
    unlink(again);
    sl_idset_free(drop);
    return 0;
}
