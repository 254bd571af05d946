/* fuzz/fuzz_manifest_csv.c — the CSV manifest reader (io/source.c: records
 * over several lines, quoting, the record scan that skips a long record to
 * its end) on a file holding the input: every item read to the end, each
 * checked, and the count equal to the items. Limits as in the JSONL target. */
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
    fuzz_walk(fuzz_file("m.csv", data, size), &p, 1);
    return 0;
}
