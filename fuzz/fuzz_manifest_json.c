/* fuzz/fuzz_manifest_json.c — the JSON-array manifest reader (io/source.c's
 * element scan) on a file holding the input: every item read to the end,
 * each checked, and the count equal to the items. Low limits (256-byte
 * elements, 8 columns), so inputs of a few KB cross them. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_source.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_source_params p = sl_source_default_params();
    p.max_line_bytes = 256;
    p.max_columns = 8;
    p.image_column = size % 3 == 0 ? "a,b" : NULL; /* several columns: a list */
    fuzz_walk(fuzz_file("m.json", data, size), &p, 1);
    return 0;
}
