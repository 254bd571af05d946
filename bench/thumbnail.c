/* bench/thumbnail — what a gallery thumbnail costs next to the decode it
 * follows: for each sample image, the median time of sl_image_load_file at
 * the default --max-image-edge (512) and of sl_image_encode_jpeg of that
 * image to a 160 px, quality 70 JPEG (what the decode stage makes for the
 * live page and the report). Prints a line per image, then (last line) one
 * JSON object: the mean of both and their ratio. Not a test: compare the
 * two figures from the same run.
 *
 *   build/bench/thumbnail [samples-dir]   (default: samples) */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sluice/image.h"

enum { RUNS = 15 };

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v)
{
    qsort(v, RUNS, sizeof *v, cmp);
    return v[RUNS / 2];
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "samples";
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "thumbnail: cannot open %s\n", dir);
        return 1;
    }
    sl_image_params ip = sl_image_default_params();
    ip.max_edge = 512;
    double sum_decode = 0, sum_thumb = 0, sum_bytes = 0;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 4, ".jpg") != 0)
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        double dec[RUNS], th[RUNS];
        size_t bytes = 0;
        for (int r = 0; r < RUNS; r++) {
            sl_image *img;
            double t0 = now_ms();
            if (sl_image_load_file(path, &ip, &img) != SL_OK) {
                fprintf(stderr, "thumbnail: %s\n", sl_last_error());
                return 1;
            }
            double t1 = now_ms();
            uint8_t *jpeg;
            if (sl_image_encode_jpeg(img, 160, 70, &jpeg, &bytes) != SL_OK) {
                fprintf(stderr, "thumbnail: %s\n", sl_last_error());
                return 1;
            }
            th[r] = now_ms() - t1;
            dec[r] = t1 - t0;
            sl_image_buffer_free(jpeg);
            sl_image_free(img);
        }
        double md = median(dec), mt = median(th);
        printf("%-16s decode %.2f ms, thumbnail %.2f ms (%zu bytes)\n", e->d_name, md, mt, bytes);
        sum_decode += md;
        sum_thumb += mt;
        sum_bytes += (double)bytes;
        n++;
    }
    closedir(d);
    if (!n) {
        fprintf(stderr, "thumbnail: no .jpg in %s\n", dir);
        return 1;
    }
    printf("{\"images\": %d, \"decode_ms\": %.3f, \"thumbnail_ms\": %.3f, "
           "\"thumbnail_over_decode\": %.3f, \"thumbnail_bytes\": %.0f}\n",
           n, sum_decode / n, sum_thumb / n, sum_thumb / sum_decode, sum_bytes / n);
    return 0;
}
