/* examples/library/stop.c — a caption job run from C, stopped from another
 * thread midway, then run again in the same process to finish.
 *
 *   stop MODEL.gguf MMPROJ.gguf OUTPUT_DIR IMAGE...
 *
 * The first run stops once its first row is written: a second thread sets
 * the job's stop counter to 1 (stop reading, finish the rows in flight), as
 * a service's shutdown handler would. The second run resumes from the
 * output folder's ledger and does the inputs the first left. Prints
 * "row ID ok|failed" per row and a last line "rows N" with the rows both
 * runs wrote together; exits 0 when that is one row per image.
 * Built and run by tests/e2e/test_library.py (docs/library.md).
 */
#include <sluice/sluice.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct state {
    sl_atomic_int stop;         /* the job's stop counter (caption.h: stop_requests) */
    pthread_mutex_t lock;
    pthread_cond_t first_row;
    int rows;                   /* rows written, both runs */
    int run_ended;              /* the first run returned: the stopper waits no longer */
};

/* On the writer thread, in output order; the view is valid during the call. */
static void on_row(const sl_row_view *row, void *user)
{
    struct state *s = user;
    printf("row %s %s\n", row->id, row->error ? "failed" : "ok");
    fflush(stdout);
    pthread_mutex_lock(&s->lock);
    s->rows++;
    pthread_cond_signal(&s->first_row);
    pthread_mutex_unlock(&s->lock);
}

static void *stopper(void *arg)
{
    struct state *s = arg;
    pthread_mutex_lock(&s->lock);
    while (s->rows == 0 && !s->run_ended)
        pthread_cond_wait(&s->first_row, &s->lock);
    bool stop = !s->run_ended;
    pthread_mutex_unlock(&s->lock);
    if (stop)
        atomic_store(&s->stop, 1); /* 1: drain; 2 would abort the rows in flight */
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s MODEL.gguf MMPROJ.gguf OUTPUT_DIR IMAGE...\n", argv[0]);
        return 2;
    }
    static struct state s = {.lock = PTHREAD_MUTEX_INITIALIZER,
                             .first_row = PTHREAD_COND_INITIALIZER};
    atomic_init(&s.stop, 0);

    sl_caption_params p = sl_caption_default_params();
    p.inputs = (const char *const *)(argv + 4);
    p.n_inputs = argc - 4;
    p.output_dir = argv[3];
    p.llama.model_path = argv[1];
    p.llama.mmproj_path = argv[2];
    p.llama.n_threads = 2;
    p.llama.n_parallel = 1;     /* one row at a time, so a stop leaves some */
    p.sampling.max_tokens = 8;
    p.shard_rows = 1;           /* every row its own part: a resume point each */
    p.on_row = on_row;
    p.on_row_user = &s;
    p.stop_requests = &s.stop;

    pthread_t t;
    if (pthread_create(&t, NULL, stopper, &s) != 0)
        return 1;
    sl_caption_summary sum;
    sl_status st = sl_caption_run(&p, &sum);
    /* A run that wrote no row (refused at its start, say) must not leave
     * the stopper waiting for one: the join would never return. */
    pthread_mutex_lock(&s.lock);
    s.run_ended = 1;
    pthread_cond_signal(&s.first_row);
    pthread_mutex_unlock(&s.lock);
    pthread_join(t, NULL);
    printf("first run: %s, %ld rows\n", sl_status_name(st), sum.rows);
    if (st != SL_OK && st != SL_ERR_STOPPED) {
        fprintf(stderr, "%s\n", sl_last_error());
        return 1;
    }

    /* The same job again: the ledger says which inputs are done. */
    atomic_store(&s.stop, 0);
    p.stop_requests = NULL;
    st = sl_caption_run(&p, &sum);
    printf("second run: %s, %ld rows, %ld skipped\n", sl_status_name(st), sum.rows,
           sum.rows_skipped);
    if (st != SL_OK) {
        fprintf(stderr, "%s\n", sl_last_error());
        return 1;
    }
    printf("rows %d\n", s.rows);
    return s.rows == argc - 4 ? 0 : 1;
}
