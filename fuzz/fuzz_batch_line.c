/* fuzz/fuzz_batch_line.c — one line of an OpenAI batch file (io/batch_line.h)
 * on arbitrary bytes: what a parsed request promises (its messages' parts
 * cover every part once, image parts match the image URLs, every string is
 * readable), and the data: URL decoder on each image URL, round-tripped
 * through the encoder. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/alloc.h"
#include "core/data_url.h"
#include "io/batch_line.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void touch(const char *s)
{
    volatile size_t n = s ? strlen(s) : 0;
    (void)n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_batch_req req;
    char err[512];
    sl_status st = sl_batch_parse((const char *)data, size, &req, err, sizeof err);
    touch(req.custom_id);
    if (st != SL_OK) {
        touch(err);
        if (req.body || req.messages || req.n_images)
            __builtin_trap(); /* a failed line keeps only its custom_id */
        sl_batch_req_clear(&req);
        return 0;
    }
    int parts = 0, images = 0;
    for (int m = 0; m < req.n_messages; m++) {
        const sl_message *msg = &req.messages[m];
        touch(msg->role);
        if (msg->parts != req.parts + parts)
            __builtin_trap();
        for (int k = 0; k < msg->n_parts; k++) {
            touch(msg->parts[k].text);
            images += !msg->parts[k].text;
        }
        parts += msg->n_parts;
    }
    if (parts != req.n_parts || images != req.n_images || req.n_images > SL_MAX_IMAGES)
        __builtin_trap();
    for (int i = 0; i < req.n_stop; i++)
        touch(req.stop[i]);
    touch(req.model);
    touch(req.json_schema);
    touch(req.last_user_text);
    for (int i = 0; i < req.n_images; i++) {
        uint8_t *bytes;
        size_t len;
        if (sl_batch_data_url_decode(req.images[i], &bytes, &len, err, sizeof err) != SL_OK)
            continue;
        /* Encoding and decoding again gives the same bytes. */
        char *url = sl_data_url(bytes, len, "image/png", NULL);
        uint8_t *again;
        size_t len2;
        if (url && sl_batch_data_url_decode(url, &again, &len2, err, sizeof err) == SL_OK) {
            if (len2 != len || memcmp(again, bytes, len) != 0)
                __builtin_trap();
            sl_free(again);
        }
        sl_free(url);
        sl_free(bytes);
    }
    sl_batch_req_clear(&req);
    return 0;
}
