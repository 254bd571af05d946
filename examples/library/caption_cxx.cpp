// examples/library/caption_cxx.cpp — libsluice from C++: the headers are
// C with extern "C" guards, so a C++ program includes them as they are.
//
//   caption_cxx MODEL.gguf MMPROJ.gguf OUTPUT_DIR IMAGE...
//
// Runs a caption job (sl_caption_run) with a lambda-free callback and a
// std::atomic<int> stop counter (sl_atomic_int is std::atomic<int> in C++),
// prints "row ID: CAPTION" per row and exits 0 when every image has one.
// Built with c++ -std=c++17 by tests/e2e/test_library.py (docs/library.md).
#include <sluice/sluice.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <vector>

namespace {

struct rows {
    std::vector<std::string> ok; // ids of the rows answered
};

extern "C" void on_row(const sl_row_view *row, void *user)
{
    auto *r = static_cast<rows *>(user);
    // The view lives during the call only: copy what is kept.
    if (row->caption) {
        r->ok.emplace_back(row->id);
        std::printf("row %s: %s\n", row->id, row->caption);
    } else {
        std::printf("row %s failed: %s\n", row->id, row->error);
    }
}

} // namespace

int main(int argc, char **argv)
{
    if (argc < 5) {
        std::fprintf(stderr, "usage: %s MODEL.gguf MMPROJ.gguf OUTPUT_DIR IMAGE...\n", argv[0]);
        return 2;
    }
    std::atomic<int> stop{0};
    rows r;

    sl_caption_params p = sl_caption_default_params();
    p.inputs = argv + 4;
    p.n_inputs = argc - 4;
    p.output_dir = argv[3];
    p.overwrite = true;
    p.llama.model_path = argv[1];
    p.llama.mmproj_path = argv[2];
    p.llama.n_threads = 2;
    p.sampling.max_tokens = 8;
    p.turns = SL_TURNS_FIRST;   // a conversation column's first human turn (the default)
    p.stop_requests = &stop;    // a shutdown handler would store 1 here
    p.on_row = on_row;
    p.on_row_user = &r;

    sl_caption_summary sum;
    sl_status st = sl_caption_run(&p, &sum);
    if (st != SL_OK) {
        std::fprintf(stderr, "%s: %s\n", sl_status_name(st), sl_last_error());
        return 1;
    }
    std::printf("rows %ld, ok %zu\n", sum.rows, r.ok.size());
    return r.ok.size() == static_cast<size_t>(argc - 4) ? 0 : 1;
}
