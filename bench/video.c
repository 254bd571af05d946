/* bench/video.c — the cost of one video's frames: sl_video_decode of a
 * 10 s 640x360 H.264 clip at 30 fps with the default parameters (8 frames
 * at the middles of 8 spans, longer edge 512), one thread.
 *
 *   video [RUNS] [FILE...]
 *
 * Without files it makes two clips with the ffmpeg CLI (testsrc2, moving
 * content; x264 default preset): keyframes every second (-g 30, as phones
 * and cameras write) and x264's default (-g 250: one keyframe in 8.3 s, so
 * most targets are reached by decoding forward). Each file is read into
 * memory, decoded once untimed, then RUNS times (default 5). Prints one
 * JSON line: per file, the median wall and CPU milliseconds per video and
 * the frames taken. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "sluice/video.h"

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp || fseek(fp, 0, SEEK_END) != 0) {
        if (fp)
            fclose(fp);
        return NULL;
    }
    long n = ftell(fp);
    rewind(fp);
    unsigned char *data = n > 0 ? malloc((size_t)n) : NULL;
    if (data && fread(data, 1, (size_t)n, fp) != (size_t)n) {
        free(data);
        data = NULL;
    }
    fclose(fp);
    *len = (size_t)n;
    return data;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Prints `"label": {...}` for one file; 0 on success. */
static int bench_file(const char *label, const char *path, int runs)
{
    size_t len;
    unsigned char *data = read_all(path, &len);
    if (!data) {
        fprintf(stderr, "video bench: cannot read %s\n", path);
        return 1;
    }
    sl_video_params p = sl_video_default_params();
    sl_video *v;
    if (sl_video_decode(data, len, path, &p, &v) != SL_OK) { /* untimed: faults in the code */
        fprintf(stderr, "video bench: %s\n", sl_last_error());
        free(data);
        return 1;
    }
    int frames = sl_video_n_frames(v), w = sl_image_width(sl_video_frame(v, 0)),
        h = sl_image_height(sl_video_frame(v, 0));
    sl_video_free(v);
    double wall[64], cpu[64];
    for (int r = 0; r < runs; r++) {
        double t0 = bench_now(), c0 = bench_cpu_s();
        sl_status st = sl_video_decode(data, len, path, &p, &v);
        wall[r] = (bench_now() - t0) * 1e3;
        cpu[r] = (bench_cpu_s() - c0) * 1e3;
        if (st != SL_OK) {
            fprintf(stderr, "video bench: %s\n", sl_last_error());
            free(data);
            return 1;
        }
        sl_video_free(v);
    }
    free(data);
    printf("\"%s\": {\"bytes\": %zu, \"frames\": %d, \"width\": %d, \"height\": %d, "
           "\"ms_per_video\": %.2f, \"cpu_ms_per_video\": %.2f}",
           label, len, frames, w, h, median(wall, runs), median(cpu, runs));
    return 0;
}

int main(int argc, char **argv)
{
    int runs = argc > 1 ? atoi(argv[1]) : 5;
    if (runs < 1 || runs > 64) {
        fprintf(stderr, "usage: video [RUNS (1..64)] [FILE...]\n");
        return 2;
    }
    int rc = 0;
    printf("{\"runs\": %d, ", runs);
    if (argc > 2) {
        for (int i = 2; i < argc && rc == 0; i++) {
            rc = bench_file(argv[i], argv[i], runs);
            fputs(i + 1 < argc ? ", " : "", stdout);
        }
    } else {
        char dir[] = "/tmp/sluice-bench-video-XXXXXX";
        if (!mkdtemp(dir))
            return 1;
        static const struct {
            const char *label, *gop;
        } clips[] = {{"h264_640x360_30fps_10s_g30", "30"}, {"h264_640x360_30fps_10s_g250", "250"}};
        for (int i = 0; i < 2 && rc == 0; i++) {
            char path[512], cmd[1024];
            snprintf(path, sizeof path, "%s/%s.mp4", dir, clips[i].label);
            snprintf(cmd, sizeof cmd,
                     "ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=s=640x360:r=30:d=10 "
                     "-pix_fmt yuv420p -c:v libx264 -g %s %s",
                     clips[i].gop, path);
            if (system(cmd) != 0) {
                fprintf(stderr, "video bench: cannot make the clip (is ffmpeg installed?)\n");
                rc = 1;
                break;
            }
            rc = bench_file(clips[i].label, path, runs);
            fputs(i == 0 ? ", " : "", stdout);
            unlink(path);
        }
        rmdir(dir);
    }
    printf("}\n");
    return rc;
}
