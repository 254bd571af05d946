/* fuzz/fuzz_tar.c — the WebDataset reader (io/source_wds.c, libarchive) on
 * a file holding the input as a shard: every sample read to the end, each
 * checked; the header-only count runs too (it may differ from the items on
 * a damaged shard: it only feeds progress). Members over 64 KiB fail as
 * members over 256 MiB do in real use. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_source_params p = sl_source_default_params();
    p.max_item_bytes = 64 << 10;
    /* a third: samples' named members as their images (a list of two) */
    p.image_column = size % 3 == 0 ? "0.jpg,1.png" : NULL;
    uint8_t *tar = fuzz_tar_with_sums(data, size);
    fuzz_walk(fuzz_file("s.tar", tar, size), &p, 0);
    free(tar);
    return 0;
}
