/* bench/tasks — several tasks per image against one run per task, in the
 * embedded llama.cpp engine, on the same model and images. Prints human
 * lines, then one JSON object as the last line. Not a test.
 *
 *   build/bench/tasks [--model-dir DIR] [--images DIR] [--n-images N]
 *                     [--tokens N] [--parallel P] [--rounds R] [--cpu-poll N]
 *                     [--threads N]
 *
 * DIR holds model.gguf and mmproj.gguf (default
 * models/smolvlm-256m-e512-bf16, made by `make bench-tasks`: the
 * SmolVLM-256M shape, one 512 px tile). Each round:
 *   - three one-task runs: every image with task k's prompt alone,
 *     all submitted at once, timed from the first submit to the last
 *     completion (the model is loaded before the clock starts);
 *   - one three-task run: every image with the three tasks in one request.
 * tasks_speedup = (sum of the three one-task runs) / (the three-task run),
 * median over the rounds; answers_equal: every task's greedy answer in the
 * three-task run equals the one-task run's (mismatches are counted: a
 * batch of another shape may flip a greedy near-tie, docs/engine.md).
 * --threads defaults to 1 and --cpu-poll to 0: on this 2-core machine
 * shared with other work, two ggml threads waiting for each other at every
 * op made a run 10-40x slower at random (a 65-step decode took 5 s in one
 * run and 230 s in the next, the CPU busy all along), which measures
 * neither side. One thread slows down only in proportion to the load.
 * Each run's CPU seconds are reported beside its wall time. */
#include <dirent.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench.h"
#include "sluice/sluice.h"

enum { N_TASKS = 3, MAX_IMAGES = 64, MAX_ROUNDS = 16 };

static const char *const prompts[N_TASKS] = {
    "Describe this image in one sentence.",
    "List five objects you can see in this image.",
    "Which colours dominate this image? Answer in a few words.",
};
static const char *const names[N_TASKS] = {"caption", "objects", "colours"};

/* What one run did: wall and CPU seconds, the engine's counters. */
typedef struct run_stats {
    double wall_s, cpu_s, encode_s, token_decode_s, image_decode_s;
    uint64_t encodes, steps, generated, image_decodes;
} run_stats;

static int load_images(const char *dir, sl_image **imgs, int max)
{
    struct dirent **list;
    int n_list = scandir(dir, &list, NULL, alphasort);
    if (n_list < 0) {
        perror(dir);
        exit(1);
    }
    int n = 0;
    sl_image_params ip = sl_image_default_params();
    for (int i = 0; i < n_list; i++) {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, list[i]->d_name);
        if (n < max && strstr(list[i]->d_name, ".jpg") &&
            sl_image_load_file(path, &ip, &imgs[n]) == SL_OK)
            n++;
        free(list[i]);
    }
    free(list);
    return n;
}

static sl_engine *open_engine(const char *model, const char *mmproj, int parallel, int tokens,
                              int cpu_poll, int threads)
{
    sl_llama_params p = sl_llama_default_params();
    p.model_path = model;
    p.mmproj_path = mmproj;
    p.n_parallel = parallel;
    p.max_tokens_hint = tokens;
    p.image_edge_hint = 512;
    p.cpu_poll = cpu_poll;
    p.n_threads = threads;
    sl_engine *e;
    if (sl_engine_open_llama(&p, &e) != SL_OK) {
        fprintf(stderr, "bench: %s\n", sl_last_error());
        exit(1);
    }
    return e;
}

/* Runs every image with `task` (0..2) alone, or with all three (task -1);
 * texts[task][image] get the answers (free()d by the caller). The wall
 * time is from the first submit to the last completion. */
static run_stats run(sl_engine *e, sl_image **imgs, int n_imgs, int task, int tokens,
                     char *texts[N_TASKS][MAX_IMAGES])
{
    sl_engine_stats before, after;
    sl_engine_stats_get(e, &before);
    sl_task tasks[N_TASKS];
    for (int k = 0; k < N_TASKS; k++) {
        tasks[k] = (sl_task){.name = names[k], .prompt = prompts[k],
                             .sampling = sl_sampling_default()};
        tasks[k].sampling.max_tokens = tokens;
    }
    int tags[MAX_IMAGES];
    double t0 = bench_now(), c0 = bench_cpu_s();
    for (int i = 0; i < n_imgs; i++) {
        char id[32];
        snprintf(id, sizeof id, "img%d", i);
        sl_request req = {.id = id, .image = imgs[i], .sampling = sl_sampling_default()};
        req.sampling.max_tokens = tokens;
        if (task >= 0) {
            req.prompt = prompts[task];
        } else {
            req.tasks = tasks;
            req.n_tasks = N_TASKS;
        }
        tags[i] = i;
        if (sl_engine_submit(e, &req, &tags[i]) != SL_OK) {
            fprintf(stderr, "bench: %s\n", sl_last_error());
            exit(1);
        }
    }
    for (int got = 0; got < n_imgs;) {
        sl_completion c[8];
        size_t n = 0;
        sl_engine_poll(e, c, 8, 1000, &n);
        for (size_t k = 0; k < n; k++, got++) {
            if (c[k].status != SL_OK) {
                fprintf(stderr, "bench: %s\n", c[k].error ? c[k].error : "failed");
                exit(1);
            }
            int i = *(int *)c[k].tag;
            for (int t = 0; t < N_TASKS; t++) {
                sl_result *r = task >= 0 ? (t == task ? &c[k].result : NULL) : &c[k].results[t];
                if (r) {
                    texts[t][i] = strdup(r->text);
                }
            }
            sl_completion_clear(&c[k]);
        }
    }
    run_stats rs = {.wall_s = bench_now() - t0, .cpu_s = bench_cpu_s() - c0};
    sl_engine_stats_get(e, &after);
    rs.encodes = after.images_encoded - before.images_encoded;
    rs.encode_s = after.encode_s - before.encode_s;
    rs.token_decode_s = after.token_decode_s - before.token_decode_s;
    rs.image_decode_s = after.image_decode_s - before.image_decode_s;
    rs.steps = after.steps - before.steps;
    rs.generated = after.generation_tokens - before.generation_tokens;
    rs.image_decodes = after.image_decode_calls - before.image_decode_calls;
    return rs;
}

static void show(int round, const char *what, const run_stats *r)
{
    printf("round %d: %-22s wall %7.2f s  cpu %7.2f s | encoder %3llu calls %6.2f s, image "
           "prefill %3llu decodes %5.2f s, token decode %4llu steps %6.2f s, %llu tokens\n",
           round + 1, what, r->wall_s, r->cpu_s, (unsigned long long)r->encodes, r->encode_s,
           (unsigned long long)r->image_decodes, r->image_decode_s, (unsigned long long)r->steps,
           r->token_decode_s, (unsigned long long)r->generated);
    fflush(stdout);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    const char *model_dir = "models/smolvlm-256m-e512-bf16", *image_dir = "samples";
    int n_want = 6, tokens = 64, parallel = 6, rounds = 3, cpu_poll = 0, threads = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model-dir") && i + 1 < argc)
            model_dir = argv[++i];
        else if (!strcmp(argv[i], "--images") && i + 1 < argc)
            image_dir = argv[++i];
        else if (!strcmp(argv[i], "--n-images") && i + 1 < argc)
            n_want = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--tokens") && i + 1 < argc)
            tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--parallel") && i + 1 < argc)
            parallel = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--cpu-poll") && i + 1 < argc)
            cpu_poll = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--model-dir DIR] [--images DIR] [--n-images N] "
                            "[--tokens N] [--parallel P] [--rounds R] [--cpu-poll N] "
                            "[--threads N]\n",
                    argv[0]);
            return 2;
        }
    }
    if (n_want < 1 || n_want > MAX_IMAGES || rounds < 1 || rounds > MAX_ROUNDS) {
        fprintf(stderr, "bench: --n-images 1..%d, --rounds 1..%d\n", MAX_IMAGES, MAX_ROUNDS);
        return 2;
    }
    sl_log_set_level(SL_LOG_ERROR);
    char model[1024], mmproj[1024];
    snprintf(model, sizeof model, "%s/model.gguf", model_dir);
    snprintf(mmproj, sizeof mmproj, "%s/mmproj.gguf", model_dir);
    sl_image *imgs[MAX_IMAGES];
    int n_imgs = load_images(image_dir, imgs, n_want);
    if (n_imgs == 0) {
        fprintf(stderr, "bench: no .jpg in %s\n", image_dir);
        return 1;
    }
    sl_engine *e = open_engine(model, mmproj, parallel, tokens, cpu_poll, threads);
    printf("model %s, %d images, %d tasks of %d tokens, parallel %d, %d rounds, %d threads\n",
           sl_engine_model_name(e), n_imgs, N_TASKS, tokens, parallel, rounds, threads);
    /* A warm-up (first graphs, threads, caches) outside the clock. */
    {
        char *warm[N_TASKS][MAX_IMAGES] = {{0}};
        run(e, imgs, 1, -1, 4, warm);
        for (int t = 0; t < N_TASKS; t++)
            free(warm[t][0]);
    }
    double speedups[MAX_ROUNDS], cpu_speedups[MAX_ROUNDS], singles_s[MAX_ROUNDS],
        multi_s[MAX_ROUNDS];
    int mismatches = 0, compared = 0;
    uint64_t single_encodes = 0, multi_encodes = 0;
    for (int round = 0; round < rounds; round++) {
        char *alone[N_TASKS][MAX_IMAGES] = {{0}}, *together[N_TASKS][MAX_IMAGES] = {{0}};
        double singles = 0, singles_cpu = 0;
        single_encodes = 0;
        for (int t = 0; t < N_TASKS; t++) {
            run_stats rs = run(e, imgs, n_imgs, t, tokens, alone);
            singles += rs.wall_s;
            singles_cpu += rs.cpu_s;
            single_encodes += rs.encodes;
            char what[64];
            snprintf(what, sizeof what, "task %s alone", names[t]);
            show(round, what, &rs);
        }
        run_stats m = run(e, imgs, n_imgs, -1, tokens, together);
        multi_encodes = m.encodes;
        show(round, "three tasks together", &m);
        singles_s[round] = singles;
        multi_s[round] = m.wall_s;
        speedups[round] = singles / m.wall_s;
        cpu_speedups[round] = singles_cpu / m.cpu_s;
        printf("round %d: speedup %.2f (wall), %.2f (cpu)\n", round + 1, speedups[round],
               cpu_speedups[round]);
        for (int t = 0; t < N_TASKS; t++)
            for (int i = 0; i < n_imgs; i++) {
                compared++;
                if (!alone[t][i] || !together[t][i] || strcmp(alone[t][i], together[t][i]) != 0) {
                    mismatches++;
                    if (round == 0)
                        printf("  differs: image %d task %s:\n    alone:    %s\n    together: %s\n",
                               i, names[t], alone[t][i] ? alone[t][i] : "(none)",
                               together[t][i] ? together[t][i] : "(none)");
                }
                free(alone[t][i]);
                free(together[t][i]);
            }
    }
    double sorted[MAX_ROUNDS];
    memcpy(sorted, speedups, sizeof sorted);
    qsort(sorted, (size_t)rounds, sizeof *sorted, cmp_double);
    double median = rounds % 2 ? sorted[rounds / 2]
                               : (sorted[rounds / 2 - 1] + sorted[rounds / 2]) / 2;
    printf("tasks_speedup (median of %d): %.2f; answers equal: %d of %d\n", rounds, median,
           compared - mismatches, compared);
    printf("{\"bench\":\"tasks\",\"model\":\"%s\",\"images\":%d,\"tasks\":%d,\"max_tokens\":%d,"
           "\"parallel\":%d,\"threads\":%d,\"rounds\":%d,\"tasks_speedup\":%.3f,\"speedups\":[",
           sl_engine_model_name(e), n_imgs, N_TASKS, tokens, parallel, threads, rounds, median);
    for (int r = 0; r < rounds; r++)
        printf("%s%.3f", r ? "," : "", speedups[r]);
    printf("],\"cpu_speedups\":[");
    for (int r = 0; r < rounds; r++)
        printf("%s%.3f", r ? "," : "", cpu_speedups[r]);
    printf("],\"one_task_runs_s\":[");
    for (int r = 0; r < rounds; r++)
        printf("%s%.2f", r ? "," : "", singles_s[r]);
    printf("],\"three_task_run_s\":[");
    for (int r = 0; r < rounds; r++)
        printf("%s%.2f", r ? "," : "", multi_s[r]);
    printf("],\"encoder_calls_one_task_runs\":%llu,\"encoder_calls_three_task_run\":%llu,"
           "\"answers_compared\":%d,\"answers_differing\":%d,\"answers_equal\":%s}\n",
           (unsigned long long)single_encodes, (unsigned long long)multi_encodes, compared,
           mismatches, mismatches == 0 ? "true" : "false");
    sl_engine_free(e);
    for (int i = 0; i < n_imgs; i++)
        sl_image_free(imgs[i]);
    return 0;
}
