/* image/video_none.c — sluice/video.h in a build without FFmpeg (cmake
 * -DSLUICE_VIDEO=OFF, as the GPU payload is built: FFmpeg and its codecs
 * would add ~27 MB to a bundle the device tool carries at most 64 MiB of).
 * Videos are still told from images (video_sniff.c); each fails its row
 * saying why. */
#include "core/error.h"
#include "sluice/video.h"

struct sl_video {
    int n;
};

static sl_status no_ffmpeg(const char *name)
{
    return sl_fail(SL_ERR_DECODE, "%s: a video, and this sluice was built without FFmpeg "
                                  "(cmake -DSLUICE_VIDEO=OFF): it reads no videos",
                   name ? name : "video");
}

sl_status sl_video_decode(const void *data, size_t len, const char *name,
                          const sl_video_params *params, sl_video **out)
{
    *out = NULL;
    return no_ffmpeg(name);
}

sl_status sl_video_load_file(const char *path, const sl_video_params *params, sl_video **out)
{
    *out = NULL;
    return no_ffmpeg(path);
}

sl_status sl_video_load_io(const sl_video_io *io, const char *name, const sl_video_params *params,
                           sl_video **out)
{
    *out = NULL;
    return no_ffmpeg(name);
}

int sl_video_n_frames(const sl_video *video) { return video->n; }
const sl_image *sl_video_frame(const sl_video *video, int i) { return NULL; }
sl_image *sl_video_take_frame(sl_video *video, int i) { return NULL; }
double sl_video_frame_time(const sl_video *video, int i) { return 0.0; }
double sl_video_duration(const sl_video *video) { return 0.0; }
int sl_video_source_width(const sl_video *video) { return 0; }
int sl_video_source_height(const sl_video *video) { return 0; }
const char *sl_video_container(const sl_video *video) { return "video"; }
const char *sl_video_codec(const sl_video *video) { return "none"; }
size_t sl_video_bytes(const sl_video *video) { return 0; }
void sl_video_free(sl_video *video) {}
