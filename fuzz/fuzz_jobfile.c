/* fuzz/fuzz_jobfile.c — the job-file reader (config/config_yaml.c) and the
 * settings table behind it (config/config.c). The input is a job file. The
 * promises checked: reading any text ends in settings or in an error with a
 * message naming the file; and settings that were read print as a job file
 * that reads back to settings printing the same text (config print's round
 * trip), unless a string is not UTF-8 (YAML's \ud800 escape makes one),
 * which printing refuses by name. Files named in the text are not read
 * (sl_config_allow_files): a fuzzer's /dev/stdin would block it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *print(const sl_config *c, sl_status *st)
{
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    if (!fp)
        abort();
    *st = sl_config_write_yaml(c, fp);
    fclose(fp);
    return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_config *c;
    if (sl_config_new(&c) != SL_OK)
        abort();
    sl_config_allow_files(c, false);
    sl_status st = sl_config_load_text(c, (const char *)data, size, "f.yaml");
    if (st == SL_OK)
        st = sl_config_resolve(c);
    if (st != SL_OK) {
        if (strncmp(sl_last_error(), "f.yaml", 6) != 0) {
            fprintf(stderr, "a message that does not name the file: %s\n", sl_last_error());
            abort();
        }
        sl_config_free(c);
        return 0;
    }
    char *first = print(c, &st);
    if (st != SL_OK) {
        if (!strstr(sl_last_error(), "is not UTF-8")) {
            fprintf(stderr, "print failed: %s\n", sl_last_error());
            abort();
        }
        free(first);
        sl_config_free(c);
        return 0;
    }
    sl_config *back;
    if (sl_config_new(&back) != SL_OK)
        abort();
    sl_config_allow_files(back, false);
    st = sl_config_load_text(back, first, strlen(first), "printed.yaml");
    if (st == SL_OK)
        st = sl_config_resolve(back);
    if (st != SL_OK) {
        fprintf(stderr, "the printed settings do not read back: %s\n--- printed:\n%s\n",
                sl_last_error(), first);
        abort();
    }
    char *second = print(back, &st);
    if (st != SL_OK || strcmp(first, second) != 0) {
        fprintf(stderr, "printing the read-back settings differs:\n--- first:\n%s\n--- second:\n%s\n",
                first, second ? second : "");
        abort();
    }
    free(first);
    free(second);
    sl_config_free(back);
    sl_config_free(c);
    return 0;
}
