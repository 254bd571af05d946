/* image/video_impl.h — what the video decoder (video.c, FFmpeg) takes from
 * the container check it shares with builds without FFmpeg (video_sniff.c). */
#ifndef SL_IMAGE_VIDEO_IMPL_H
#define SL_IMAGE_VIDEO_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct video_container {
    const char *demuxer; /* libavformat's short name */
    const char *name;    /* what sl_video_container() says */
} video_container;

/* Which of the accepted containers the bytes start; false when none. */
bool video_detect(const uint8_t *p, size_t len, video_container *out);

#endif
