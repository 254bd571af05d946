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
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "core/hash.h"
#include "sluice/sluice.h"

static char model_path[1024], mmproj_path[1024];
static const char *prompt = "Describe this image in one sentence.";

/* The model of --model-dir with these sizes, the default sampler. */
static sl_llama_params engine_params(int parallel, int max_tokens)
{
    sl_llama_params p = sl_llama_default_params();
    p.model_path = model_path;
    p.mmproj_path = mmproj_path;
    p.n_parallel = parallel;
    p.max_tokens_hint = max_tokens;
    p.image_edge_hint = 512;
    return p;
}

static sl_engine *open_engine_with(const sl_llama_params *p)
{
    sl_engine *e;
    if (sl_engine_open_llama(p, &e) != SL_OK) {
        fprintf(stderr, "bench: %s\n", sl_last_error());
        exit(1);
    }
    return e;
}

static sl_engine *open_engine(int parallel, int max_tokens)
{
    sl_llama_params p = engine_params(parallel, max_tokens);
    return open_engine_with(&p);
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
    double t0 = bench_now();
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
    out.wall_s = bench_now() - t0;
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

/* --- host cost per step (--host) ------------------------------------------ */

enum { MAX_STEPS = 1 << 16 };
static double step_host_ms[MAX_STEPS], step_sample_ms[MAX_STEPS], step_decode_ms[MAX_STEPS];
static int n_steps_seen;
static double cur_host_ms, cur_sample_ms, cur_decode_ms;

/* The engine thread reports each step's phases in order, bookkeeping last. */
static void on_phase(void *user, sl_engine_phase phase, double seconds)
{
    (void)user;
    if (phase >= SL_PHASE_FIRST_IMAGE)
        return;
    double ms = seconds * 1e3;
    if (phase == SL_PHASE_DECODE)
        cur_decode_ms += ms;
    else
        cur_host_ms += ms;
    if (phase == SL_PHASE_SAMPLE)
        cur_sample_ms += ms;
    if (phase == SL_PHASE_BOOKKEEPING && n_steps_seen < MAX_STEPS) {
        step_host_ms[n_steps_seen] = cur_host_ms;
        step_sample_ms[n_steps_seen] = cur_sample_ms;
        step_decode_ms[n_steps_seen++] = cur_decode_ms;
        cur_host_ms = cur_sample_ms = cur_decode_ms = 0;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    if (n == 0)
        return 0;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

typedef struct host_cost {
    double sample_ms, host_ms, decode_ms; /* medians per step */
    int steps;
    uint64_t tokens_hash;                 /* of every row's text: the same tokens? */
} host_cost;

/* `parallel` requests at once on an engine with the given sampler; the
 * medians over the steps where every sequence generated (the steady state;
 * admission steps are excluded, they have other costs). */
static host_cost measure_host(sl_llama_sampler sampler, int parallel, int tokens, float temperature,
                              int logprobs)
{
    sl_llama_params p = engine_params(parallel, tokens);
    p.sampler = sampler;
    p.on_phase = on_phase;
    sl_engine *e = open_engine_with(&p);
    n_steps_seen = 0;
    cur_host_ms = cur_sample_ms = cur_decode_ms = 0;
    char ids[512][16];
    for (int i = 0; i < parallel; i++) {
        snprintf(ids[i], sizeof ids[i], "row%d", i);
        /* Text only: a step's host cost does not depend on images, and 128
         * images of 512 positions would make the run mostly prefill. */
        sl_request r = {.id = ids[i], .prompt = prompt, .image = NULL,
                        .sampling = sl_sampling_default()};
        r.sampling.max_tokens = tokens;
        r.sampling.temperature = temperature;
        r.sampling.logprobs = logprobs > 0;
        r.sampling.top_logprobs = logprobs;
        if (temperature > 0) {
            r.sampling.top_p = 0.9f;
            r.sampling.seed = sl_sampling_row_seed(42, ids[i]);
        }
        if (sl_engine_submit(e, &r, (void *)(intptr_t)i) != SL_OK) {
            fprintf(stderr, "bench: %s\n", sl_last_error());
            exit(1);
        }
    }
    uint64_t h[512] = {0};
    int done = 0, shortest = tokens;
    while (done < parallel) {
        sl_completion c[32];
        size_t k;
        sl_engine_poll(e, c, 32, 1000, &k);
        for (size_t i = 0; i < k; i++) {
            if (c[i].status != SL_OK) {
                fprintf(stderr, "bench: request failed: %s\n", c[i].error);
                exit(1);
            }
            h[(intptr_t)c[i].tag] = sl_hash_fnv1a64(c[i].result.text);
            if (c[i].result.generated_tokens < shortest)
                shortest = c[i].result.generated_tokens;
            sl_completion_clear(&c[i]);
            done++;
        }
    }
    sl_engine_free(e);
    host_cost out = {0};
    for (int i = 0; i < parallel; i++)
        out.tokens_hash = sl_hash_mix64(out.tokens_hash ^ h[i]);
    /* Every sequence generates in the last `shortest - 1` steps before the
     * first one ends (one token per step). */
    int steady = shortest - 2 > 0 ? shortest - 2 : 1;
    int first = n_steps_seen - steady - (tokens - shortest);
    if (first < 0)
        first = 0;
    int n = n_steps_seen - first;
    out.steps = n;
    out.sample_ms = median(step_sample_ms + first, n);
    out.host_ms = median(step_host_ms + first, n);
    out.decode_ms = median(step_decode_ms + first, n);
    return out;
}

static const char *host_only; /* --only NAME,NAME: a subset of the configurations */

static int host_main(int parallel, int tokens, int rounds)
{
    static const struct {
        const char *name;
        sl_llama_sampler sampler;
        float temperature;
        int logprobs;
    } cfg[] = {
        {"reference_greedy", SL_SAMPLER_REFERENCE, 0.0f, 0},
        {"host_greedy", SL_SAMPLER_HOST, 0.0f, 0},
        {"reference_top_p", SL_SAMPLER_REFERENCE, 0.7f, 0},
        {"host_top_p", SL_SAMPLER_HOST, 0.7f, 0},
        {"device_greedy", SL_SAMPLER_DEVICE, 0.0f, 0},
        {"device_top_p", SL_SAMPLER_DEVICE, 0.7f, 0},
        /* What --logprobs 5 adds to greedy rows: a log-softmax of each. */
        {"host_greedy_logprobs", SL_SAMPLER_HOST, 0.0f, 5},
    };
    enum { N_CFG = sizeof cfg / sizeof cfg[0] };
    double sample[N_CFG][16], host[N_CFG][16], decode[N_CFG][16];
    uint64_t hash[N_CFG] = {0};
    if (rounds > 16)
        rounds = 16;
    for (int r = 0; r < rounds; r++)
        for (int c = 0; c < N_CFG; c++) {
            if (host_only && !strstr(host_only, cfg[c].name))
                continue;
            host_cost hc = measure_host(cfg[c].sampler, parallel, tokens, cfg[c].temperature,
                                        cfg[c].logprobs);
            sample[c][r] = hc.sample_ms;
            host[c][r] = hc.host_ms;
            decode[c][r] = hc.decode_ms;
            if (r == 0)
                hash[c] = hc.tokens_hash;
            else if (hash[c] != hc.tokens_hash)
                printf("  %s: round %d generated other tokens than round 0\n", cfg[c].name, r);
            printf("  round %d %-20s: %3d steady steps, sampling %8.2f ms/step, host %8.2f "
                   "ms/step, llama_decode %8.1f ms/step\n",
                   r, cfg[c].name, hc.steps, hc.sample_ms, hc.host_ms, hc.decode_ms);
            fflush(stdout);
        }
    double med_s[N_CFG], med_h[N_CFG], med_d[N_CFG];
    for (int c = 0; c < N_CFG; c++) {
        med_s[c] = median(sample[c], rounds);
        med_h[c] = median(host[c], rounds);
        med_d[c] = median(decode[c], rounds);
    }
    /* Compared only when all three greedy configurations ran (--only). */
    bool greedy_ran = hash[0] && hash[1] && hash[4];
    bool greedy_same = greedy_ran && hash[0] == hash[1] && hash[0] == hash[4];
    if (greedy_ran)
        printf("greedy: host, device and reference sampling chose %s tokens\n",
               greedy_same ? "the same" : "DIFFERENT");
    /* The host's own top-p against llama.cpp's (equal but for tied logits). */
    bool top_p_ran = hash[2] && hash[3];
    bool top_p_same = top_p_ran && hash[2] == hash[3];
    if (top_p_ran)
        printf("top-p: host and reference sampling chose %s tokens\n",
               top_p_same ? "the same" : "DIFFERENT");
    printf("{\"model\": \"%s\", \"parallel\": %d, \"tokens\": %d, \"rounds\": %d", model_path,
           parallel, tokens, rounds);
    for (int c = 0; c < N_CFG; c++)
        printf(", \"%s\": {\"sampling_ms_per_step\": %.3f, \"host_ms_per_step\": %.3f, "
               "\"decode_ms_per_step\": %.1f}",
               cfg[c].name, med_s[c], med_h[c], med_d[c]);
    printf(", \"greedy_host_ms_ratio\": %.4f, \"top_p_host_ms_ratio\": %.4f, "
           "\"greedy_device_ms_ratio\": %.4f, \"logprobs_greedy_host_ms_ratio\": %.4f, "
           "\"greedy_same_tokens\": %s, \"top_p_same_tokens\": %s}\n",
           med_h[0] > 0 ? med_h[1] / med_h[0] : 0, med_h[2] > 0 ? med_h[3] / med_h[2] : 0,
           med_h[0] > 0 ? med_h[4] / med_h[0] : 0, med_h[1] > 0 ? med_h[6] / med_h[1] : 0,
           greedy_ran ? (greedy_same ? "true" : "false") : "null",
           top_p_ran ? (top_p_same ? "true" : "false") : "null");
    return 0;
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
    bool quick = false, host = false;
    int host_parallel = 128, host_tokens = 16, host_rounds = 3;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model-dir") && i + 1 < argc)
            model_dir = argv[++i];
        else if (!strcmp(argv[i], "--images") && i + 1 < argc)
            image_dir = argv[++i];
        else if (!strcmp(argv[i], "--quick"))
            quick = true;
        else if (!strcmp(argv[i], "--host"))
            host = true;
        else if (!strcmp(argv[i], "--parallel") && i + 1 < argc)
            host_parallel = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
            host_tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            host_rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc)
            host_only = argv[++i];
        else {
            fprintf(stderr,
                    "usage: %s [--model-dir DIR] [--images DIR] [--quick]\n"
                    "       %s --host [--model-dir DIR] [--parallel N] [--tokens N] [--rounds N]\n"
                    "                 [--only NAME,...] (a subset of the configurations)\n",
                    argv[0], argv[0]);
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
    if (host) {
        if (host_parallel < 1 || host_parallel > 255 || host_tokens < 4) {
            fprintf(stderr, "bench: --parallel 1..255, --tokens >= 4\n");
            return 2;
        }
        return host_main(host_parallel, host_tokens, host_rounds);
    }

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
