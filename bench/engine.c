/* bench/engine — the embedded llama.cpp engine at its limit, and the full
 * pipeline around it, on the same model and images. Prints human lines,
 * then one JSON object as the last line. Not a test.
 *
 *   build/bench/engine [--model-dir DIR] [--images DIR] [--quick]
 *
 * DIR holds model.gguf and mmproj.gguf (default models/smolvlm-256m-e512-bf16:
 * the SmolVLM-256M shape, text weights in bf16 as SmolVLM ships them, image
 * splitting capped at one 512 px tile; see docs/engine.md for why, pass
 * models/smolvlm-256m-e512 for f16 weights and models/smolvlm-256m for the
 * real 2048 px slicing).
 *
 * 1. breakdown: a few images one at a time: vision encode ms, LLM prefill
 *    ms, decode ms per token.
 * 2. sweep: for max_tokens 64 and 256 and parallel 1, 4, 8, 16, 32: N
 *    images (N = max(parallel, 4)) decoded in memory, all submitted at once;
 *    images/s over the wall time, generated tokens/s over the wall time,
 *    and the decode rate (generated tokens / time in token llama_decode).
 * 3. engine_limit_images_per_s vs pipeline_images_per_s: the same images
 *    through the engine alone (decoded in memory) and through the whole
 *    `sluice caption` pipeline (read, decode, engine, write). */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sluice/sluice.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static char model_path[1024], mmproj_path[1024];
static const char *prompt = "Describe this image in one sentence.";

static sl_engine *open_engine(int parallel, int max_tokens)
{
    sl_llama_params p = sl_llama_default_params();
    p.model_path = model_path;
    p.mmproj_path = mmproj_path;
    p.n_parallel = parallel;
    p.max_tokens_hint = max_tokens;
    p.image_edge_hint = 512;
    sl_engine *e;
    if (sl_engine_open_llama(&p, &e) != SL_OK) {
        fprintf(stderr, "bench: %s\n", sl_last_error());
        exit(1);
    }
    return e;
}

typedef struct run_result {
    double wall_s, images_per_s, tokens_per_s, decode_tokens_per_s;
    double encode_ms, prefill_ms, decode_ms_per_token; /* means per image */
    long tokens;
} run_result;

/* Submits n requests (images cycled) at once and waits for all. */
static run_result run_engine(sl_engine *e, sl_image **imgs, int n_imgs, int n, int max_tokens)
{
    sl_engine_stats before, after;
    sl_engine_stats_get(e, &before);
    double t0 = now();
    for (int i = 0; i < n; i++) {
        sl_request r = {.id = "bench", .prompt = prompt, .image = imgs[i % n_imgs],
                        .sampling = sl_sampling_default()};
        r.sampling.max_tokens = max_tokens;
        if (sl_engine_submit(e, &r, NULL) != SL_OK) {
            fprintf(stderr, "bench: %s\n", sl_last_error());
            exit(1);
        }
    }
    run_result out = {0};
    int done = 0;
    while (done < n) {
        sl_completion c[32];
        size_t k;
        sl_engine_poll(e, c, 32, 1000, &k);
        for (size_t i = 0; i < k; i++) {
            if (c[i].status != SL_OK) {
                fprintf(stderr, "bench: request failed: %s\n", c[i].error);
                exit(1);
            }
            out.tokens += c[i].result.generated_tokens;
            out.encode_ms += c[i].result.encode_ms;
            out.prefill_ms += c[i].result.prefill_ms - c[i].result.encode_ms;
            if (c[i].result.generated_tokens > 1)
                out.decode_ms_per_token +=
                    c[i].result.generate_ms / (c[i].result.generated_tokens - 1);
            sl_completion_clear(&c[i]);
            done++;
        }
    }
    out.wall_s = now() - t0;
    sl_engine_stats_get(e, &after);
    out.images_per_s = n / out.wall_s;
    out.tokens_per_s = out.tokens / out.wall_s;
    double tok_s = after.token_decode_s - before.token_decode_s;
    out.decode_tokens_per_s = tok_s > 0 ? (after.generation_tokens - before.generation_tokens) / tok_s : 0;
    out.encode_ms /= n;
    out.prefill_ms /= n;
    out.decode_ms_per_token /= n;
    return out;
}

static int load_images(const char *dir, sl_image **imgs, int max)
{
    DIR *d = opendir(dir);
    if (!d) {
        perror(dir);
        exit(1);
    }
    struct dirent *de;
    int n = 0;
    sl_image_params ip = sl_image_default_params();
    while ((de = readdir(d)) && n < max) {
        if (!strstr(de->d_name, ".jpg"))
            continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        if (sl_image_load_file(path, &ip, &imgs[n]) == SL_OK)
            n++;
    }
    closedir(d);
    return n;
}

int main(int argc, char **argv)
{
    const char *model_dir = "models/smolvlm-256m-e512-bf16", *image_dir = "samples";
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model-dir") && i + 1 < argc)
            model_dir = argv[++i];
        else if (!strcmp(argv[i], "--images") && i + 1 < argc)
            image_dir = argv[++i];
        else if (!strcmp(argv[i], "--quick"))
            quick = true;
        else {
            fprintf(stderr, "usage: %s [--model-dir DIR] [--images DIR] [--quick]\n", argv[0]);
            return 2;
        }
    }
    snprintf(model_path, sizeof model_path, "%s/model.gguf", model_dir);
    snprintf(mmproj_path, sizeof mmproj_path, "%s/mmproj.gguf", model_dir);
    sl_log_set_level(SL_LOG_ERROR);
    sl_image *imgs[64];
    int n_imgs = load_images(image_dir, imgs, 64);
    if (n_imgs == 0) {
        fprintf(stderr, "bench: no .jpg images in %s\n", image_dir);
        return 1;
    }
    printf("model %s, %d images from %s (shrunk to 512 px)\n", model_dir, n_imgs, image_dir);

    /* 1. one image at a time */
    sl_engine *e = open_engine(1, 64);
    run_result one = run_engine(e, imgs, n_imgs, quick ? 1 : 3, 64);
    sl_engine_free(e);
    printf("per image (parallel 1): vision encode %.0f ms, LLM prefill %.0f ms, decode %.1f ms/token\n",
           one.encode_ms, one.prefill_ms, one.decode_ms_per_token);

    /* 2. the sweep */
    int parallels[] = {1, 4, 8, 16, 32};
    int max_tokens[] = {64, 256};
    int n_par = quick ? 3 : 5, n_mt = quick ? 1 : 2;
    run_result sweep[2][5];
    double best_decode = 0, base_decode = 0;
    int best_par = 1;
    for (int m = 0; m < n_mt; m++)
        for (int p = 0; p < n_par; p++) {
            int n = parallels[p] > 4 ? parallels[p] : 4;
            e = open_engine(parallels[p], max_tokens[m]);
            sweep[m][p] = run_engine(e, imgs, n_imgs, n, max_tokens[m]);
            sl_engine_free(e);
            run_result *r = &sweep[m][p];
            printf("max_tokens %3d parallel %2d: %2d images in %6.1f s: %.3f images/s, %6.1f tokens/s "
                   "overall, decode rate %6.1f tokens/s\n",
                   max_tokens[m], parallels[p], n, r->wall_s, r->images_per_s, r->tokens_per_s,
                   r->decode_tokens_per_s);
            if (m == n_mt - 1) {
                if (p == 0)
                    base_decode = r->decode_tokens_per_s;
                if (r->decode_tokens_per_s > best_decode) {
                    best_decode = r->decode_tokens_per_s;
                    best_par = parallels[p];
                }
            }
        }

    /* 3. engine alone vs the whole pipeline, same images, same settings */
    int lim_par = 8, n_lim = quick ? 8 : 16;
    e = open_engine(lim_par, 64);
    run_result limit = run_engine(e, imgs, n_imgs, n_lim, 64);
    sl_engine_free(e);
    char tmpl[] = "/tmp/sluice-bench-XXXXXX";
    char *dir = mkdtemp(tmpl);
    char in_dir[512], out_dir[512];
    snprintf(in_dir, sizeof in_dir, "%s/in", dir);
    snprintf(out_dir, sizeof out_dir, "%s/out", dir);
    mkdir(in_dir, 0777);
    DIR *d = opendir(image_dir);
    struct dirent *de;
    char srcs[64][1024];
    int n_src = 0;
    while ((de = readdir(d)) && n_src < 64)
        if (strstr(de->d_name, ".jpg"))
            snprintf(srcs[n_src++], sizeof srcs[0], "%s/%s", image_dir, de->d_name);
    closedir(d);
    for (int i = 0; i < n_lim; i++) {
        char link[1024], target[2048];
        snprintf(link, sizeof link, "%s/%03d.jpg", in_dir, i);
        if (srcs[i % n_src][0] == '/')
            snprintf(target, sizeof target, "%s", srcs[i % n_src]);
        else {
            char cwd[1024];
            snprintf(target, sizeof target, "%s/%s", getcwd(cwd, sizeof cwd), srcs[i % n_src]);
        }
        if (symlink(target, link) != 0) {
            perror(link);
            return 1;
        }
    }
    sl_caption_params cp = sl_caption_default_params();
    cp.input_dir = in_dir;
    cp.output_dir = out_dir;
    cp.llama.model_path = model_path;
    cp.llama.mmproj_path = mmproj_path;
    cp.llama.n_parallel = lim_par;
    cp.sampling.max_tokens = 64;
    cp.prompt = prompt;
    sl_caption_summary sum;
    if (sl_caption_run(&cp, &sum) != SL_OK) {
        fprintf(stderr, "bench: %s\n", sl_last_error());
        return 1;
    }
    double pipeline_ips = sum.rows / sum.seconds;
    printf("engine alone: %.3f images/s; whole pipeline: %.3f images/s (%ld images, parallel %d): "
           "%.1f%%\n",
           limit.images_per_s, pipeline_ips, sum.rows, lim_par,
           100.0 * pipeline_ips / limit.images_per_s);

    printf("{\"model\": \"%s\", \"vision_encode_ms\": %.1f, \"prefill_ms\": %.1f, "
           "\"decode_ms_per_token\": %.2f, \"sweep\": [",
           model_dir, one.encode_ms, one.prefill_ms, one.decode_ms_per_token);
    for (int m = 0; m < n_mt; m++)
        for (int p = 0; p < n_par; p++)
            printf("%s{\"max_tokens\": %d, \"parallel\": %d, \"images_per_s\": %.4f, "
                   "\"generated_tokens_per_s\": %.2f, \"decode_tokens_per_s\": %.2f}",
                   m + p ? ", " : "", max_tokens[m], parallels[p], sweep[m][p].images_per_s,
                   sweep[m][p].tokens_per_s, sweep[m][p].decode_tokens_per_s);
    printf("], \"decode_speedup\": %.2f, \"decode_speedup_parallel\": %d, "
           "\"engine_limit_images_per_s\": %.4f, \"pipeline_images_per_s\": %.4f, "
           "\"pipeline_vs_engine\": %.3f, \"quick\": %s}\n",
           base_decode > 0 ? best_decode / base_decode : 0, best_par, limit.images_per_s,
           pipeline_ips, pipeline_ips / limit.images_per_s, quick ? "true" : "false");
    for (int i = 0; i < n_imgs; i++)
        sl_image_free(imgs[i]);
    return 0;
}
