/* fuzz/fuzz_manifest_jsonl.c — the JSONL manifest reader (io/source.c) on a
 * file holding the input: every item read to the end, each checked, and the
 * count equal to the items. The limits are low (256-byte lines, 8 columns)
 * so inputs of a few KB cross them, as 1 MiB lines do in real use. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_source_params p = sl_source_default_params();
    p.max_line_bytes = 256;
    p.max_columns = 8;
    p.allow_file_urls = size % 2;
    p.image_column = size % 3 == 0 ? "a,b" : NULL; /* several columns: a list */
    fuzz_walk(fuzz_file("m.jsonl", data, size), &p, 1);
    return 0;
}
