/* tests/unit/test_frames.h — two videos' frames compared exactly (the same
 * stream read two ways: from memory, a file, or a URL). cmocka asserts. */
#ifndef TEST_FRAMES_H
#define TEST_FRAMES_H

#include "sluice/video.h"

static inline void tf_assert_same_frames(const sl_video *a, const sl_video *b)
{
    assert_int_equal(sl_video_n_frames(a), sl_video_n_frames(b));
    assert_true(sl_video_duration(a) == sl_video_duration(b));
    for (int i = 0; i < sl_video_n_frames(a); i++) {
        const sl_image *x = sl_video_frame(a, i), *y = sl_video_frame(b, i);
        assert_true(sl_video_frame_time(a, i) == sl_video_frame_time(b, i));
        assert_int_equal(sl_image_width(x), sl_image_width(y));
        assert_int_equal(sl_image_height(x), sl_image_height(y));
        assert_memory_equal(sl_image_pixels(x), sl_image_pixels(y),
                            (size_t)sl_image_width(x) * sl_image_height(x) * 3);
    }
}

#endif
