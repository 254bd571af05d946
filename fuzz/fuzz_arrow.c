/* fuzz/fuzz_arrow.c — the Arrow IPC source (io/source_arrow.c, nanoarrow's
 * decoder) on a file holding the input: every row read to the end, each
 * checked (fuzz_source.h). Images over 64 KiB fail as images over 256 MiB
 * do in real use. Seeds: fuzz/gen_arrow_corpus.py. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_source_params p = sl_source_default_params();
    p.max_item_bytes = 64 << 10;
    p.prompt_column = size % 2 ? "conversations" : NULL;
    fuzz_walk(fuzz_file("d.arrow", data, size), &p, 0);
    return 0;
}
