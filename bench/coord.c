/* bench/coord.c — can rank 0 keep 1,000 GPUs fed? The coordinator of an MPI
 * job (src/dist/coord.h) hands shards to 1,000 simulated ranks: threads that
 * each ask for the next shard and report a part done for it, without
 * inference, as fast as they can. Their requests reach the coordinator's
 * one thread through a mailbox that stands in for MPI (the same message
 * bytes, the same coord_handle() as rank 0's MPI thread; only the copy over
 * a network is missing). Figures: shards handed out per second and the
 * coordinator thread's CPU time per shard (its own clock: the 1,000 client
 * threads share the machine's cores with it), median of 3 runs; then the
 * rate at which a real ledger (SQLite, fsync) records and commits parts of
 * 1,000 rows, which bounds how often ranks may commit.
 * Goal (issue 16): shards_per_s >= 10,000. Last line JSON. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "core/error.h"
#include "dist/coord.h"
#include "dist/dist.h"
#include "ledger/ledger.h"

/* One request in the mailbox: the client waits on its own flag. */
typedef struct letter {
    int rank;
    wire_buf *request, *reply;
    bool answered;
    pthread_cond_t cv;  /* its own: one reply wakes one rank */
    struct letter *next;
} letter;

typedef struct mailbox {
    pthread_mutex_t mu;
    pthread_cond_t to_coord;
    letter *head, *tail;
    bool closing;
} mailbox;

typedef struct server {
    mailbox *box;
    coord *c;
    double cpu_s;   /* the coordinator thread's CPU time */
    long handled;
} server;

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *serve(void *arg)
{
    server *s = arg;
    mailbox *m = s->box;
    double cpu0 = thread_cpu_s();
    pthread_mutex_lock(&m->mu);
    for (;;) {
        while (!m->head && !m->closing)
            pthread_cond_wait(&m->to_coord, &m->mu);
        if (!m->head)
            break;
        letter *l = m->head;
        m->head = l->next;
        if (!m->head)
            m->tail = NULL;
        pthread_mutex_unlock(&m->mu);
        coord_handle(s->c, l->rank, l->request->buf.data, l->request->buf.len, l->reply);
        s->handled++;
        pthread_mutex_lock(&m->mu);
        l->answered = true;
        pthread_cond_signal(&l->cv);
    }
    pthread_mutex_unlock(&m->mu);
    s->cpu_s = thread_cpu_s() - cpu0;
    return NULL;
}

static void post(mailbox *m, letter *l)
{
    pthread_mutex_lock(&m->mu);
    l->answered = false;
    l->next = NULL;
    if (m->tail)
        m->tail->next = l;
    else
        m->head = l;
    m->tail = l;
    pthread_cond_signal(&m->to_coord);
    while (!l->answered)
        pthread_cond_wait(&l->cv, &m->mu);
    pthread_mutex_unlock(&m->mu);
}

typedef struct sim_rank {
    mailbox *box;
    int rank;
    long shards, failures, ids;
} sim_rank;

/* A rank: the next shard at the one after its last (with the ids done in
 * it), until none is left. Its parts are reported per part, not per shard:
 * ledger_rate() measures those. */
static void *run_rank(void *arg)
{
    sim_rank *r = arg;
    wire_buf req = {0}, rep = {0};
    letter l = {.rank = r->rank, .request = &req, .reply = &rep};
    pthread_cond_init(&l.cv, NULL);
    int64_t position = 0;
    for (;;) {
        wire_reset(&req);
        wire_put_u8(&req, COORD_NEXT);
        wire_put_i64(&req, position);
        post(r->box, &l);
        wire_reader rd = wire_read(rep.buf.data, rep.buf.len);
        if (wire_get_u8(&rd) != SL_OK) {
            r->failures++;
            break;
        }
        int64_t shard = wire_get_i64(&rd);
        if (shard < 0)
            break;
        r->ids += wire_get_i64(&rd);
        r->shards++;
        position = shard + 1;
    }
    pthread_cond_destroy(&l.cv);
    wire_free(&req);
    wire_free(&rep);
    return NULL;
}

typedef struct figures {
    double shards_per_s, cpu_us_per_shard;
    long shards;
} figures;

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int run_once(sl_ledger *ledger, int n_ranks, int64_t n_shards, long done_ids,
                    figures *out)
{
    mailbox box = {0};
    pthread_mutex_init(&box.mu, NULL);
    pthread_cond_init(&box.to_coord, NULL);
    server s = {.box = &box, .c = coord_new(ledger, "", 0, n_ranks + 1)};
    coord_set_start_grace(s.c, 0); /* the simulated ranks say no hello */
    /* The input's size as a rank whose stream ended would report it. */
    wire_buf end = {0}, rep = {0};
    wire_put_u8(&end, COORD_END);
    wire_put_i64(&end, n_shards);
    coord_handle(s.c, 0, end.buf.data, end.buf.len, &rep);
    wire_free(&end);
    wire_free(&rep);
    sim_rank *ranks = calloc((size_t)n_ranks, sizeof *ranks);
    pthread_t *threads = calloc((size_t)n_ranks, sizeof *threads);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    pthread_t coord_thread;
    pthread_create(&coord_thread, NULL, serve, &s);
    double t0 = bench_now();
    int started = 0;
    for (int i = 0; i < n_ranks; i++) {
        ranks[i] = (sim_rank){.box = &box, .rank = i + 1};
        started += pthread_create(&threads[i], &attr, run_rank, &ranks[i]) == 0;
    }
    long shards = 0, failures = 0, ids = 0;
    for (int i = 0; i < n_ranks; i++) {
        pthread_join(threads[i], NULL);
        shards += ranks[i].shards;
        failures += ranks[i].failures;
        ids += ranks[i].ids;
    }
    double seconds = bench_now() - t0;
    pthread_mutex_lock(&box.mu);
    box.closing = true;
    pthread_cond_broadcast(&box.to_coord);
    pthread_mutex_unlock(&box.mu);
    pthread_join(coord_thread, NULL);
    coord_free(s.c);
    free(ranks);
    free(threads);
    pthread_attr_destroy(&attr);
    if (started != n_ranks || failures || shards != n_shards || ids != done_ids) {
        fprintf(stderr, "coord bench: %d of %d ranks started, %ld failures, %ld of %lld shards "
                        "taken, %ld of %ld done ids sent\n", started, n_ranks, failures, shards,
                (long long)n_shards, ids, done_ids);
        return 1;
    }
    out->shards = shards;
    out->shards_per_s = (double)shards / seconds;
    out->cpu_us_per_shard = s.cpu_s / (double)shards * 1e6;
    return 0;
}

/* Parts of `rows` rows, part k of shard k's rows, recorded and committed in
 * a new ledger in dir (*out, open): their rate. */
static int ledger_rate(const char *dir, int parts, int rows, double *parts_per_s,
                       sl_ledger **out)
{
    sl_ledger *l;
    if (sl_ledger_open(dir, false, &l) != SL_OK || sl_ledger_bind(l, "k\tv\n", false) != SL_OK ||
        sl_ledger_reconcile(l, NULL) != SL_OK) {
        fprintf(stderr, "coord bench: %s\n", sl_last_error());
        return 1;
    }
    coord *c = coord_new(l, "", 0, 2);
    dist_part p = {0};
    wire_buf rep = {0};
    double t0 = bench_now();
    int status = 0;
    for (int k = 0; k < parts && !status; k++) {
        char name[64], id[64];
        snprintf(name, sizeof name, "part-%05d.jsonl", k);
        dist_part_start(&p, name, k);
        for (int i = 0; i < rows; i++) {
            snprintf(id, sizeof id, "shard%05d/img%06d.jpg", k, i);
            dist_part_row(&p, id, k);
        }
        dist_part_seal(&p);
        coord_handle(c, 1, p.msg.buf.data, p.msg.buf.len, &rep);
        status |= rep.buf.data[0];
        wire_buf commit = {0};
        coord_put_commit(&commit, k, &(coord_counts){0}, NULL, NULL);
        coord_handle(c, 1, commit.buf.data, commit.buf.len, &rep);
        status |= rep.buf.data[0];
        wire_free(&commit);
    }
    *parts_per_s = parts / (bench_now() - t0);
    dist_part_free(&p);
    wire_free(&rep);
    coord_free(c);
    *out = l;
    if (status)
        fprintf(stderr, "coord bench: the ledger refused a part\n");
    return status;
}

int main(int argc, char **argv)
{
    int n_ranks = argc > 1 ? atoi(argv[1]) : 1000;
    int64_t n_shards = argc > 2 ? atoll(argv[2]) : 200000;
    enum { RUNS = 3, PARTS = 50, ROWS = 1000 };
    char dir[] = "/tmp/sluice-bench-coord-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    /* First the ledger's own rate; its parts then stand for an earlier
     * run's, so the first PARTS shards come with ROWS done ids each. */
    double parts_per_s = 0;
    sl_ledger *ledger = NULL;
    int failed = ledger_rate(dir, PARTS, ROWS, &parts_per_s, &ledger);
    printf("ledger: %d parts of %d rows recorded and committed durably: %.1f parts/s "
           "(%.0f rows/s)\n", PARTS, ROWS, parts_per_s, parts_per_s * ROWS);
    double rate[RUNS], cpu[RUNS];
    for (int i = 0; i < RUNS && !failed; i++) {
        figures f;
        if ((failed = run_once(ledger, n_ranks, n_shards, (long)PARTS * ROWS, &f)))
            break;
        rate[i] = f.shards_per_s;
        cpu[i] = f.cpu_us_per_shard;
        printf("run %d: %d ranks took %ld shards (the first %d with %d ids done each): "
               "%.0f shards/s, coordinator %.2f us CPU a shard\n", i + 1, n_ranks, f.shards, PARTS, ROWS, f.shards_per_s, f.cpu_us_per_shard);
    }
    sl_ledger_free(ledger);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "coord bench: cannot remove %s\n", dir);
    if (failed)
        return 1;
    qsort(rate, RUNS, sizeof *rate, cmp_double);
    qsort(cpu, RUNS, sizeof *cpu, cmp_double);
    printf("{\"bench\":\"coord\",\"ranks\":%d,\"shards\":%lld,\"shards_per_s\":%.0f,"
           "\"coordinator_cpu_us_per_shard\":%.2f,\"goal_shards_per_s\":10000,"
           "\"ledger_parts_per_s\":%.1f,\"ledger_rows_per_s\":%.0f}\n",
           n_ranks, (long long)n_shards, rate[RUNS / 2], cpu[RUNS / 2], parts_per_s,
           parts_per_s * ROWS);
    return 0;
}
