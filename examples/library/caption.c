/* examples/library/caption.c — libsluice from a C program: caption images
 * with the llama engine, each answer printed as it comes, everything freed.
 *
 *   caption MODEL.gguf MMPROJ.gguf IMAGE...
 *
 * Prints one line per image, "INDEX<TAB>STATUS<TAB>ANSWER-or-ERROR", in the
 * order the answers finish, and exits 0 when every image was answered
 * (1 when one failed: an image that cannot be read or decoded is reported
 * and the others still go). Runs the whole thing twice in one process (open,
 * caption, free), as a service that loads a model per job would: nothing of
 * the first run may leak into or break the second. Built and run by
 * tests/e2e/test_library.py against an installed prefix (docs/library.md).
 */
#include <sluice/sluice.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The library's log lines (and llama.cpp's) come here instead of stderr. */
static void on_log(sl_log_level level, const char *message, void *user)
{
    (void)user;
    if (level >= SL_LOG_WARN)
        fprintf(stderr, "sluice: %s\n", message);
}

/* One run: open the engine, submit every image, print the answers as they
 * complete, free it all. Returns the number of images not answered. */
static int caption_all(const char *model, const char *mmproj, int n, char **paths)
{
    sl_llama_params lp = sl_llama_default_params();
    lp.model_path = model;
    lp.mmproj_path = mmproj;
    lp.n_threads = 2;
    lp.max_tokens_hint = 8;

    sl_engine *engine = NULL;
    if (sl_engine_open_llama(&lp, &engine) != SL_OK) {
        fprintf(stderr, "cannot open the model: %s\n", sl_last_error());
        return n;
    }

    /* Images must live until their completion comes back (engine.h). */
    sl_image **images = calloc((size_t)n, sizeof *images);
    int failed = 0;
    for (int i = 0; images && i < n; i++) {
        sl_status st = sl_image_load_file(paths[i], NULL, &images[i]);
        if (st != SL_OK) {
            /* The message is thread-local and overwritten by the next
             * failure: print it now. */
            printf("%d\t%s\t%s\n", i, sl_status_name(st), sl_last_error());
            failed++;
            continue;
        }
        sl_request req = {0};
        req.id = paths[i];
        req.prompt = "Describe this image in one sentence.";
        req.image = images[i];
        req.sampling = sl_sampling_default();
        req.sampling.max_tokens = 8;
        /* The tag comes back in the completion: the image's index here. */
        st = sl_engine_submit(engine, &req, (void *)(intptr_t)i);
        if (st != SL_OK) {
            printf("%d\t%s\t%s\n", i, sl_status_name(st), sl_last_error());
            failed++;
        }
    }

    while (sl_engine_in_flight(engine) > 0) {
        sl_completion done[4];
        size_t got = 0;
        if (sl_engine_poll(engine, done, 4, 1000, &got) != SL_OK) {
            fprintf(stderr, "poll: %s\n", sl_last_error());
            break;
        }
        for (size_t k = 0; k < got; k++) {
            int i = (int)(intptr_t)done[k].tag;
            if (done[k].status == SL_OK) {
                printf("%d\tok\t%s\n", i, done[k].result.text);
            } else {
                printf("%d\t%s\t%s\n", i, sl_status_name(done[k].status),
                       done[k].error ? done[k].error : "");
                failed++;
            }
            sl_completion_clear(&done[k]); /* its strings are ours to free */
        }
        fflush(stdout);
    }

    sl_engine_free(engine);
    for (int i = 0; images && i < n; i++)
        sl_image_free(images[i]); /* NULL for an image that failed: allowed */
    free(images);
    return images ? failed : n;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s MODEL.gguf MMPROJ.gguf IMAGE...\n", argv[0]);
        return 2;
    }
    if (strcmp(sl_version(), SL_VERSION) != 0) {
        fprintf(stderr, "built against sluice %s, running with %s\n", SL_VERSION, sl_version());
        return 2;
    }
    sl_log_set_callback(on_log, NULL);

    int failed = 0;
    for (int run = 0; run < 2; run++) {
        printf("run %d\n", run + 1);
        failed += caption_all(argv[1], argv[2], argc - 3, argv + 3);
    }
    sl_log_set_callback(NULL, NULL);
    return failed ? 1 : 0;
}
