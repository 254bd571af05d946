/* Unit tests: image/video.c — which frames are taken, their colours, times,
 * size and rotation, from each accepted container; and the errors for bad
 * input and bounds. The videos are made here with the ffmpeg CLI (a
 * required package): 4 s of solid colours, 1 s each (red, green, blue,
 * white), 64x48 at 10 fps, so a frame's colour says which second it is from. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "sluice/log.h"
#include "sluice/video.h"
#include "test_frames.h"
#include "test_util.h"

static char dir[256];

typedef struct blob {
    uint8_t *data;
    size_t len;
} blob;

static void sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (system(cmd) != 0)
        fail_msg("fixture command failed: %s", cmd);
}

/* A fixture's path; four in a row may be used at once. */
static const char *fixture(const char *name)
{
    static _Thread_local char paths[4][512];
    static _Thread_local int next;
    char *path = paths[next++ % 4];
    snprintf(path, 512, "%s/%s", dir, name);
    return path;
}

static blob slurp(const char *name)
{
    blob b = {0};
    FILE *fp = fopen(fixture(name), "rb");
    if (!fp)
        fail_msg("cannot open fixture %s", name);
    fseek(fp, 0, SEEK_END);
    b.len = (size_t)ftell(fp);
    rewind(fp);
    b.data = malloc(b.len ? b.len : 1);
    if (fread(b.data, 1, b.len, fp) != b.len)
        fail_msg("cannot read fixture %s", name);
    fclose(fp);
    return b;
}

/* Four 1 s spans of red, green, blue and white, joined. */
#define INPUTS                                                                                     \
    "-f lavfi -i color=red:s=64x48:r=10:d=1 -f lavfi -i color=green:s=64x48:r=10:d=1 "             \
    "-f lavfi -i color=blue:s=64x48:r=10:d=1 -f lavfi -i color=white:s=64x48:r=10:d=1 "
#define CONCAT "[0][1][2][3]concat=n=4:v=1:a=0"
#define COLOURS INPUTS "-filter_complex '" CONCAT "' -pix_fmt yuv420p"
#define FF "ffmpeg -nostdin -v error -y "

static int make_fixtures(void **state)
{
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    /* Keyframes every second (no scene-cut keyframes: -sc_threshold 0). */
    sh(FF COLOURS " -c:v libx264 -g 10 -sc_threshold 0 %s", fixture("g10.mp4"));
    /* Only the first frame a keyframe. */
    sh(FF COLOURS " -c:v libx264 -g 40 -sc_threshold 0 %s", fixture("g40.mp4"));
    sh(FF COLOURS " -c:v libvpx-vp9 -g 10 %s", fixture("colours.webm"));
    sh(FF COLOURS " -c:v mpeg4 -g 10 %s", fixture("colours.avi"));
    sh(FF COLOURS " -c:v libx264 -g 10 -sc_threshold 0 %s", fixture("colours.ts"));
    /* moov first, so a cut file still has its index; noise makes the
     * frames, not the index, most of the file. */
    sh(FF INPUTS "-filter_complex '" CONCAT ",noise=alls=12:allf=t+u' -pix_fmt yuv420p "
                 "-c:v libx264 -g 10 -sc_threshold 0 -movflags +faststart %s",
       fixture("faststart.mp4"));
    /* Matroska written to a pipe: no duration in the file. */
    sh(FF COLOURS " -c:v libvpx-vp9 -g 10 -f matroska - > %s", fixture("noduration.mkv"));
    /* One frame a second: red, green, blue, white. */
    sh(FF INPUTS "-filter_complex '" CONCAT ",fps=1' -pix_fmt yuv420p -c:v libx264 %s",
       fixture("1fps.mp4"));
    /* 12 s: red, green, blue, 4 s each; keyframes every second. */
    static const char *const long_codecs[][2] = {
        {"s12.mp4", "-c:v libx264 -sc_threshold 0"}, {"s12.webm", "-c:v libvpx-vp9"},
        {"s12.avi", "-c:v mpeg4"}, {"s12.ts", "-c:v libx264 -sc_threshold 0"}};
    for (int i = 0; i < 4; i++)
        sh(FF "-f lavfi -i color=red:s=64x48:r=10:d=4 -f lavfi -i color=green:s=64x48:r=10:d=4 "
              "-f lavfi -i color=blue:s=64x48:r=10:d=4 "
              "-filter_complex '[0][1][2]concat=n=3:v=1:a=0' -pix_fmt yuv420p -g 10 %s %s",
           long_codecs[i][1], fixture(long_codecs[i][0]));
    /* The MP4's H.264 stream as it is, in MPEG-TS. */
    sh(FF "-i %s -c copy %s", fixture("s12.mp4"), fixture("s12copy.ts"));
    /* Left half red, right half blue; then the display matrix of a 90 and
     * a 270 degree rotation (ffmpeg 5.1 writes it on a stream copy). */
    sh(FF "-f lavfi -i color=red:s=32x48:r=10:d=1 -f lavfi -i color=blue:s=32x48:r=10:d=1 "
          "-filter_complex '[0][1]hstack' -pix_fmt yuv420p -c:v libx264 %s",
       fixture("halves.mp4"));
    sh(FF "-i %s -c copy -metadata:s:v:0 rotate=90 %s", fixture("halves.mp4"),
       fixture("rot90.mp4"));
    sh(FF "-i %s -c copy -metadata:s:v:0 rotate=270 %s", fixture("halves.mp4"),
       fixture("rot270.mp4"));
    sh(FF "-i %s -c copy -metadata:s:v:0 rotate=180 %s", fixture("halves.mp4"),
       fixture("rot180.mp4"));
    /* Images: not videos. */
    sh(FF "-f lavfi -i color=red:s=64x48:r=10:d=1 %s", fixture("anim.gif"));
    sh(FF "-f lavfi -i color=red:s=64x48 -frames:v 1 %s", fixture("still.jpg"));
    /* Sound alone, and sound with a cover picture (an attached still). */
    sh(FF "-f lavfi -i sine=d=1 -c:a aac %s", fixture("audio.mp4"));
    sh(FF "-i %s -i %s -map 0 -map 1 -c copy -disposition:v:0 attached_pic %s",
       fixture("audio.mp4"), fixture("still.jpg"), fixture("cover.mp4"));
    return 0;
}

static int remove_fixtures(void **state)
{
    tu_rmtree(dir);
    return 0;
}

static const uint8_t *centre(const sl_image *im)
{
    int x = sl_image_width(im) / 2, y = sl_image_height(im) / 2;
    return sl_image_pixels(im) + ((size_t)y * sl_image_width(im) + x) * 3;
}

static const uint8_t *at(const sl_image *im, int x, int y)
{
    return sl_image_pixels(im) + ((size_t)y * sl_image_width(im) + x) * 3;
}

/* Within 40 of each channel of `rgb` (YUV 4:2:0 and a lossy codec). */
static void assert_colour(const uint8_t *px, uint32_t rgb, const char *what)
{
    int want[3] = {(int)(rgb >> 16) & 255, (int)(rgb >> 8) & 255, (int)rgb & 255};
    for (int c = 0; c < 3; c++)
        if (abs(px[c] - want[c]) > 40)
            fail_msg("%s: pixel %d,%d,%d, expected about %06x", what, px[0], px[1], px[2], rgb);
}

enum { RED = 0xff0000, GREEN = 0x008000, BLUE = 0x0000ff, WHITE = 0xffffff };
static const uint32_t second_colour[4] = {RED, GREEN, BLUE, WHITE};

static sl_video *decode(const char *name, const sl_video_params *p)
{
    blob b = slurp(name);
    sl_video *v = NULL;
    sl_status st = sl_video_decode(b.data, b.len, name, p, &v);
    free(b.data);
    if (st != SL_OK)
        fail_msg("%s: %s", name, sl_last_error());
    return v;
}

static sl_video_params params(int max_frames, double fps)
{
    sl_video_params p = sl_video_default_params();
    p.max_frames = max_frames;
    p.fps = fps;
    p.image.max_edge = 0;
    return p;
}

/* The frame taken for a target is the first at or after it: at 10 fps, the
 * next tenth of a second. */
static double first_frame_at_or_after(double t) { return ceil(t * 10 - 1e-6) / 10; }

static void assert_frames(const sl_video *v, const char *name, int n, const double *targets)
{
    if (sl_video_n_frames(v) != n)
        fail_msg("%s: %d frames, expected %d", name, sl_video_n_frames(v), n);
    for (int i = 0; i < n; i++) {
        double want = first_frame_at_or_after(targets[i]);
        double got = sl_video_frame_time(v, i);
        if (fabs(got - want) > 0.011)
            fail_msg("%s: frame %d at %.3f s, expected %.3f s", name, i, got, want);
        char what[128];
        snprintf(what, sizeof what, "%s frame %d (%.2f s)", name, i, got);
        assert_colour(centre(sl_video_frame(v, i)), second_colour[(int)floor(want + 1e-6)], what);
    }
}

static const char *const containers[][3] = {
    {"g10.mp4", "mp4", "h264"},
    {"colours.webm", "webm", "vp9"},
    {"colours.avi", "avi", "mpeg4"},
    {"colours.ts", "mpegts", "h264"},
};

static void one_frame_a_second_from_each_container(void **state)
{
    for (size_t c = 0; c < sizeof containers / sizeof *containers; c++) {
        const char *name = containers[c][0];
        sl_video_params p = params(8, 1);
        sl_video *v = decode(name, &p);
        /* 4 s at 1 fps: 4 spans, their middles. */
        const double targets[] = {0.5, 1.5, 2.5, 3.5};
        assert_frames(v, name, 4, targets);
        if (fabs(sl_video_duration(v) - 4.0) > 0.05)
            fail_msg("%s: duration %.3f, expected 4", name, sl_video_duration(v));
        assert_int_equal(sl_video_source_width(v), 64);
        assert_int_equal(sl_video_source_height(v), 48);
        assert_int_equal(sl_image_width(sl_video_frame(v, 0)), 64);
        assert_int_equal(sl_image_height(sl_video_frame(v, 0)), 48);
        assert_string_equal(sl_video_container(v), containers[c][1]);
        assert_string_equal(sl_video_codec(v), containers[c][2]);
        assert_true(sl_video_bytes(v) >= 4u * 64 * 48 * 3);
        sl_video_free(v);
    }
}

static void max_frames_cuts_fewer_longer_spans(void **state)
{
    for (size_t c = 0; c < sizeof containers / sizeof *containers; c++) {
        const char *name = containers[c][0];
        sl_video_params p = params(2, 1);
        sl_video *v = decode(name, &p);
        const double two[] = {1.0, 3.0}; /* green's first frame, white's first */
        assert_frames(v, name, 2, two);
        sl_video_free(v);

        p = params(3, 0); /* fps 0: max_frames spans */
        v = decode(name, &p);
        const double three[] = {4.0 / 6, 2.0, 4.0 * 5 / 6};
        assert_frames(v, name, 3, three);
        sl_video_free(v);
    }
}

static void fps_sets_the_count_under_max_frames(void **state)
{
    /* 4 s at 0.5 fps: ceil(2) = 2 spans; at 0.6 fps: ceil(2.4) = 3. */
    sl_video_params p = params(8, 0.5);
    sl_video *v = decode("g10.mp4", &p);
    const double two[] = {1.0, 3.0};
    assert_frames(v, "g10.mp4", 2, two);
    sl_video_free(v);
    p = params(8, 0.6);
    v = decode("g10.mp4", &p);
    const double three[] = {4.0 / 6, 2.0, 4.0 * 5 / 6};
    assert_frames(v, "g10.mp4", 3, three);
    sl_video_free(v);
    /* 2 fps over 4 s would be 8; max_frames 16 allows them all. */
    p = params(16, 2);
    v = decode("colours.webm", &p);
    const double eight[] = {0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75};
    assert_frames(v, "colours.webm", 8, eight);
    sl_video_free(v);
}

/* Spans 3 s apart: each target is reached by seeking to the keyframe
 * before it (1 s before), so about 4 x 10 frames are decoded, not the 105
 * up to the last target; and the frame is the one at the target, also in
 * MPEG-TS, whose seek can land past the keyframe. */
static void seeks_land_on_the_frame_at_each_target(void **state)
{
    static const char *const names[] = {"s12.mp4", "s12.webm", "s12.avi", "s12.ts"};
    static const uint32_t colour[] = {RED, GREEN, GREEN, BLUE};
    for (int c = 0; c < 4; c++) {
        sl_video_params p = params(4, 0);
        p.max_decoded_frames = 80;
        sl_video *v = decode(names[c], &p);
        assert_int_equal(sl_video_n_frames(v), 4);
        for (int i = 0; i < 4; i++) {
            double want = 1.5 + 3 * i;
            if (fabs(sl_video_frame_time(v, i) - want) > 0.011)
                fail_msg("%s: frame %d at %.3f s, expected %.3f s", names[c], i,
                         sl_video_frame_time(v, i), want);
            assert_colour(centre(sl_video_frame(v, i)), colour[i], names[c]);
        }
        sl_video_free(v);
    }
}

/* 8 spans of 0.5 s over 4 frames, 1 s apart: each frame is the first at or
 * after two targets and is taken once; past 3.0 s the stream has ended and
 * its last frame is taken already. So 3 frames: the red one at 0 s is never
 * at or after a target. */
/* The same coded frames found through MP4's index and through MPEG-TS's
 * search by timestamp: the same frames, pixel for pixel, at the same times;
 * with 16 targets 0.75 s apart (MPEG-TS decodes forward) and 4 targets 3 s
 * apart (both seek). */
static void same_stream_in_mp4_and_ts_gives_the_same_frames(void **state)
{
    const sl_video_params ps[] = {params(16, 2), params(4, 0)};
    for (int k = 0; k < 2; k++) {
        sl_video *a = decode("s12.mp4", &ps[k]), *b = decode("s12copy.ts", &ps[k]);
        int n = ps[k].max_frames;
        assert_int_equal(sl_video_n_frames(a), n);
        assert_int_equal(sl_video_n_frames(b), n);
        for (int i = 0; i < n; i++) {
            assert_true(fabs(sl_video_frame_time(a, i) - sl_video_frame_time(b, i)) < 1e-6);
            assert_memory_equal(sl_image_pixels(sl_video_frame(a, i)),
                                sl_image_pixels(sl_video_frame(b, i)), 64 * 48 * 3);
        }
        sl_video_free(a);
        sl_video_free(b);
    }
}

static void frames_sparser_than_spans_are_taken_once(void **state)
{
    sl_video_params p = params(8, 2);
    sl_video *v = decode("1fps.mp4", &p);
    assert_int_equal(sl_video_n_frames(v), 3);
    for (int i = 0; i < 3; i++) {
        assert_true(fabs(sl_video_frame_time(v, i) - (i + 1)) < 1e-6);
        assert_colour(centre(sl_video_frame(v, i)), second_colour[i + 1], "1fps.mp4");
    }
    assert_true(fabs(sl_video_duration(v) - 4.0) < 0.01);
    sl_video_free(v);
}

static void unknown_duration_takes_a_frame_every_1_over_fps(void **state)
{
    sl_video_params p = params(3, 1);
    sl_video *v = decode("noduration.mkv", &p);
    const double targets[] = {0, 1, 2};
    assert_frames(v, "noduration.mkv", 3, targets);
    /* Neither the stream nor the file says: the last frame decoded. */
    assert_true(sl_video_duration(v) >= 2.0 - 1e-6 && sl_video_duration(v) < 3.0);
    sl_video_free(v);

    /* More frames asked than seconds: it stops at the stream's end. */
    p = params(16, 1);
    v = decode("noduration.mkv", &p);
    const double four[] = {0, 1, 2, 3};
    assert_frames(v, "noduration.mkv", 4, four);
    sl_video_free(v);
}

static void max_edge_shrinks_the_longer_edge(void **state)
{
    sl_video_params p = params(2, 1);
    p.image.max_edge = 32;
    sl_video *v = decode("g10.mp4", &p);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(sl_image_width(sl_video_frame(v, i)), 32);
        assert_int_equal(sl_image_height(sl_video_frame(v, i)), 24);
    }
    assert_colour(centre(sl_video_frame(v, 0)), GREEN, "shrunk frame 0");
    assert_int_equal(sl_video_source_width(v), 64);
    assert_int_equal(sl_video_source_height(v), 48);
    sl_video_free(v);
    /* Never enlarged. */
    p.image.max_edge = 500;
    v = decode("g10.mp4", &p);
    assert_int_equal(sl_image_width(sl_video_frame(v, 0)), 64);
    sl_video_free(v);
}

/* The first frame as the ffmpeg CLI shows it (it applies the display
 * matrix itself): the reference for our rotation. */
static uint8_t *ffmpeg_frame(const char *name, int w, int h)
{
    char out[600];
    snprintf(out, sizeof out, "%s.rgb", fixture(name));
    sh(FF "-i %s -frames:v 1 -f rawvideo -pix_fmt rgb24 %s", fixture(name), out);
    FILE *fp = fopen(out, "rb");
    assert_non_null(fp);
    uint8_t *px = malloc((size_t)w * h * 3);
    size_t got = fread(px, 1, (size_t)w * h * 3, fp);
    int extra = fgetc(fp);
    fclose(fp);
    if (got != (size_t)w * h * 3 || extra != EOF)
        fail_msg("%s: ffmpeg's frame is not %dx%d", name, w, h);
    return px;
}

static void rotation_is_applied(void **state)
{
    static const struct {
        const char *name;
        int w, h;
        uint32_t top, bottom, left, right; /* the halves' colours as shown */
    } cases[] = {
        {"halves.mp4", 64, 48, 0, 0, RED, BLUE},
        /* ffmpeg 5.1's rotate=90 on a stream copy stores a matrix turning
         * the picture a quarter counter-clockwise: the right half on top. */
        {"rot90.mp4", 48, 64, BLUE, RED, 0, 0},
        {"rot270.mp4", 48, 64, RED, BLUE, 0, 0},
        {"rot180.mp4", 64, 48, 0, 0, BLUE, RED},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        sl_video_params p = params(1, 1);
        sl_video *v = decode(cases[c].name, &p);
        const sl_image *im = sl_video_frame(v, 0);
        int w = cases[c].w, h = cases[c].h;
        assert_int_equal(sl_image_width(im), w);
        assert_int_equal(sl_image_height(im), h);
        assert_int_equal(sl_video_source_width(v), w);
        assert_int_equal(sl_video_source_height(v), h);
        if (cases[c].top) {
            assert_colour(at(im, w / 2, h / 4), cases[c].top, cases[c].name);
            assert_colour(at(im, w / 2, 3 * h / 4), cases[c].bottom, cases[c].name);
        } else {
            assert_colour(at(im, w / 4, h / 2), cases[c].left, cases[c].name);
            assert_colour(at(im, 3 * w / 4, h / 2), cases[c].right, cases[c].name);
        }
        /* The same quadrants as ffmpeg's own rotation. */
        uint8_t *ref = ffmpeg_frame(cases[c].name, w, h);
        for (int qy = 1; qy < 4; qy += 2)
            for (int qx = 1; qx < 4; qx += 2) {
                const uint8_t *a = at(im, qx * w / 4, qy * h / 4);
                const uint8_t *b = ref + ((size_t)(qy * h / 4) * w + qx * w / 4) * 3;
                for (int k = 0; k < 3; k++)
                    if (abs(a[k] - b[k]) > 24)
                        fail_msg("%s: quadrant %d,%d differs from ffmpeg's", cases[c].name, qx,
                                 qy);
            }
        free(ref);
        sl_video_free(v);
    }
    /* Shrunk and turned: the longer edge (now the height) is max_edge. */
    sl_video_params p = params(1, 1);
    p.image.max_edge = 32;
    sl_video *v = decode("rot270.mp4", &p);
    assert_int_equal(sl_image_width(sl_video_frame(v, 0)), 24);
    assert_int_equal(sl_image_height(sl_video_frame(v, 0)), 32);
    assert_colour(at(sl_video_frame(v, 0), 12, 8), RED, "rot270 shrunk");
    sl_video_free(v);
}

static void expect_failure(const void *data, size_t len, const char *name,
                           const sl_video_params *p, sl_status want, const char *needle)
{
    sl_video *v = (sl_video *)1;
    sl_status st = sl_video_decode(data, len, name, p, &v);
    if (st != want)
        fail_msg("%s: status %s (%s), expected %s", name, sl_status_name(st), sl_last_error(),
                 sl_status_name(want));
    assert_null(v);
    if (strncmp(sl_last_error(), name, strlen(name)) != 0 || !strstr(sl_last_error(), needle))
        fail_msg("%s: message '%s' does not name the input and '%s'", name, sl_last_error(),
                 needle);
}

static void too_many_pixels_is_refused_before_decoding(void **state)
{
    blob b = slurp("g10.mp4");
    sl_video_params p = params(4, 1);
    p.image.max_input_pixels = 64 * 48 - 1;
    expect_failure(b.data, b.len, "big.mp4", &p, SL_ERR_TOO_LARGE, "64x48 pixels exceeds");
    p.image.max_input_pixels = 64 * 48;
    sl_video *v;
    assert_int_equal(sl_video_decode(b.data, b.len, "fits.mp4", &p, &v), SL_OK);
    sl_video_free(v);
    free(b.data);
}

static void max_decoded_frames_bounds_the_work(void **state)
{
    /* Keyframes every second: frames at 1.0 and 3.0 need about 11 frames to
     * reach the first and one after seeking to the second, well under 20. */
    sl_video_params p = params(2, 1);
    p.max_decoded_frames = 20;
    sl_video *v = decode("g10.mp4", &p);
    assert_int_equal(sl_video_n_frames(v), 2);
    sl_video_free(v);
    /* One keyframe: 3.0 s is 30 frames of decoding from the start. */
    blob b = slurp("g40.mp4");
    expect_failure(b.data, b.len, "g40.mp4", &p, SL_ERR_DECODE, "max_decoded_frames");
    p.max_decoded_frames = 5; /* not even to 0.5 s */
    p.max_frames = 8;
    expect_failure(b.data, b.len, "g40.mp4", &p, SL_ERR_DECODE, "max_decoded_frames");
    /* Unbounded enough, the same file gives its frames. */
    p.max_decoded_frames = 100;
    assert_int_equal(sl_video_decode(b.data, b.len, "g40.mp4", &p, &v), SL_OK);
    const double targets[] = {0.5, 1.5, 2.5, 3.5};
    assert_frames(v, "g40.mp4", 4, targets);
    sl_video_free(v);
    free(b.data);
}

/* stderr to a file while `fn` runs; returns how many bytes were written. */
static long stderr_bytes_during(void (*fn)(void))
{
    char path[600];
    snprintf(path, sizeof path, "%s/stderr.txt", dir);
    fflush(stderr);
    int saved = dup(2);
    FILE *fp = fopen(path, "w+");
    assert_non_null(fp);
    dup2(fileno(fp), 2);
    fn();
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    if (n > 0) { /* say what it was */
        char text[512] = "";
        rewind(fp);
        size_t got = fread(text, 1, sizeof text - 1, fp);
        text[got] = '\0';
        print_message("stderr had: %s\n", text);
    }
    fclose(fp);
    return n;
}

static int debug_lines;
static void count_lines(sl_log_level level, const char *message, void *user)
{
    if (strstr(message, "ffmpeg:"))
        debug_lines++;
}

/* Every cut of every fixture: frames or a decode error naming the input,
 * never a crash (the ASan build runs this too). */
static void decode_cut_files(void)
{
    static const char *const names[] = {"g10.mp4", "faststart.mp4", "colours.webm",
                                        "colours.avi", "colours.ts"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        blob b = slurp(names[i]);
        for (int pct = 5; pct < 100; pct += 5) {
            size_t len = b.len * (size_t)pct / 100;
            uint8_t *cut = malloc(len); /* exactly len bytes: ASan sees a read past it */
            memcpy(cut, b.data, len);
            sl_video *v = NULL;
            sl_status st = sl_video_decode(cut, len, names[i], NULL, &v);
            if (st == SL_OK) {
                assert_true(sl_video_n_frames(v) >= 1);
                sl_video_free(v);
            } else if (st != SL_ERR_DECODE || strncmp(sl_last_error(), names[i],
                                                      strlen(names[i])) != 0) {
                fail_msg("%s cut at %d%%: %s: %s", names[i], pct, sl_status_name(st),
                         sl_last_error());
            }
            free(cut);
        }
        free(b.data);
    }
}

static void truncated_files_give_frames_or_a_decode_error(void **state)
{
    /* moov at the end: the first 30% has no index. */
    blob b = slurp("g10.mp4");
    expect_failure(b.data, b.len * 3 / 10, "cut.mp4", NULL, SL_ERR_DECODE,
                   "cannot read the container");
    free(b.data);
    /* moov first: the first 30% holds the first second or less. */
    b = slurp("faststart.mp4");
    sl_video *v;
    sl_video_params p = params(8, 1);
    assert_int_equal(sl_video_decode(b.data, b.len * 3 / 10, "cut.mp4", &p, &v), SL_OK);
    assert_true(sl_video_n_frames(v) >= 1);
    assert_colour(centre(sl_video_frame(v, 0)), RED, "cut faststart frame 0");
    sl_video_free(v);
    free(b.data);

    /* FFmpeg's complaints go to sluice's log at debug level, never to stderr. */
    sl_log_level level = sl_log_get_level();
    sl_log_set_level(SL_LOG_DEBUG);
    sl_log_set_callback(count_lines, NULL);
    debug_lines = 0;
    assert_int_equal(stderr_bytes_during(decode_cut_files), 0);
    assert_true(debug_lines > 0);
    sl_log_set_callback(NULL, NULL);
    sl_log_set_level(level);
    /* And with the default level, nothing either. */
    assert_int_equal(stderr_bytes_during(decode_cut_files), 0);
}

static void bad_inputs_fail_with_named_errors(void **state)
{
    uint8_t noise[4096];
    srand(7);
    for (size_t i = 0; i < sizeof noise; i++)
        noise[i] = (uint8_t)(rand() >> 7);
    noise[0] = 0x00; /* not by chance an MPEG-TS sync byte */
    expect_failure(noise, sizeof noise, "noise.bin", NULL, SL_ERR_DECODE, "not a video");
    expect_failure(noise, 0, "empty.mp4", NULL, SL_ERR_DECODE, "empty");
    /* Each container's magic followed by noise: its demuxer refuses it. */
    static const struct {
        const char *name;
        const char *magic;
        size_t len;
    } heads[] = {
        {"noise.mp4", "\0\0\0\x18" "ftypisom\0\0\0\0isommp41", 24},
        {"noise.mkv", "\x1a\x45\xdf\xa3", 4},
        {"noise.avi", "RIFF\x10\0\0\0AVI LIST", 16},
        {"noise.ts", "\x47", 1},
    };
    for (size_t i = 0; i < sizeof heads / sizeof *heads; i++) {
        uint8_t buf[sizeof noise];
        memcpy(buf, noise, sizeof buf);
        memcpy(buf, heads[i].magic, heads[i].len);
        expect_failure(buf, sizeof buf, heads[i].name, NULL, SL_ERR_DECODE, "");
    }
    /* Images are not videos. */
    const char *images[] = {"anim.gif", "still.jpg"};
    for (int i = 0; i < 2; i++) {
        blob b = slurp(images[i]);
        assert_false(sl_video_sniff(b.data, b.len));
        expect_failure(b.data, b.len, images[i], NULL, SL_ERR_DECODE, "not a video");
        free(b.data);
    }
    blob a = slurp("audio.mp4");
    expect_failure(a.data, a.len, "audio.mp4", NULL, SL_ERR_DECODE, "no video stream");
    free(a.data);
    a = slurp("cover.mp4");
    expect_failure(a.data, a.len, "cover.mp4", NULL, SL_ERR_DECODE,
                   "no video stream (only a cover picture)");
    free(a.data);
    /* Parameters. */
    blob b = slurp("g10.mp4");
    sl_video_params p = params(0, 1);
    expect_failure(b.data, b.len, "p.mp4", &p, SL_ERR_INVALID_ARG, "max_frames");
    p = params(SL_VIDEO_MAX_FRAMES + 1, 1);
    expect_failure(b.data, b.len, "p.mp4", &p, SL_ERR_INVALID_ARG, "max_frames");
    p = params(4, -1);
    expect_failure(b.data, b.len, "p.mp4", &p, SL_ERR_INVALID_ARG, "fps");
    p = params(4, 1);
    p.max_decoded_frames = 0;
    expect_failure(b.data, b.len, "p.mp4", &p, SL_ERR_INVALID_ARG, "max_decoded_frames");
    free(b.data);
}

static void load_file_equals_decode(void **state)
{
    for (size_t c = 0; c < sizeof containers / sizeof *containers; c++) {
        const char *name = containers[c][0];
        sl_video_params p = params(3, 0);
        p.image.max_edge = 40;
        sl_video *a = decode(name, &p), *b;
        assert_int_equal(sl_video_load_file(fixture(name), &p, &b), SL_OK);
        tf_assert_same_frames(a, b);
        sl_video_free(a);
        sl_video_free(b);
    }
    sl_video *v = (sl_video *)1;
    char missing[600];
    snprintf(missing, sizeof missing, "%s/missing.mp4", dir);
    assert_int_equal(sl_video_load_file(missing, NULL, &v), SL_ERR_NOT_FOUND);
    assert_null(v);
    assert_non_null(strstr(sl_last_error(), missing));
    assert_int_equal(sl_video_load_file(dir, NULL, &v), SL_ERR_IO);
    assert_non_null(strstr(sl_last_error(), dir));
    /* A file's errors name its path, as decode's name the given name. */
    assert_int_equal(sl_video_load_file(fixture("still.jpg"), NULL, &v), SL_ERR_DECODE);
    assert_non_null(strstr(sl_last_error(), fixture("still.jpg")));
}

static bool sniff_brand(const char *brand)
{
    uint8_t head[16] = {0, 0, 0, 16, 'f', 't', 'y', 'p'};
    memcpy(head + 8, brand, 4);
    return sl_video_sniff(head, sizeof head);
}

/* A taken frame is the caller's (its pixels those the video held, valid
 * after the video is freed); the video then has none for it, counts its
 * bytes no more, keeps its time, and a second take gives NULL. */
static void a_taken_frame_outlives_the_video(void **state)
{
    const char *name = containers[0][0];
    sl_video_params p = params(3, 0);
    sl_video *v = decode(name, &p);
    assert_true(sl_video_n_frames(v) >= 2);
    const sl_image *held = sl_video_frame(v, 1);
    size_t before = sl_video_bytes(v), frame_bytes = sl_image_bytes(held);
    int w = sl_image_width(held), h = sl_image_height(held);
    uint8_t *copy = malloc((size_t)w * h * 3);
    assert_non_null(copy);
    memcpy(copy, sl_image_pixels(held), (size_t)w * h * 3);
    double t = sl_video_frame_time(v, 1);
    sl_image *taken = sl_video_take_frame(v, 1);
    assert_ptr_equal(taken, held);
    assert_null(sl_video_frame(v, 1));
    assert_null(sl_video_take_frame(v, 1));
    assert_null(sl_video_take_frame(v, sl_video_n_frames(v)));
    assert_int_equal(sl_video_bytes(v), before - frame_bytes);
    assert_true(sl_video_frame_time(v, 1) == t);
    sl_video_free(v);
    assert_int_equal(sl_image_width(taken), w);
    assert_memory_equal(sl_image_pixels(taken), copy, (size_t)w * h * 3);
    sl_image_free(taken);
    free(copy);
}

static void sniff_tells_videos_from_images(void **state)
{
    const char *images[] = {"avif", "avis", "heic", "heix", "mif1", "msf1"};
    for (size_t i = 0; i < sizeof images / sizeof *images; i++)
        if (sniff_brand(images[i]))
            fail_msg("brand %s taken for a video", images[i]);
    const char *videos[] = {"isom", "iso2", "iso3", "iso4", "iso5", "iso6", "mp41", "mp42",
                            "avc1", "M4V ", "qt  ", "3gp4", "3gp5", "dash"};
    for (size_t i = 0; i < sizeof videos / sizeof *videos; i++)
        if (!sniff_brand(videos[i]))
            fail_msg("brand %s not taken for a video", videos[i]);
    const uint8_t mkv[] = {0x1a, 0x45, 0xdf, 0xa3, 0x9f, 0x42, 0x86, 0x81};
    assert_true(sl_video_sniff(mkv, sizeof mkv));
    assert_true(sl_video_sniff("RIFF\x10\0\0\0AVI LIST", 16));
    assert_false(sl_video_sniff("RIFF\x10\0\0\0WEBPVP8 ", 16)); /* a WebP image */
    uint8_t ts[2 * 188 + 1] = {0x47, 0x40, 0x00, 0x10}; /* PAT, payload only */
    ts[188] = 0x47;
    ts[376] = 0x47;
    assert_true(sl_video_sniff(ts, sizeof ts));
    ts[376] = 0x48;
    assert_false(sl_video_sniff(ts, sizeof ts));
    assert_true(sl_video_sniff(ts, 16)); /* too short to see the second packet */
    assert_false(sl_video_sniff("\xff\xd8\xff\xe0", 4));
    /* 'G' is the sync byte: a GIF is told apart by its signature, and a
     * packet's adaptation field control is never 0. */
    assert_false(sl_video_sniff("GIF89a", 6));
    assert_false(sl_video_sniff("GIF87a\x40\0", 8));
    assert_false(sl_video_sniff("\x47\x40\x00\x00", 4));
    /* Fewer bytes than a packet's header is no packet: a file of "G", or
     * a GIF cut after "GIF", is not a video (it was, as MPEG-TS). */
    assert_false(sl_video_sniff("G", 1));
    assert_false(sl_video_sniff("\x47\x40\x00", 3));
    assert_false(sl_video_sniff("GIF", 3));
    assert_false(sl_video_sniff("\x89PNG\r\n\x1a\n", 8));
    assert_false(sl_video_sniff("", 0));
    /* The real files. */
    for (size_t c = 0; c < sizeof containers / sizeof *containers; c++) {
        blob b = slurp(containers[c][0]);
        assert_true(sl_video_sniff(b.data, b.len < 16 ? b.len : 16));
        free(b.data);
    }

    assert_true(sl_video_path_is_video("a/b/clip.MP4"));
    assert_true(sl_video_path_is_video("x.webm"));
    assert_true(sl_video_path_is_video("x.Mov"));
    assert_true(sl_video_path_is_video("x.m4v"));
    assert_true(sl_video_path_is_video("x.mkv"));
    assert_true(sl_video_path_is_video("x.avi"));
    assert_true(sl_video_path_is_video("x.ts"));
    assert_false(sl_video_path_is_video("x.jpg"));
    assert_false(sl_video_path_is_video("x.gif"));
    assert_false(sl_video_path_is_video("mp4"));
    assert_false(sl_video_path_is_video("dir.mp4/file"));
    assert_false(sl_video_path_is_video("x.mp4.json"));
}

/* Decode workers run in parallel: each thread's frames equal a lone decode's. */
enum { PAR_THREADS = 4, PAR_ROUNDS = 3 };
typedef struct par_case {
    blob in[3];
    sl_video *want[3];
    int mismatches;
} par_case;

static void *decode_rounds(void *arg)
{
    par_case *c = arg;
    sl_video_params p = params(4, 1);
    for (int r = 0; r < PAR_ROUNDS; r++)
        for (int i = 0; i < 3; i++) {
            sl_video *v;
            v = NULL;
            int bad = sl_video_decode(c->in[i].data, c->in[i].len, "par", &p, &v) != SL_OK;
            for (int k = 0; !bad && k < sl_video_n_frames(v); k++) {
                const sl_image *x = sl_video_frame(v, k), *y = sl_video_frame(c->want[i], k);
                bad = sl_video_n_frames(v) != sl_video_n_frames(c->want[i]) ||
                      memcmp(sl_image_pixels(x), sl_image_pixels(y),
                             (size_t)sl_image_width(x) * sl_image_height(x) * 3) != 0;
            }
            if (bad)
                __atomic_add_fetch(&c->mismatches, 1, __ATOMIC_RELAXED);
            sl_video_free(v);
        }
    return NULL;
}

static void parallel_decodes_match_a_lone_decode(void **state)
{
    par_case c = {.in = {slurp("g10.mp4"), slurp("colours.webm"), slurp("colours.ts")}};
    sl_video_params p = params(4, 1);
    for (int i = 0; i < 3; i++)
        assert_int_equal(sl_video_decode(c.in[i].data, c.in[i].len, "par", &p, &c.want[i]), SL_OK);
    tu_run_threads(PAR_THREADS, decode_rounds, &c);
    assert_int_equal(c.mismatches, 0);
    for (int i = 0; i < 3; i++) {
        sl_video_free(c.want[i]);
        free(c.in[i].data);
    }
}

int main(void)
{
    if (getenv("SLUICE_TEST_FILTER"))
        cmocka_set_test_filter(getenv("SLUICE_TEST_FILTER"));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(one_frame_a_second_from_each_container),
        cmocka_unit_test(max_frames_cuts_fewer_longer_spans),
        cmocka_unit_test(fps_sets_the_count_under_max_frames),
        cmocka_unit_test(seeks_land_on_the_frame_at_each_target),
        cmocka_unit_test(same_stream_in_mp4_and_ts_gives_the_same_frames),
        cmocka_unit_test(frames_sparser_than_spans_are_taken_once),
        cmocka_unit_test(unknown_duration_takes_a_frame_every_1_over_fps),
        cmocka_unit_test(max_edge_shrinks_the_longer_edge),
        cmocka_unit_test(rotation_is_applied),
        cmocka_unit_test(too_many_pixels_is_refused_before_decoding),
        cmocka_unit_test(max_decoded_frames_bounds_the_work),
        cmocka_unit_test(truncated_files_give_frames_or_a_decode_error),
        cmocka_unit_test(bad_inputs_fail_with_named_errors),
        cmocka_unit_test(load_file_equals_decode),
        cmocka_unit_test(a_taken_frame_outlives_the_video),
        cmocka_unit_test(sniff_tells_videos_from_images),
        cmocka_unit_test(parallel_decodes_match_a_lone_decode),
    };
    return cmocka_run_group_tests(tests, make_fixtures, remove_fixtures);
}
