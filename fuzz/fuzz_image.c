/* fuzz/fuzz_image.c — image decode (both paths: libjpeg-turbo and libvips),
 * shrink, orientation, and the JPEG re-encode of the openai engine and the
 * gallery, on arbitrary bytes. The pixel limit is low so a fuzzer's
 * "valid" 60000x60000 header is refused quickly, as the real limit does. */
#include <stddef.h>
#include <stdint.h>

#include "sluice/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_image_params p = sl_image_default_params();
    p.max_edge = 96;
    p.max_input_pixels = 4u << 20;
    sl_image *img = NULL;
    if (sl_image_decode(data, size, "fuzz", &p, &img) == SL_OK) {
        /* What a decoded image promises: its pixels are all readable. */
        const uint8_t *px = sl_image_pixels(img);
        size_t n = (size_t)sl_image_width(img) * (size_t)sl_image_height(img) * 3;
        volatile uint8_t sum = 0;
        for (size_t i = 0; i < n; i += 61)
            sum ^= px[i];
        (void)sum;
        uint8_t *jpeg = NULL;
        size_t len = 0;
        if (sl_image_encode_jpeg(img, 48, 80, &jpeg, &len) == SL_OK)
            sl_image_buffer_free(jpeg);
        sl_image_free(img);
    }
    return 0;
}
