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
    if (p.stop_requests->load() != 1 || e.stop_requests->load() != 1 || p.decode_workers != 2 ||
        sl_dist_available() != sl_dist_available()) {
        std::fprintf(stderr, "the headers' defaults read wrong from C++\n");
        return 1;
    }
    return 0;
}
