/* Unit tests: dist/coord.c, dist/wire.c and the shard selection of
 * io/source.c that MPI ranks use — the coordinator's protocol without MPI
 * (coord_handle is the whole of it): shards handed out in order, each once,
 * none past the input's end; a position past the next unhanded shard
 * refused; a part recorded and committed in a real ledger, whose rows come
 * back as done with their shard on the next run, its inputs and rows
 * written counted; the getters (a /metrics scrape's) answering while a
 * commit's ledger write is slow; other settings refused at
 * hello naming the key; the inputs each rank skipped as done, told at
 * FINISH, summed once per rank; malformed messages answered with an error. */
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <time.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/fault.h"
#include "dist/coord.h"
#include "dist/dist.h"
#include "io/source.h"
#include "ledger/ledger.h"
#include "test_util.h"

static const char FP[] = "prompt\t\"Describe\"\nmodel\t\"tiny\"\n";

typedef struct reply {
    sl_status status;
    const char *error;
    wire_reader r;
} reply;

static reply ask(coord *c, int rank, wire_buf *req, wire_buf *out)
{
    coord_handle(c, rank, req->buf.data, req->buf.len, out);
    reply rep = {.r = wire_read(out->buf.data, out->buf.len)};
    rep.status = (sl_status)wire_get_u8(&rep.r);
    rep.error = rep.status != SL_OK ? wire_get_str(&rep.r) : "";
    assert_false(rep.r.bad);
    wire_reset(req);
    return rep;
}

/* NEXT at `position`: the shard, and the number of done ids sent with it. */
static int64_t next_shard(coord *c, int rank, int64_t position, int64_t *n_done)
{
    wire_buf req = {0}, out = {0};
    wire_put_u8(&req, COORD_NEXT);
    wire_put_i64(&req, position);
    reply rep = ask(c, rank, &req, &out);
    assert_int_equal(rep.status, SL_OK);
    int64_t shard = wire_get_i64(&rep.r), n = wire_get_i64(&rep.r);
    for (int64_t i = 0; i < n; i++)
        wire_get_str(&rep.r);
    assert_false(rep.r.bad);
    if (n_done)
        *n_done = n;
    wire_free(&req);
    wire_free(&out);
    return shard;
}

/* A coordinator past its start (no wait for hellos). */
static coord *started(sl_ledger *ledger, long first_part, int n_ranks)
{
    coord *c = coord_new(ledger, FP, first_part, n_ranks);
    coord_set_start_grace(c, 0);
    return c;
}

static void hello_from(coord *c, int rank)
{
    wire_buf req = {0}, out = {0};
    wire_put_u8(&req, COORD_HELLO);
    wire_put_str(&req, FP);
    assert_int_equal(ask(c, rank, &req, &out).status, SL_OK);
    wire_free(&req);
    wire_free(&out);
}

/* Nobody starts before every rank is there, or the grace is up. */
static void test_start_waits_for_every_rank(void **state)
{
    coord *c = coord_new(NULL, FP, 0, 2);
    hello_from(c, 0);
    assert_int_equal(next_shard(c, 0, 0, NULL), COORD_WAIT);
    hello_from(c, 1);
    assert_int_equal(next_shard(c, 0, 0, NULL), 0);
    assert_int_equal(next_shard(c, 1, 0, NULL), 1);
    coord_free(c);
    /* The grace runs from coord_new: asked within a grace of 10 minutes,
     * rank 0 waits; cut to 50 ms after that, it is up. (A 50 ms grace from
     * the start ran out before the first ask on a loaded machine.) */
    coord *d = coord_new(NULL, FP, 0, 2);
    coord_set_start_grace(d, 600);
    hello_from(d, 0);
    assert_int_equal(next_shard(d, 0, 0, NULL), COORD_WAIT);
    coord_set_start_grace(d, 0.05);
    struct timespec ts = {0, 80 * 1000000L};
    nanosleep(&ts, NULL);
    assert_int_equal(next_shard(d, 0, 0, NULL), 0); /* rank 1 never came */
    coord_free(d);
}

/* A rank's second shard waits for every rank that came to have its first,
 * up to the grace: a small job's shards went to the first ranks to ask. */
static void test_every_rank_gets_a_shard_before_any_gets_two(void **state)
{
    coord *c = coord_new(NULL, FP, 0, 3);
    coord_set_start_grace(c, 600);
    for (int r = 0; r < 3; r++)
        hello_from(c, r);
    assert_int_equal(next_shard(c, 1, 0, NULL), 0);
    assert_int_equal(next_shard(c, 1, 1, NULL), COORD_WAIT); /* ranks 0 and 2 have none */
    assert_int_equal(next_shard(c, 0, 1, NULL), 1);
    assert_int_equal(next_shard(c, 1, 2, NULL), COORD_WAIT); /* rank 2 has none */
    assert_int_equal(next_shard(c, 2, 2, NULL), 2);
    assert_int_equal(next_shard(c, 1, 3, NULL), 3);
    assert_int_equal(next_shard(c, 1, 4, NULL), 4); /* every rank served: the pull balances */
    coord_free(c);
    /* A rank that never asks holds the others for the grace alone. */
    coord *d = coord_new(NULL, FP, 0, 2);
    coord_set_start_grace(d, 600);
    hello_from(d, 0);
    hello_from(d, 1);
    assert_int_equal(next_shard(d, 0, 0, NULL), 0);
    assert_int_equal(next_shard(d, 0, 1, NULL), COORD_WAIT);
    coord_set_start_grace(d, 0.05);
    struct timespec ts = {0, 80 * 1000000L};
    nanosleep(&ts, NULL);
    assert_int_equal(next_shard(d, 0, 1, NULL), 1);
    coord_free(d);
}

static void test_shards_in_order_each_once(void **state)
{
    coord *c = started(NULL, 0, 3);
    /* Three ranks start at 0; each then asks at the shard after its own. */
    assert_int_equal(next_shard(c, 0, 0, NULL), 0);
    assert_int_equal(next_shard(c, 1, 0, NULL), 1);
    assert_int_equal(next_shard(c, 2, 0, NULL), 2);
    assert_int_equal(next_shard(c, 1, 2, NULL), 3);
    assert_int_equal(next_shard(c, 0, 1, NULL), 4);
    /* A rank whose stream ended says the input holds 5 shards. */
    wire_buf req = {0}, out = {0};
    wire_put_u8(&req, COORD_END);
    wire_put_i64(&req, 5);
    assert_int_equal(ask(c, 2, &req, &out).status, SL_OK);
    assert_int_equal(next_shard(c, 2, 3, NULL), -1);
    assert_int_equal(next_shard(c, 0, 5, NULL), -1);
    int64_t handed, total;
    coord_progress(c, NULL, &handed, &total);
    assert_int_equal(handed, 5);
    assert_int_equal(total, 5);
    /* Handed out before the end was known: shard 5 of a 5-shard input. */
    coord *e = started(NULL, 0, 2);
    for (int64_t k = 0; k < 6; k++)
        assert_int_equal(next_shard(e, (int)(k % 2), k, NULL), k);
    wire_put_u8(&req, COORD_END);
    wire_put_i64(&req, 5);
    assert_int_equal(ask(e, 1, &req, &out).status, SL_OK);
    coord_rank r1;
    assert_true(coord_rank_progress(e, 1, &r1));
    assert_int_equal(r1.shards, 2); /* 1 and 3; not 5 */
    coord_progress(e, NULL, &handed, &total);
    assert_int_equal(handed, 5);
    coord_free(e);
    /* Past the next unhanded shard: the shards between would go to nobody. */
    coord *d = started(NULL, 0, 2);
    wire_put_u8(&req, COORD_NEXT);
    wire_put_i64(&req, 3);
    reply rep = ask(d, 1, &req, &out);
    assert_int_equal(rep.status, SL_ERR_INVALID_ARG);
    assert_non_null(strstr(rep.error, "rank 1"));
    coord_free(d);
    wire_free(&req);
    wire_free(&out);
    coord_free(c);
}

static void test_hello_checks_settings(void **state)
{
    coord *c = started(NULL, 7, 2);
    wire_buf req = {0}, out = {0};
    wire_put_u8(&req, COORD_HELLO);
    wire_put_str(&req, FP);
    reply rep = ask(c, 1, &req, &out);
    assert_int_equal(rep.status, SL_OK);
    assert_int_equal(wire_get_i64(&rep.r), 7); /* where part numbers start */
    wire_put_u8(&req, COORD_HELLO);
    wire_put_str(&req, "prompt\t\"Describe\"\nmodel\t\"other\"\n");
    rep = ask(c, 1, &req, &out);
    assert_int_equal(rep.status, SL_ERR_INVALID_ARG);
    assert_non_null(strstr(rep.error, "'model'"));
    assert_non_null(strstr(rep.error, "rank 1"));
    wire_free(&req);
    wire_free(&out);
    coord_free(c);
}

/* A part of n ids, holding `inputs` inputs written as `written` rows. */
static void record(coord *c, int rank, const char *name, long number, const char *const *ids,
                   const int64_t *shards, int n, long inputs, long written, sl_status want)
{
    dist_part p = {0};
    dist_part_start(&p, name, number);
    for (int i = 0; i < n; i++)
        dist_part_row(&p, ids[i], shards[i]);
    p.inputs = inputs;
    p.written = written;
    dist_part_seal(&p);
    wire_buf out = {0};
    coord_handle(c, rank, p.msg.buf.data, p.msg.buf.len, &out);
    assert_int_equal(out.buf.data[0], want);
    wire_free(&out);
    dist_part_free(&p);
}

/* A part's commit; its tally: `rows` answers of choice 1 (group 0) and
 * one of choice 63 of the last group. */
static sl_status commit(coord *c, int rank, long number, int64_t rows)
{
    wire_buf req = {0}, out = {0};
    long tally[COORD_TALLY_SIZE] = {0};
    tally[1] = (long)rows;
    tally[COORD_TALLY_SIZE - 1] = 1;
    /* its failed rows' kinds: `rows` of one kind, and rank 2 one of its own */
    coord_failures failures = {0};
    coord_failures_add(&failures, "decode", "not_found", rows);
    if (rank == 2)
        coord_failures_add(&failures, "read", "invalid", 1);
    coord_put_commit(&req, number,
                     &(coord_counts){.rows = rows, .ok = rows, .prompt_tokens = 10 * rows,
                                     .generated_tokens = 5 * rows, .inputs = rows - 1},
                     tally, &failures);
    sl_status st = ask(c, rank, &req, &out).status;
    wire_free(&req);
    wire_free(&out);
    return st;
}

static void test_parts_recorded_and_resumed_by_shard(void **state)
{
    char *dir = tu_tmpdir();
    sl_ledger *l;
    assert_int_equal(sl_ledger_open(dir, false, &l), SL_OK);
    assert_int_equal(sl_ledger_bind(l, FP, false), SL_OK);
    assert_int_equal(sl_ledger_reconcile(l, NULL), SL_OK);
    coord *c = started(l, 0, 3);
    const char *a[] = {"a.jpg", "b.jpg", "c.jpg"}, *b[] = {"d.jpg"};
    int64_t sa[] = {0, 0, 1}, sb[] = {2};
    /* Two ranks' parts pending at once, committed in the other order. */
    /* 3 ids of 2 inputs (as an input's copy has an id), 6 rows (tasks) */
    record(c, 1, "part-00001.jsonl", 1, a, sa, 3, 2, 6, SL_OK);
    record(c, 2, "part-00002.jsonl", 2, b, sb, 1, 1, 0, SL_OK); /* its row dropped */
    record(c, 2, "part-00002.jsonl", 2, b, sb, 1, 1, 0, SL_ERR_EXISTS); /* a number once */
    bool done = true;
    assert_int_equal(sl_ledger_is_done(l, "d.jpg", &done), SL_OK);
    assert_false(done); /* pending is not done */
    json_t *parts = coord_parts(c); /* nor in the report's list */
    assert_int_equal(json_array_size(parts), 0);
    json_decref(parts);
    assert_int_equal(commit(c, 2, 2, 1), SL_OK);
    assert_int_equal(commit(c, 1, 1, 3), SL_OK);
    assert_int_equal(commit(c, 1, 1, 3), SL_ERR_INVALID_ARG); /* committed once */
    assert_int_equal(commit(c, 1, 9, 3), SL_ERR_INVALID_ARG); /* never recorded */
    coord_counts sum;
    coord_progress(c, &sum, NULL, NULL);
    assert_int_equal(sum.parts, 2);
    assert_int_equal(sum.rows, 4);
    assert_int_equal(sum.generated_tokens, 20);
    assert_int_equal(sum.inputs, 2); /* (1 - 1) + (3 - 1): each part's own count */
    long tally[COORD_TALLY_SIZE];
    coord_tally(c, tally); /* the two committed parts' alone */
    assert_int_equal(tally[1], 4);
    assert_int_equal(tally[COORD_TALLY_SIZE - 1], 2);
    for (int i = 0; i < COORD_TALLY_SIZE; i++)
        assert_true(i == 1 || i == COORD_TALLY_SIZE - 1 || tally[i] == 0);
    /* The failed rows' kinds likewise, summed by kind over the ranks: what
     * rank 0's summary lists, not its own rows' alone. */
    coord_failures failures;
    coord_failures_get(c, &failures);
    assert_int_equal(failures.n, 2);
    assert_string_equal(failures.kind[0].stage, "decode"); /* in the order first seen */
    assert_string_equal(failures.kind[0].cls, "not_found");
    assert_int_equal(failures.kind[0].rows, 4);
    assert_string_equal(failures.kind[1].stage, "read");
    assert_string_equal(failures.kind[1].cls, "invalid");
    assert_int_equal(failures.kind[1].rows, 1);
    assert_int_equal(sl_ledger_is_done(l, "d.jpg", &done), SL_OK);
    assert_true(done);
    /* The report names every rank's parts, by number, not as committed. */
    parts = coord_parts(c);
    assert_int_equal(json_array_size(parts), 2);
    assert_string_equal(json_string_value(json_array_get(parts, 0)), "part-00001.jsonl");
    assert_string_equal(json_string_value(json_array_get(parts, 1)), "part-00002.jsonl");
    json_decref(parts);
    coord_free(c);
    sl_ledger_free(l);
    tu_write(dir, "part-00001.jsonl", "x\n", 2); /* the renamed files */
    tu_write(dir, "part-00002.jsonl", "x\n", 2);

    /* The next run hands the same shards out with the ids done in each. */
    assert_int_equal(sl_ledger_open(dir, false, &l), SL_OK);
    assert_int_equal(sl_ledger_bind(l, FP, false), SL_OK);
    sl_ledger_info info;
    assert_int_equal(sl_ledger_reconcile(l, &info), SL_OK);
    assert_int_equal(info.rows, 4);
    assert_int_equal(info.inputs, 3); /* as the ranks recorded them, not the ids */
    assert_int_equal(info.written, 6);
    c = started(l, info.max_part + 1, 2);
    int64_t n;
    assert_int_equal(next_shard(c, 0, 0, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(next_shard(c, 1, 0, &n), 1);
    assert_int_equal(n, 1);
    assert_int_equal(next_shard(c, 0, 1, &n), 2);
    assert_int_equal(n, 1);
    assert_int_equal(next_shard(c, 1, 2, &n), 3);
    assert_int_equal(n, 0);
    coord_free(c);
    sl_ledger_free(l);
    tu_rmtree(dir);
}

/* A commit whose ledger write is slow (a disk's fsync), on a thread of its
 * own as a rank's request on rank 0's server thread. */
typedef struct slow_commit {
    coord *c;
    sl_status st;
} slow_commit;

static void *commit_part_1(void *arg)
{
    slow_commit *s = arg;
    s->st = commit(s->c, 1, 1, 3);
    return NULL;
}

/* What a /metrics scrape and the live page read (coord_progress and the
 * other getters) never waits for a ledger write: with the commit's write
 * held 1.5 s, every getter answers in under half that, shows the part not
 * yet committed, and shows it once the commit is durable. */
static void test_getters_do_not_wait_on_a_ledger_write(void **state)
{
    enum { DELAY_MS = 1500 };
    char *dir = tu_tmpdir();
    sl_ledger *l;
    assert_int_equal(sl_ledger_open(dir, false, &l), SL_OK);
    assert_int_equal(sl_ledger_bind(l, FP, false), SL_OK);
    assert_int_equal(sl_ledger_reconcile(l, NULL), SL_OK);
    coord *c = started(l, 0, 2);
    const char *ids[] = {"a.jpg", "b.jpg", "c.jpg"};
    int64_t shards[] = {0, 0, 1};
    record(c, 1, "part-00001.jsonl", 1, ids, shards, 3, 3, 3, SL_OK);
    char spec[64];
    snprintf(spec, sizeof spec, "ledger.commit=sleep:%d", DELAY_MS);
    assert_int_equal(sl_fault_configure(spec), 0);
    slow_commit sc = {.c = c, .st = SL_ERR_IO}; /* until the thread says */
    pthread_t t;
    double began = sl_mono_s();
    assert_int_equal(pthread_create(&t, NULL, commit_part_1, &sc), 0);
    /* the commit's own work before the pause is milliseconds */
    struct timespec pause = {0, 300 * 1000000L};
    nanosleep(&pause, NULL);
    double asked = sl_mono_s();
    coord_counts sum;
    coord_progress(c, &sum, NULL, NULL);
    coord_rank cr;
    assert_true(coord_rank_progress(c, 1, &cr));
    long tally[COORD_TALLY_SIZE];
    coord_tally(c, tally);
    coord_failures failures;
    coord_failures_get(c, &failures);
    json_t *parts = coord_parts(c), *unfit = coord_unfit(c);
    double waited = sl_mono_s() - asked, in_commit = sl_mono_s() - began;
    pthread_join(t, NULL);
    sl_fault_configure(NULL);
    double commit_took = sl_mono_s() - began;
    assert_int_equal(sc.st, SL_OK);
    assert_true(commit_took >= DELAY_MS / 1000.0); /* the pause was in the commit */
    if (waited >= DELAY_MS / 2000.0)
        fail_msg("the getters took %.0f ms during a ledger write held %d ms", waited * 1e3,
                 DELAY_MS);
    assert_true(in_commit < DELAY_MS / 1000.0); /* they ran inside it */
    assert_int_equal(sum.parts, 0); /* the part is not committed until it is durable */
    assert_int_equal(cr.committed.parts, 0);
    assert_int_equal(json_array_size(parts), 0);
    json_decref(parts);
    json_decref(unfit);
    coord_progress(c, &sum, NULL, NULL);
    assert_int_equal(sum.parts, 1);
    assert_int_equal(sum.rows, 3);
    assert_true(coord_rank_progress(c, 1, &cr));
    assert_int_equal(cr.committed.rows, 3);
    parts = coord_parts(c);
    assert_int_equal(json_array_size(parts), 1);
    json_decref(parts);
    coord_free(c);
    sl_ledger_free(l);
    tu_rmtree(dir);
}

static void test_malformed_messages_get_errors(void **state)
{
    coord *c = started(NULL, 0, 2);
    wire_buf out = {0};
    static const uint8_t bad[][12] = {
        {0},                                  /* no type */
        {99},                                 /* unknown type */
        {COORD_NEXT, 1, 2},                   /* a short integer */
        {COORD_HELLO, 200, 0, 0, 0, 0, 0, 0, 0, 'x', 0}, /* a string past the end */
        {COORD_RECORD, 0, 0, 0, 0, 0, 0, 0, 0, 0},       /* no number or rows */
    };
    static const size_t len[] = {0, 1, 3, 11, 10};
    for (size_t i = 0; i < sizeof len / sizeof *len; i++) {
        coord_handle(c, 1, bad[i], len[i], &out);
        assert_true(out.buf.len >= 1);
        assert_int_not_equal(out.buf.data[0], SL_OK);
    }
    /* A tally entry outside the table: refused, and nothing counted. */
    wire_buf req = {0};
    long tally[COORD_TALLY_SIZE] = {0};
    tally[5] = 3;
    coord_put_commit(&req, 7, &(coord_counts){.rows = 1}, tally, NULL);
    wire_set_i64(&req, req.buf.len - 24, COORD_TALLY_KEYS); /* its key (before the 0 failure kinds) */
    coord_handle(c, 1, req.buf.data, req.buf.len, &out);
    assert_int_not_equal(out.buf.data[0], SL_OK);
    coord_tally(c, tally);
    assert_int_equal(tally[5], 0);
    coord_counts sum;
    coord_progress(c, &sum, NULL, NULL);
    assert_int_equal(sum.parts, 0);
    wire_free(&req);
    wire_free(&out);
    coord_free(c);
}

/* --- many ranks at once ------------------------------------------------------------- */

enum { RACERS = 8, RACE_SHARDS = 4000 };

typedef struct racer {
    coord *c;
    int rank;
    int64_t taken[RACE_SHARDS];
    int n;
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    wire_buf req = {0}, out = {0};
    int64_t position = 0;
    for (;;) {
        wire_reset(&req);
        wire_put_u8(&req, COORD_NEXT);
        wire_put_i64(&req, position);
        coord_handle(r->c, r->rank, req.buf.data, req.buf.len, &out);
        wire_reader rd = wire_read(out.buf.data, out.buf.len);
        if (wire_get_u8(&rd) != SL_OK)
            break;
        int64_t shard = wire_get_i64(&rd);
        if (shard < 0)
            break;
        r->taken[r->n++] = shard;
        position = shard + 1;
        /* and a part for it, as a rank commits */
        coord_put_commit(&req, shard, &(coord_counts){.rows = 2}, NULL, NULL);
        coord_handle(r->c, r->rank, req.buf.data, req.buf.len, &out);
    }
    wire_free(&req);
    wire_free(&out);
    return NULL;
}

/* A rank's FINISH as dist_finish sends it (coord_put_finish). */
static reply finish_with(coord *c, int rank, sl_status status, int64_t skipped, int64_t deferred,
                         const char *unfit, wire_buf *out)
{
    wire_buf req = {0};
    coord_put_finish(&req, status, skipped, deferred, status == SL_OK ? "" : "disk full", unfit);
    reply rep = ask(c, rank, &req, out);
    wire_free(&req);
    return rep;
}

static reply finish_unfit(coord *c, int rank, sl_status status, int64_t skipped, const char *unfit,
                          wire_buf *out)
{
    return finish_with(c, rank, status, skipped, 0, unfit, out);
}

static reply finish_from(coord *c, int rank, sl_status status, int64_t skipped,
                         int64_t deferred, wire_buf *out)
{
    return finish_with(c, rank, status, skipped, deferred, "", out);
}

/* _summary.json's unfit_values under MPI: each rank's FINISH carries its
 * parts' counts; rank 0 sums the rows per column (once per rank), keeps
 * the lowest rank's first row and why, and a rank whose counts are
 * malformed still finishes (the counts are left out). */
static void test_finish_merges_the_ranks_unfit_values(void **state)
{
    (void)state;
    coord *c = started(NULL, 0, 5);
    wire_buf out = {0};
    json_t *none = coord_unfit(c);
    assert_int_equal(json_object_size(none), 0);
    json_decref(none);
    const char *r2 = "{\"meta\": {\"rows\": 3, \"first_id\": \"m:20\", \"why\": \"w2\"}}";
    const char *r1 = "{\"meta\": {\"rows\": 2, \"first_id\": \"m:10\", \"why\": \"w1\", \"x\": 1},"
                     " \"n\": {\"rows\": 9223372036854775807, \"first_id\": \"m:11\", \"why\": \"wn\"}}";
    assert_int_equal(finish_unfit(c, 2, SL_OK, 0, r2, &out).status, SL_OK);
    assert_int_equal(finish_unfit(c, 2, SL_OK, 0, r2, &out).status, SL_OK); /* a repeat: once */
    assert_int_equal(finish_unfit(c, 1, SL_OK, 0, r1, &out).status, SL_OK);
    assert_int_equal(finish_unfit(c, 3, SL_OK, 0, "[1, 2]", &out).status, SL_OK);
    assert_int_equal(finish_unfit(c, 0, SL_OK, 0, "{\"n\": {\"rows\": 4, \"first_id\": \"m:1\", \"why\": \"w0\"}}",
                                  &out).status, SL_OK);
    wire_buf req = {0}; /* a FINISH without the field: none */
    wire_put_u8(&req, COORD_FINISH);
    wire_put_i64(&req, SL_OK);
    wire_put_i64(&req, 0);
    wire_put_i64(&req, 0);
    wire_put_str(&req, "");
    assert_int_equal(ask(c, 4, &req, &out).status, SL_OK);
    wire_free(&req);
    json_t *got = coord_unfit(c);
    /* Rows summed (held at INT64_MAX), the lowest rank's row and why, no other key. */
    json_t *want = json_loads("{\"meta\": {\"rows\": 5, \"first_id\": \"m:10\", \"why\": \"w1\"},"
                              " \"n\": {\"rows\": 9223372036854775807, \"first_id\": \"m:1\", \"why\": \"w0\"}}",
                              0, NULL);
    if (!json_equal(got, want)) {
        char *text = json_dumps(got, 0);
        fail_msg("merged: %s", text);
    }
    json_decref(got);
    json_decref(want);
    coord_rank r;
    assert_true(coord_rank_progress(c, 3, &r));
    assert_true(r.finished); /* its malformed counts did not keep it from finishing */
    assert_true(coord_rank_progress(c, 4, &r));
    assert_true(r.finished);
    int failed = -1;
    sl_status st = SL_OK;
    char msg[64];
    assert_true(coord_wait_finished(c, 0, &failed, &st, msg, sizeof msg));
    wire_free(&out);
    coord_free(c);
}

/* A resumed job's summary counts what every rank skipped, and a stopped
 * one the rows every rank's stop left unsent (_summary.json's
 * rows.deferred), not rank 0's alone: each rank's FINISH carries its
 * counts, summed once per rank. */
static void test_finish_sums_what_each_rank_skipped_and_deferred(void **state)
{
    (void)state;
    coord *c = started(NULL, 0, 3);
    wire_buf out = {0};
    assert_int_equal(finish_from(c, 1, SL_OK, 40, 5, &out).status, SL_OK);
    assert_int_equal(finish_from(c, 1, SL_OK, 40, 5, &out).status, SL_OK); /* a repeat: once */
    assert_int_equal(finish_from(c, 2, SL_ERR_IO, 7, 0, &out).status, SL_OK);
    assert_int_equal(finish_from(c, 0, SL_OK, 12, 3, &out).status, SL_OK);
    reply bad = finish_from(c, 1, SL_OK, -1, 0, &out);
    assert_int_not_equal(bad.status, SL_OK);
    assert_non_null(strstr(bad.error, "malformed finish"));
    bad = finish_from(c, 1, SL_OK, 0, -1, &out);
    assert_int_not_equal(bad.status, SL_OK);
    assert_non_null(strstr(bad.error, "malformed finish"));
    coord_counts sum;
    coord_progress(c, &sum, NULL, NULL);
    assert_int_equal(sum.skipped, 59);
    assert_int_equal(sum.deferred, 8);
    coord_rank r;
    assert_true(coord_rank_progress(c, 2, &r));
    assert_int_equal(r.committed.skipped, 7);
    assert_true(coord_rank_progress(c, 1, &r));
    assert_int_equal(r.committed.deferred, 5);
    assert_true(coord_rank_progress(c, 2, &r));
    assert_true(r.finished && r.status == SL_ERR_IO);
    int failed = -1;
    sl_status st = SL_OK;
    char msg[64];
    assert_true(coord_wait_finished(c, 0, &failed, &st, msg, sizeof msg));
    assert_int_equal(failed, 2);
    assert_string_equal(msg, "disk full");
    wire_free(&out);
    coord_free(c);
}

/* A scrape's reads while the ranks race: each part's figures appear
 * whole (2 rows a part) and never go back. */
typedef struct scraper {
    coord *c;
    atomic_bool stop;
    long reads;
} scraper;

static void *scrape(void *arg)
{
    scraper *s = arg;
    int64_t last = 0;
    while (!atomic_load(&s->stop)) {
        coord_counts sum;
        coord_progress(s->c, &sum, NULL, NULL);
        assert_true(sum.parts >= last);
        assert_int_equal(sum.rows, 2 * sum.parts);
        last = sum.parts;
        coord_rank cr;
        assert_true(coord_rank_progress(s->c, 1, &cr));
        long tally[COORD_TALLY_SIZE];
        coord_tally(s->c, tally);
        json_decref(coord_parts(s->c));
        s->reads++;
    }
    return NULL;
}

/* Ranks on threads of their own (rank 0 serves on one thread, its own
 * pipeline asks on others): every shard handed out once, the counts whole;
 * a scrape meanwhile (the getters, under their own lock) reads each part's
 * figures whole. */
static void test_concurrent_ranks_take_each_shard_once(void **state)
{
    coord *c = started(NULL, 0, RACERS);
    wire_buf req = {0}, out = {0};
    wire_put_u8(&req, COORD_END);
    wire_put_i64(&req, RACE_SHARDS);
    assert_int_equal(ask(c, 0, &req, &out).status, SL_OK);
    static racer racers[RACERS];
    pthread_t threads[RACERS], reader;
    scraper sc = {.c = c};
    assert_int_equal(pthread_create(&reader, NULL, scrape, &sc), 0);
    for (int i = 0; i < RACERS; i++) {
        racers[i] = (racer){.c = c, .rank = i};
        assert_int_equal(pthread_create(&threads[i], NULL, race, &racers[i]), 0);
    }
    static unsigned char seen[RACE_SHARDS];
    memset(seen, 0, sizeof seen);
    int total = 0;
    for (int i = 0; i < RACERS; i++) {
        pthread_join(threads[i], NULL);
        for (int k = 0; k < racers[i].n; k++) {
            assert_true(racers[i].taken[k] < RACE_SHARDS);
            assert_int_equal(seen[racers[i].taken[k]]++, 0);
        }
        total += racers[i].n;
    }
    atomic_store(&sc.stop, true);
    pthread_join(reader, NULL);
    assert_true(sc.reads > 0);
    assert_int_equal(total, RACE_SHARDS);
    coord_counts sum;
    coord_progress(c, &sum, NULL, NULL);
    assert_int_equal(sum.parts, RACE_SHARDS);
    assert_int_equal(sum.rows, 2 * RACE_SHARDS);
    int64_t by_rank = 0;
    for (int i = 0; i < RACERS; i++) {
        coord_rank cr;
        assert_true(coord_rank_progress(c, i, &cr));
        assert_int_equal(cr.shards, racers[i].n);
        by_rank += cr.committed.rows;
    }
    assert_int_equal(by_rank, 2 * RACE_SHARDS);
    wire_free(&req);
    wire_free(&out);
    coord_free(c);
}

/* --- the source asks for its shards -------------------------------------------------- */

typedef struct picker {
    int64_t asked[64];
    int n_asked;
    int64_t ended;
    int64_t none_from;  /* shards from here on: SL_SHARD_NONE */
} picker;

/* Takes the odd shards. */
static sl_status take_odd(void *user, uint64_t shard, bool end, int *take)
{
    picker *p = user;
    if (end) {
        p->ended = (int64_t)shard;
        return SL_OK;
    }
    p->asked[p->n_asked++] = (int64_t)shard;
    *take = p->none_from >= 0 && (int64_t)shard >= p->none_from ? SL_SHARD_NONE
            : shard % 2 ? SL_SHARD_TAKE
                        : SL_SHARD_SKIP;
    return SL_OK;
}

static void read_all(const char *manifest, picker *p, int64_t *shards_of_items, int *n)
{
    sl_source_params sp = sl_source_default_params();
    sp.shard_size = 3;
    sp.take_shard = take_odd;
    sp.take_shard_user = p;
    sp.shard_peers = 2;
    sl_source *src;
    const char *inputs[] = {manifest};
    assert_int_equal(sl_source_open(inputs, 1, &sp, &src), SL_OK);
    sl_source_item it = {0};
    bool done = false;
    *n = 0;
    sl_status st;
    while ((st = sl_source_next(src, &it, &done)) == SL_OK && !done)
        shards_of_items[(*n)++] = it.shard;
    if (st != SL_OK)
        fail_msg("%s", sl_last_error());
    sl_source_item_clear(&it);
    sl_source_free(src);
}

static void test_source_reads_the_shards_it_is_given(void **state)
{
    char *dir = tu_tmpdir();
    char text[512] = "", path[600];
    for (int i = 0; i < 10; i++) /* 10 items: shards of 3 are 0..3 */
        snprintf(text + strlen(text), sizeof text - strlen(text), "{\"path\":\"img%d.jpg\"}\n", i);
    tu_write(dir, "list.jsonl", text, strlen(text));
    snprintf(path, sizeof path, "%s/list.jsonl", dir);

    picker p = {.ended = -1, .none_from = -1};
    int64_t shards[16];
    int n;
    read_all(path, &p, shards, &n);
    assert_int_equal(n, 4); /* shard 1: items 3-5, shard 3: item 9 */
    assert_int_equal(shards[0], 1);
    assert_int_equal(shards[2], 1);
    assert_int_equal(shards[3], 3);
    assert_int_equal(p.n_asked, 4); /* once per shard */
    for (int i = 0; i < 4; i++)
        assert_int_equal(p.asked[i], i);
    assert_int_equal(p.ended, 4); /* the input holds 4 shards */

    /* NONE ends the stream there, without reading on or telling an end. */
    picker q = {.ended = -1, .none_from = 2};
    read_all(path, &q, shards, &n);
    assert_int_equal(n, 3);
    assert_int_equal(q.n_asked, 3);
    assert_int_equal(q.ended, -1);
    tu_rmtree(dir);
}

/* The ranks' waits warn at 30 s, 60, 120, ... 960 s, then every 10
 * minutes; a test's SLUICE_TEST_FAULTS=dist.warn_s=N scales the whole
 * schedule, and without it the first is 30 s. */
static void test_waits_warn_at_30_60_120_s_then_every_10_minutes(void **state)
{
    assert_int_equal(sl_fault_configure(NULL), 0);
    int first = dist_first_warning_s(), at[9] = {first};
    assert_int_equal(first, 30);
    for (int i = 1; i < 9; i++)
        at[i] = dist_next_warning_s(at[i - 1], first);
    const int want[9] = {30, 60, 120, 240, 480, 960, 1560, 2160, 2760};
    assert_memory_equal(at, want, sizeof want);
    assert_int_equal(sl_fault_configure("dist.warn_s=3"), 0);
    assert_int_equal(dist_first_warning_s(), 3);
    assert_int_equal(dist_next_warning_s(3, 3), 6);
    assert_int_equal(dist_next_warning_s(96, 3), 156); /* 960 s and 1560 s, scaled */
    sl_fault_configure(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_start_waits_for_every_rank),
        cmocka_unit_test(test_every_rank_gets_a_shard_before_any_gets_two),
        cmocka_unit_test(test_shards_in_order_each_once),
        cmocka_unit_test(test_hello_checks_settings),
        cmocka_unit_test(test_parts_recorded_and_resumed_by_shard),
        cmocka_unit_test(test_getters_do_not_wait_on_a_ledger_write),
        cmocka_unit_test(test_malformed_messages_get_errors),
        cmocka_unit_test(test_finish_sums_what_each_rank_skipped_and_deferred),
        cmocka_unit_test(test_finish_merges_the_ranks_unfit_values),
        cmocka_unit_test(test_concurrent_ranks_take_each_shard_once),
        cmocka_unit_test(test_source_reads_the_shards_it_is_given),
        cmocka_unit_test(test_waits_warn_at_30_60_120_s_then_every_10_minutes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
