/* fuzz/fuzz_unzip.c — io/unzip.h on any bytes: the first three bytes choose
 * the kind (when the rest has no magic), the input's chunk size and the
 * output's size; the rest is the compressed stream. What it inflates, and
 * whether it fails, must not depend on how the input is cut or how small
 * the output is: the same bytes fed whole into a large buffer must give the
 * same text and the same end. Output is capped (a decompression bomb is not
 * a finding). */
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "io/unzip.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define OUT_CAP (1u << 20)

/* Inflates in[0..n) fed `chunk` bytes at a time into pieces of `piece`
 * bytes, into out (OUT_CAP): how many bytes; *failed: it ended in a fault. */
static size_t inflate_all(sl_unzip_kind kind, const uint8_t *in, size_t n, size_t chunk,
                          size_t piece, uint8_t *out, bool *failed)
{
    sl_unzip *z;
    if (sl_unzip_new(kind, &z) != SL_OK)
        abort();
    size_t total = 0, fed = 0;
    *failed = false;
    const uint8_t *at = in;
    size_t left = 0;
    for (unsigned rounds = 0;; rounds++) {
        if (rounds > 50u * 1000 * 1000)
            abort(); /* no progress: a loop that never ends */
        if (left == 0 && fed < n) {
            at = in + fed;
            left = n - fed < chunk ? n - fed : chunk;
            fed += left;
        }
        size_t cap = OUT_CAP - total < piece ? OUT_CAP - total : piece;
        if (cap == 0)
            break;
        size_t before = left, made;
        sl_status st = sl_unzip_run(z, &at, &left, fed == n, out + total, cap, &made);
        if (made > cap || left > before)
            abort();
        if (st != SL_OK) {
            if (made != 0)
                abort(); /* bytes made come before the fault, never with it */
            *failed = true;
            break;
        }
        total += made;
        if (made == 0 && left == 0 && fed == n)
            break; /* every stream whole */
        if (made == 0 && left != 0)
            abort(); /* it must take input or make output */
    }
    sl_unzip_free(z);
    return total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    const uint8_t *in = data + 3;
    size_t n = size - 3;
    sl_unzip_kind kind;
    if (!sl_unzip_sniff(in, n, &kind))
        kind = (sl_unzip_kind)(data[0] % 4);
    size_t chunk = 1 + data[1] % 61, piece = 1 + data[2] % 97;
    uint8_t *a = sl_malloc(OUT_CAP), *b = sl_malloc(OUT_CAP);
    if (!a || !b)
        abort();
    bool fa, fb;
    size_t na = inflate_all(kind, in, n, n ? n : 1, OUT_CAP, a, &fa);
    size_t nb = inflate_all(kind, in, n, chunk, piece, b, &fb);
    /* Capped runs may stop at different places; within the cap they agree
     * on whether the bytes are whole, and whole ones on every byte. Damaged
     * ones may give more or less before the fault is seen (a decoder checks
     * a block's sum once it has inflated into the room it was given), but
     * never different bytes. libzstd 1.5.4 fed a frame in small pieces
     * misses that its empty last block falls short of the size its header
     * gave (whole, it says "Data corruption detected"): for zstd only the
     * bytes are compared (regress/unzip/zstd-short-frame-fed-in-pieces). */
    bool ends_told_apart = kind != SL_UNZIP_ZSTD;
    if (na < OUT_CAP && nb < OUT_CAP && ((ends_told_apart && fa != fb) || (!fa && !fb && na != nb)))
        abort();
    size_t common = na < nb ? na : nb;
    if (memcmp(a, b, common) != 0)
        abort();
    sl_free(a);
    sl_free(b);
    return 0;
}
