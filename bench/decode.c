/* bench/decode.c — decode + resize throughput of sl_image_decode on one
 * thread, for bench/decode.py (which compares it with Pillow on the same
 * files).
 *
 *   decode MAX_EDGE SECONDS FILE...
 *
 * Every file is read into memory before the clock starts, then decoded
 * round-robin (longer edge shrunk to MAX_EDGE) until SECONDS have passed.
 * Prints one JSON line: images, seconds, images_per_s, and the output size
 * of the first file. sluice runs libvips with one thread per caller unless
 * VIPS_CONCURRENCY says otherwise, so this is a per-core figure. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bench.h"
#include "sluice/image.h"

typedef struct file {
    const char *path;
    unsigned char *data;
    size_t len;
} file;

static int read_all(file *f)
{
    FILE *fp = fopen(f->path, "rb");
    if (!fp || fseek(fp, 0, SEEK_END) != 0)
        return -1;
    long n = ftell(fp);
    rewind(fp);
    f->data = n > 0 ? malloc((size_t)n) : NULL;
    int ok = f->data && fread(f->data, 1, (size_t)n, fp) == (size_t)n;
    fclose(fp);
    f->len = (size_t)n;
    return ok ? 0 : -1;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: decode MAX_EDGE SECONDS FILE...\n");
        return 2;
    }
    sl_image_params params = sl_image_default_params();
    params.max_edge = atoi(argv[1]);
    double seconds = atof(argv[2]);
    int n_files = argc - 3;
    file *files = calloc((size_t)n_files, sizeof *files);
    if (!files)
        return 1;
    for (int i = 0; i < n_files; i++) {
        files[i].path = argv[3 + i];
        if (read_all(&files[i]) != 0) {
            fprintf(stderr, "decode bench: cannot read %s\n", files[i].path);
            return 1;
        }
    }
    int out_w = 0, out_h = 0;
    /* One untimed pass: starts libvips and faults in the code. */
    for (int i = 0; i < n_files; i++) {
        sl_image *im;
        if (sl_image_decode(files[i].data, files[i].len, files[i].path, &params, &im) != SL_OK) {
            fprintf(stderr, "decode bench: %s\n", sl_last_error());
            return 1;
        }
        if (i == 0) {
            out_w = sl_image_width(im);
            out_h = sl_image_height(im);
        }
        sl_image_free(im);
    }
    long images = 0;
    double t0 = bench_now(), t = t0;
    while (t - t0 < seconds) {
        const file *f = &files[images % n_files];
        sl_image *im;
        if (sl_image_decode(f->data, f->len, f->path, &params, &im) != SL_OK) {
            fprintf(stderr, "decode bench: %s\n", sl_last_error());
            return 1;
        }
        sl_image_free(im);
        images++;
        t = bench_now();
    }
    printf("{\"images\": %ld, \"seconds\": %.4f, \"images_per_s\": %.2f, \"width\": %d, "
           "\"height\": %d}\n",
           images, t - t0, (double)images / (t - t0), out_w, out_h);
    for (int i = 0; i < n_files; i++)
        free(files[i].data);
    free(files);
    return 0;
}
