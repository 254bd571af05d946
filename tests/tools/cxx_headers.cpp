// The public headers from C++ (a plugin or a program embedding libsluice in
// C++): every header through sluice.h, the stop counter as std::atomic<int>.
// Run by ctest as tools.cxx_headers; fails to build if a header is C-only.
#include <cstdio>

#include <sluice/plugin.h>
#include <sluice/sluice.h>

int main()
{
    static std::atomic<int> stop{0};
    sl_caption_params p = sl_caption_default_params();
    p.stop_requests = &stop;
    sl_exec_params e = sl_exec_default_params();
    e.stop_requests = &stop;
    stop.store(1);
    // The constants of enums in sl_caption_params by the names C uses (C++
    // would scope them to the struct if they were declared inside it).
    bool enums_default = p.turns == SL_TURNS_FIRST && p.video_part == SL_VIDEO_PART_IMAGE_URL;
    p.turns = SL_TURNS_ALL;
    p.video_part = SL_VIDEO_PART_VIDEO_URL;
    if (p.stop_requests->load() != 1 || e.stop_requests->load() != 1 || p.decode_workers != 2 ||
        !enums_default || sl_dist_available() != sl_dist_available()) {
        std::fprintf(stderr, "the headers' defaults read wrong from C++\n");
        return 1;
    }
    return 0;
}
