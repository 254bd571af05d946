/* tests/unit/late_encoder.c — preloaded into test_engine (LD_PRELOAD) by
 * the unit.engine_late_encoder test: mtmd_tokenize sleeps
 * SLUICE_LATE_ENCODER_MS (default 200) before it runs on the engine's
 * encoder thread (named "sl-encoder"), as a thread starved of CPU would,
 * so a request's first task can start, and end, long before the encoder
 * has its other tasks ready. Other threads' calls are untouched. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "mtmd.h"

typedef int32_t (*tokenize_fn)(const mtmd_context *ctx, mtmd_input_chunks *out, const mtmd_input_text *text,
                               const mtmd_bitmap *const *bitmaps, size_t n);

/* Looked up at load, before any thread (there may be several encoder
 * threads) calls it. */
static tokenize_fn real;

__attribute__((constructor)) static void find_real(void)
{
    *(void **)&real = dlsym(RTLD_NEXT, "mtmd_tokenize"); /* POSIX's way past ISO C's cast rule */
}

int32_t mtmd_tokenize(const mtmd_context *ctx, mtmd_input_chunks *out, const mtmd_input_text *text,
                      const mtmd_bitmap *const *bitmaps, size_t n)
{
    char name[16] = "";
    prctl(PR_GET_NAME, name, 0, 0, 0);
    if (strcmp(name, "sl-encoder") == 0) {
        const char *ms = getenv("SLUICE_LATE_ENCODER_MS");
        long wait = ms ? atol(ms) : 200;
        struct timespec ts = {wait / 1000, (wait % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    return real(ctx, out, text, bitmaps, n);
}
