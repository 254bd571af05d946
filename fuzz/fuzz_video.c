/* fuzz/fuzz_video.c — video demux (mov, matroska, avi, mpegts through our
 * own I/O callbacks), frame choice with seeking, decode, scale, rotation, on
 * arbitrary bytes. The bounds are low so a fuzzer's "valid" 60000x60000
 * stream or a stream of a million frames is refused quickly, as the real
 * limits do. */
#include <stddef.h>
#include <stdint.h>

#include "sluice/video.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_video_params p = sl_video_default_params();
    p.max_frames = 4;
    p.fps = 1;
    p.image.max_edge = 64;
    p.image.max_input_pixels = 1u << 20;
    p.max_decoded_frames = 200;
    sl_video *v = NULL;
    if (sl_video_decode(data, size, "fuzz", &p, &v) == SL_OK) {
        /* What a decoded video promises: every frame's pixels are readable. */
        volatile uint8_t sum = 0;
        for (int i = 0; i < sl_video_n_frames(v); i++) {
            const sl_image *im = sl_video_frame(v, i);
            const uint8_t *px = sl_image_pixels(im);
            size_t n = (size_t)sl_image_width(im) * (size_t)sl_image_height(im) * 3;
            for (size_t k = 0; k < n; k += 61)
                sum ^= px[k];
        }
        (void)sum;
        sl_video_free(v);
    }
    return 0;
}
