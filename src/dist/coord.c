/* dist/coord.c — see coord.h. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "dist/coord.h"

/* Two locks. mu orders the protocol: one request at a time, held across
 * the ledger's writes (a commit's fsync). view_mu guards the figures the
 * getters copy (coord_progress and the others a /metrics scrape or the
 * live page calls): a handler changes them under both, after its ledger
 * write, so a getter, taking view_mu alone, never waits on the disk.
 * Order: mu before view_mu. */
struct coord {
    pthread_mutex_t mu;
    pthread_mutex_t view_mu;
    pthread_cond_t finished_cv;
    sl_ledger *ledger;
    char *fingerprint;
    long first_part;
    int n_ranks;
    int64_t next_shard;   /* the lowest shard not handed out */
    int64_t n_shards;     /* -1 until a rank saw the input end */
    coord_counts committed;
    long tally[COORD_TALLY_SIZE]; /* the committed parts' tallies */
    coord_failures failures;      /* the committed parts' failed rows by kind */
    coord_rank *ranks;    /* n_ranks: each rank's share */
    int finished;         /* ranks other than 0 that sent COORD_FINISH */
    int hellos;           /* ranks that said hello */
    double started;       /* coord_new, monotonic seconds */
    double start_grace_s; /* shards wait this long for every rank's hello, and a
                             rank's second shard for every rank's first */
    double first_handed;  /* when the first shard was handed out (0: not yet) */
    int failed_rank;
    sl_status failed_status;
    char failed_msg[1024];
    json_t *unfit;        /* the ranks' unfit values merged (coord_unfit) */
    json_t *unfit_rank;   /* per column: the rank its first_id is from */
    json_t *recorded;     /* the parts recorded, not yet committed: {NUMBER: name} */
    json_t *parts;        /* the parts committed: {name: NUMBER} (coord_parts) */
    sl_status (*guard)(void *user); /* coord_set_guard */
    void *guard_user;
};

void coord_counts_add(coord_counts *into, const coord_counts *c)
{
    into->parts += c->parts;
    into->rows += c->rows;
    into->ok += c->ok;
    into->failed += c->failed;
    into->prompt_tokens += c->prompt_tokens;
    into->generated_tokens += c->generated_tokens;
    into->dropped += c->dropped;
    into->inputs += c->inputs;
    into->skipped += c->skipped;
    into->deferred += c->deferred;
    into->input_bytes += c->input_bytes;
    into->jpeg_bytes += c->jpeg_bytes;
}

void coord_put_finish(wire_buf *w, sl_status status, int64_t skipped, int64_t deferred,
                      const char *message, const char *unfit)
{
    wire_reset(w);
    wire_put_u8(w, COORD_FINISH);
    wire_put_i64(w, status);
    wire_put_i64(w, skipped);
    wire_put_i64(w, deferred);
    wire_put_str(w, message ? message : "");
    wire_put_str(w, unfit); /* NULL: "" */
}

void coord_failures_add(coord_failures *f, const char *stage, const char *cls, int64_t rows)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->kind[i].stage, stage) == 0 && strcmp(f->kind[i].cls, cls) == 0) {
            f->kind[i].rows += rows;
            return;
        }
    if (f->n == COORD_FAILURE_KINDS)
        return; /* stages x classes is far smaller */
    snprintf(f->kind[f->n].stage, sizeof f->kind[f->n].stage, "%s", stage);
    snprintf(f->kind[f->n].cls, sizeof f->kind[f->n].cls, "%s", cls);
    f->kind[f->n++].rows = rows;
}

void coord_put_commit(wire_buf *w, int64_t number, const coord_counts *c, const long *tally,
                      const coord_failures *failures)
{
    wire_reset(w);
    wire_put_u8(w, COORD_COMMIT);
    wire_put_i64(w, number);
    int64_t v[] = {c->rows,    c->ok,     c->failed,      c->prompt_tokens, c->generated_tokens,
                   c->dropped, c->inputs, c->input_bytes, c->jpeg_bytes};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        wire_put_i64(w, v[i]);
    int64_t k = 0;
    for (int i = 0; tally && i < COORD_TALLY_SIZE; i++)
        k += tally[i] != 0;
    wire_put_i64(w, k);
    for (int i = 0; tally && i < COORD_TALLY_SIZE; i++)
        if (tally[i] != 0) {
            wire_put_i64(w, i / COORD_TALLY_KEYS);
            wire_put_i64(w, i % COORD_TALLY_KEYS);
            wire_put_i64(w, tally[i]);
        }
    wire_put_i64(w, failures ? failures->n : 0);
    for (int i = 0; failures && i < failures->n; i++) {
        wire_put_str(w, failures->kind[i].stage);
        wire_put_str(w, failures->kind[i].cls);
        wire_put_i64(w, failures->kind[i].rows);
    }
}

coord *coord_new(sl_ledger *ledger, const char *fingerprint, long first_part, int n_ranks)
{
    coord *c = n_ranks > 0 ? sl_calloc(1, sizeof *c) : NULL;
    if (!c || !(c->fingerprint = sl_strdup(fingerprint ? fingerprint : "")) ||
        !(c->ranks = sl_calloc((size_t)n_ranks, sizeof *c->ranks))) {
        if (c)
            sl_free(c->fingerprint);
        sl_free(c);
        return NULL;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->view_mu, NULL);
    sl_cond_init_monotonic(&c->finished_cv);
    c->ledger = ledger;
    c->first_part = first_part;
    c->n_ranks = n_ranks;
    c->n_shards = -1;
    c->failed_rank = -1;
    c->started = sl_mono_s();
    c->start_grace_s = 10.0;
    c->recorded = json_object();
    c->parts = json_object();
    if (!c->recorded || !c->parts) {
        coord_free(c);
        return NULL;
    }
    return c;
}

void coord_free(coord *c)
{
    if (!c)
        return;
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->view_mu);
    pthread_cond_destroy(&c->finished_cv);
    json_decref(c->unfit);
    json_decref(c->unfit_rank);
    json_decref(c->recorded);
    json_decref(c->parts);
    sl_free(c->fingerprint);
    sl_free(c->ranks);
    sl_free(c);
}

/* The rank's entry, or NULL for a rank outside the job. */
static coord_rank *rank_of(coord *c, int rank)
{
    return rank >= 0 && rank < c->n_ranks ? &c->ranks[rank] : NULL;
}

static void reply_status(wire_buf *reply, sl_status st)
{
    wire_reset(reply);
    wire_put_u8(reply, (uint8_t)st);
    if (st != SL_OK)
        wire_put_str(reply, sl_last_error());
}

/* The first key whose line differs between two fingerprints, for the
 * message (the whole text would be long). */
static void first_difference(const char *a, const char *b, char *out, size_t cap)
{
    while (*a && *a == *b) {
        const char *nl_a = strchr(a, '\n'), *nl_b = strchr(b, '\n');
        size_t la = nl_a ? (size_t)(nl_a - a) : strlen(a), lb = nl_b ? (size_t)(nl_b - b) : strlen(b);
        if (la != lb || memcmp(a, b, la) != 0)
            break;
        a += la + (nl_a != NULL);
        b += lb + (nl_b != NULL);
    }
    const char *line = *a ? a : b;
    size_t key = strcspn(line, "\t\n");
    snprintf(out, cap, "%.*s", (int)(key < 200 ? key : 200), line);
}

static sl_status hello(coord *c, int rank, wire_reader *r, wire_buf *reply)
{
    const char *fp = wire_get_str(r);
    /* Arrived, even if refused below: the start waits for no one else. */
    if (rank_of(c, rank) && !rank_of(c, rank)->said_hello) {
        pthread_mutex_lock(&c->view_mu);
        rank_of(c, rank)->said_hello = true;
        pthread_mutex_unlock(&c->view_mu);
        c->hellos++;
    }
    if (r->bad)
        return sl_fail(SL_ERR_INVALID_ARG, "rank %d: a malformed hello", rank);
    if (strcmp(fp, c->fingerprint) != 0) {
        char key[256];
        first_difference(fp, c->fingerprint, key, sizeof key);
        if (strcmp(key, "model_files") == 0)
            return sl_fail(SL_ERR_INVALID_ARG,
                           "rank %d read another model or projector file than rank 0 at the "
                           "same path (size and first and last MiB compared): every node must "
                           "have the same files", rank);
        return sl_fail(SL_ERR_INVALID_ARG, "rank %d was started with other settings than rank "
                                           "0 (first difference: '%s'): every rank must run "
                                           "the same command", rank, key);
    }
    reply_status(reply, SL_OK);
    wire_put_i64(reply, c->first_part);
    return SL_OK;
}

typedef struct id_list {
    wire_buf *reply;
    int64_t n;
} id_list;

static sl_status put_id(void *user, const char *id)
{
    id_list *l = user;
    wire_put_str(l->reply, id);
    l->n++;
    return l->reply->oom ? sl_fail(SL_ERR_NOMEM, "out of memory listing a shard's rows") : SL_OK;
}

/* Whether a rank that said hello and is not finished has been handed no
 * shard yet. */
static bool a_rank_unserved(const coord *c)
{
    for (int r = 0; r < c->n_ranks; r++)
        if (c->ranks[r].said_hello && !c->ranks[r].finished && c->ranks[r].shards == 0)
            return true;
    return false;
}

static sl_status next(coord *c, int rank, wire_reader *r, wire_buf *reply)
{
    int64_t position = wire_get_i64(r);
    if (r->bad || position < 0)
        return sl_fail(SL_ERR_INVALID_ARG, "rank %d: a malformed shard request", rank);
    /* A rank asks at the shard after its last, which was handed out: a
     * position past the next unhanded shard would leave the shards between
     * to nobody. */
    if (position > c->next_shard)
        return sl_fail(SL_ERR_INVALID_ARG, "rank %d asked for a shard at %lld, past the next "
                                           "one to hand out (%lld)", rank, (long long)position,
                       (long long)c->next_shard);
    /* Until every rank is there (or the grace is up), nobody starts: the
     * first to arrive would read ahead into its queues while the others
     * start, and take their shards. */
    if (c->hellos < c->n_ranks && sl_mono_s() - c->started < c->start_grace_s) {
        reply_status(reply, SL_OK);
        wire_put_i64(reply, COORD_WAIT);
        wire_put_i64(reply, 0);
        return SL_OK;
    }
    /* Nor does a rank take a second shard while a rank that came has had
     * none (up to the grace after the first): a rank reads its shard into
     * its queues at once and asks again, and took a small job's shards
     * while the others were still asking (16 inputs, shards of 6, on 3 ranks: 10,
     * 6 and 0 rows). */
    bool left = !(c->n_shards >= 0 && c->next_shard >= c->n_shards);
    if (left && rank_of(c, rank) && rank_of(c, rank)->shards > 0 && a_rank_unserved(c) &&
        sl_mono_s() - c->first_handed < c->start_grace_s) {
        reply_status(reply, SL_OK);
        wire_put_i64(reply, COORD_WAIT);
        wire_put_i64(reply, 0);
        return SL_OK;
    }
    pthread_mutex_lock(&c->view_mu);
    int64_t shard = left ? c->next_shard++ : -1;
    if (shard >= 0 && rank_of(c, rank)) {
        rank_of(c, rank)->shards++;
        rank_of(c, rank)->last_shard = shard;
    }
    pthread_mutex_unlock(&c->view_mu);
    if (shard >= 0 && c->first_handed == 0)
        c->first_handed = sl_mono_s();
    reply_status(reply, SL_OK);
    wire_put_i64(reply, shard);
    size_t count_at = reply->buf.len;
    wire_put_i64(reply, 0);
    id_list l = {reply, 0};
    sl_status st = shard >= 0 && c->ledger ? sl_ledger_shard_done(c->ledger, shard, put_id, &l)
                                           : SL_OK;
    if (st != SL_OK)
        return st;
    wire_set_i64(reply, count_at, l.n); /* the count, now known */
    return SL_OK;
}

static sl_status end(coord *c, int rank, wire_reader *r, wire_buf *reply)
{
    int64_t n = wire_get_i64(r);
    if (r->bad || n < 0)
        return sl_fail(SL_ERR_INVALID_ARG, "rank %d: a malformed end of input", rank);
    pthread_mutex_lock(&c->view_mu);
    if (c->n_shards < 0 || n < c->n_shards)
        c->n_shards = n;
    /* A shard handed out before the end was known, past it: it held nothing. */
    coord_rank *who = rank_of(c, rank);
    if (who && who->shards > 0 && who->last_shard >= n) {
        who->shards--;
        who->last_shard = -1;
    }
    pthread_mutex_unlock(&c->view_mu);
    reply_status(reply, SL_OK);
    return SL_OK;
}

enum { MAX_PART_ROWS = 1 << 24 };

static sl_status record(coord *c, int rank, wire_reader *r, wire_buf *reply)
{
    const char *name = wire_get_str(r);
    int64_t number = wire_get_i64(r), n = wire_get_i64(r), inputs = wire_get_i64(r),
            written = wire_get_i64(r), failed = wire_get_i64(r);
    if (r->bad || n < 0 || n > MAX_PART_ROWS || inputs < 0 || written < 0 || failed < 0)
        return sl_fail(SL_ERR_INVALID_ARG, "rank %d: a malformed part record", rank);
    /* The ids stay in the message; the ledger takes them packed. */
    wire_buf ids = {0};
    int64_t *shards = n ? sl_malloc((size_t)n * sizeof *shards) : NULL;
    for (int64_t i = 0; i < n && !r->bad; i++) {
        const char *id = wire_get_str(r);
        wire_put_bytes(&ids, id, strlen(id) + 1);
        if (shards)
            shards[i] = wire_get_i64(r);
    }
    sl_status st = SL_OK;
    if (r->bad)
        st = sl_fail(SL_ERR_INVALID_ARG, "rank %d: a malformed part record", rank);
    else if ((n && !shards) || ids.oom)
        st = sl_fail(SL_ERR_NOMEM, "out of memory recording part '%s' of rank %d", name, rank);
    else if (c->guard && (st = c->guard(c->guard_user)) != SL_OK)
        ; /* the part is not recorded: its rank stops there */
    else if (c->ledger)
        st = sl_ledger_part_record(c->ledger, name, (long)number, ids.buf.data ? (char *)ids.buf.data : "",
                                   shards, (size_t)n, (long)inputs, (long)written,
                                   (long)failed);
    wire_free(&ids);
    sl_free(shards);
    char key[24];
    snprintf(key, sizeof key, "%lld", (long long)number);
    if (st == SL_OK && json_object_set_new(c->recorded, key, json_string(name)) != 0)
        st = sl_fail(SL_ERR_NOMEM, "out of memory recording part '%s' of rank %d", name, rank);
    if (st == SL_OK)
        reply_status(reply, SL_OK);
    return st;
}

static sl_status commit(coord *c, int rank, wire_reader *r, wire_buf *reply)
{
    int64_t number = wire_get_i64(r);
    coord_counts part = {.parts = 1};
    part.rows = wire_get_i64(r);
    part.ok = wire_get_i64(r);
    part.failed = wire_get_i64(r);
    part.prompt_tokens = wire_get_i64(r);
    part.generated_tokens = wire_get_i64(r);
    part.dropped = wire_get_i64(r);
    part.inputs = wire_get_i64(r);
    part.input_bytes = wire_get_i64(r);
    part.jpeg_bytes = wire_get_i64(r);
    int64_t k = wire_get_i64(r);
    long tally[COORD_TALLY_SIZE] = {0};
    for (int64_t i = 0; !r->bad && i >= 0 && i < k && i < COORD_TALLY_SIZE; i++) {
        int64_t group = wire_get_i64(r), key = wire_get_i64(r), count = wire_get_i64(r);
        if (group < 0 || group >= COORD_TALLY_GROUPS || key < 0 || key >= COORD_TALLY_KEYS ||
            count < 0)
            r->bad = true;
        else
            tally[group * COORD_TALLY_KEYS + key] += (long)count;
    }
    int64_t m = r->bad ? 0 : wire_get_i64(r);
    coord_failures failures = {0};
    for (int64_t i = 0; !r->bad && i >= 0 && i < m && i < COORD_FAILURE_KINDS; i++) {
        const char *stage = wire_get_str(r), *cls = wire_get_str(r);
        int64_t rows = wire_get_i64(r);
        if (rows < 0)
            r->bad = true;
        else if (!r->bad)
            coord_failures_add(&failures, stage, cls, rows);
    }
    if (r->bad || k < 0 || k > COORD_TALLY_SIZE || m < 0 || m > COORD_FAILURE_KINDS)
        return sl_fail(SL_ERR_INVALID_ARG, "rank %d: a malformed part commit", rank);
    sl_status st = c->ledger ? sl_ledger_part_commit_number(c->ledger, (long)number) : SL_OK;
    if (st != SL_OK)
        return st;
    pthread_mutex_lock(&c->view_mu); /* the figures, now the part is durable */
    coord_counts_add(&c->committed, &part);
    for (int i = 0; i < COORD_TALLY_SIZE; i++)
        c->tally[i] += tally[i];
    for (int i = 0; i < failures.n; i++)
        coord_failures_add(&c->failures, failures.kind[i].stage, failures.kind[i].cls,
                           failures.kind[i].rows);
    if (rank_of(c, rank))
        coord_counts_add(&rank_of(c, rank)->committed, &part);
    /* Its name for the report (out of memory: the count still holds it). */
    char key[24];
    snprintf(key, sizeof key, "%lld", (long long)number);
    json_t *name = json_object_get(c->recorded, key);
    if (name && json_object_set_new(c->parts, json_string_value(name), json_integer(number)) != 0)
        sl_log(SL_LOG_WARN, "out of memory: part %lld is left out of the report's list",
               (long long)number);
    pthread_mutex_unlock(&c->view_mu);
    json_object_del(c->recorded, key);
    reply_status(reply, SL_OK);
    return SL_OK;
}

/* Whether v is what a sink's unfit values are: an object of {"rows",
 * "first_id", "why"} objects. */
static bool unfit_shaped(const json_t *v)
{
    const char *column;
    json_t *e;
    if (!json_is_object(v))
        return false;
    json_object_foreach((json_t *)v, column, e) {
        json_t *rows = json_object_get(e, "rows");
        if (!json_is_integer(rows) || json_integer_value(rows) < 0 ||
            !json_is_string(json_object_get(e, "first_id")) || !json_is_string(json_object_get(e, "why")))
            return false;
    }
    return true;
}

/* Merges rank `rank`'s unfit values (unfit_shaped) into c's: the rows
 * summed (at most INT64_MAX), first_id and why the lowest rank's, nothing
 * else of theirs kept. All or nothing: false when out of memory. */
static bool merge_unfit(coord *c, int rank, const json_t *theirs)
{
    json_t *unfit = c->unfit ? json_deep_copy(c->unfit) : json_object();
    json_t *ranks = c->unfit_rank ? json_deep_copy(c->unfit_rank) : json_object();
    bool ok = unfit && ranks;
    const char *column;
    json_t *v;
    json_object_foreach((json_t *)theirs, column, v) {
        if (!ok)
            break;
        json_t *mine = json_object_get(unfit, column);
        json_int_t before = mine ? json_integer_value(json_object_get(mine, "rows")) : 0;
        json_int_t add = json_integer_value(json_object_get(v, "rows"));
        json_int_t rows = add > INT64_MAX - before ? INT64_MAX : before + add;
        bool lower = !mine || rank < json_integer_value(json_object_get(ranks, column));
        const json_t *from = lower ? v : mine;
        json_t *merged = json_pack("{s:I, s:O, s:O}", "rows", (json_int_t)rows, "first_id",
                                   json_object_get(from, "first_id"), "why", json_object_get(from, "why"));
        ok = merged && json_object_set_new(unfit, column, merged) == 0 &&
             (!lower || json_object_set_new(ranks, column, json_integer(rank)) == 0);
    }
    if (!ok) {
        json_decref(unfit);
        json_decref(ranks);
        return false;
    }
    pthread_mutex_lock(&c->view_mu);
    json_decref(c->unfit);
    json_decref(c->unfit_rank);
    c->unfit = unfit;
    c->unfit_rank = ranks;
    pthread_mutex_unlock(&c->view_mu);
    return true;
}

typedef struct numbered_part {
    json_int_t number;
    const char *name;
} numbered_part;

static int by_number(const void *a, const void *b)
{
    json_int_t x = ((const numbered_part *)a)->number, y = ((const numbered_part *)b)->number;
    return (x > y) - (x < y);
}

json_t *coord_parts(coord *c)
{
    pthread_mutex_lock(&c->view_mu);
    size_t n = json_object_size(c->parts), i = 0;
    numbered_part *all = n ? sl_malloc(n * sizeof *all) : NULL;
    json_t *names = n && !all ? NULL : json_array();
    const char *name;
    json_t *number;
    json_object_foreach(c->parts, name, number) {
        if (!names)
            break;
        all[i++] = (numbered_part){json_integer_value(number), name};
    }
    if (n && names)
        qsort(all, n, sizeof *all, by_number);
    for (i = 0; names && i < n; i++)
        if (json_array_append_new(names, json_string(all[i].name)) != 0) {
            json_decref(names);
            names = NULL;
        }
    pthread_mutex_unlock(&c->view_mu);
    sl_free(all);
    return names;
}

json_t *coord_unfit(coord *c)
{
    pthread_mutex_lock(&c->view_mu);
    json_t *copy = c->unfit ? json_deep_copy(c->unfit) : json_object();
    pthread_mutex_unlock(&c->view_mu);
    return copy;
}

static sl_status finish(coord *c, int rank, wire_reader *r, wire_buf *reply)
{
    sl_status status = (sl_status)wire_get_i64(r);
    int64_t skipped = wire_get_i64(r);
    int64_t deferred = wire_get_i64(r);
    const char *msg = wire_get_str(r);
    if (r->bad || skipped < 0 || deferred < 0)
        return sl_fail(SL_ERR_INVALID_ARG, "rank %d: a malformed finish", rank);
    /* Counts for the summary only: the rank is finished whatever they say
     * (a rank that sends none, or a broken field, included). */
    const char *unfit_text = r->at < r->end ? wire_get_str(r) : "";
    coord_rank *who = rank_of(c, rank);
    if ((*unfit_text || r->bad) && who && !who->finished) {
        json_t *unfit = r->bad ? NULL : json_loads(unfit_text, 0, NULL);
        bool shaped = unfit_shaped(unfit);
        if (!shaped || !merge_unfit(c, rank, unfit))
            sl_log(SL_LOG_WARN, "rank %d's count of values its Parquet parts could not hold is left out of "
                                "_summary.json: %s", rank, shaped ? "out of memory" : "malformed");
        json_decref(unfit);
    }
    if (status != SL_OK && c->failed_rank < 0) {
        c->failed_rank = rank;
        c->failed_status = status;
        snprintf(c->failed_msg, sizeof c->failed_msg, "%s", msg);
    }
    if (who && !who->finished) {
        pthread_mutex_lock(&c->view_mu);
        who->finished = true;
        who->status = status;
        who->committed.skipped += skipped;
        c->committed.skipped += skipped;
        who->committed.deferred += deferred;
        c->committed.deferred += deferred;
        pthread_mutex_unlock(&c->view_mu);
        if (rank != 0)
            c->finished++;
    }
    pthread_cond_broadcast(&c->finished_cv);
    reply_status(reply, SL_OK);
    return SL_OK;
}

void coord_handle(coord *c, int rank, const void *msg, size_t len, wire_buf *reply)
{
    wire_reader r = wire_read(msg, len);
    uint8_t type = wire_get_u8(&r);
    pthread_mutex_lock(&c->mu);
    sl_status st;
    switch (r.bad ? 0 : type) {
    case COORD_HELLO: st = hello(c, rank, &r, reply); break;
    case COORD_NEXT: st = next(c, rank, &r, reply); break;
    case COORD_END: st = end(c, rank, &r, reply); break;
    case COORD_RECORD: st = record(c, rank, &r, reply); break;
    case COORD_COMMIT: st = commit(c, rank, &r, reply); break;
    case COORD_FINISH: st = finish(c, rank, &r, reply); break;
    default: st = sl_fail(SL_ERR_INVALID_ARG, "rank %d sent a request of unknown type %u", rank,
                          (unsigned)type);
    }
    pthread_mutex_unlock(&c->mu);
    if (st != SL_OK)
        reply_status(reply, st);
}

void coord_progress(coord *c, coord_counts *committed, int64_t *shards_handed,
                    int64_t *shards_total)
{
    pthread_mutex_lock(&c->view_mu);
    if (committed)
        *committed = c->committed;
    if (shards_handed)
        *shards_handed = c->n_shards >= 0 && c->next_shard > c->n_shards ? c->n_shards
                                                                          : c->next_shard;
    if (shards_total)
        *shards_total = c->n_shards;
    pthread_mutex_unlock(&c->view_mu);
}

void coord_tally(coord *c, long *out)
{
    pthread_mutex_lock(&c->view_mu);
    memcpy(out, c->tally, sizeof c->tally);
    pthread_mutex_unlock(&c->view_mu);
}

void coord_failures_get(coord *c, coord_failures *out)
{
    pthread_mutex_lock(&c->view_mu);
    *out = c->failures;
    pthread_mutex_unlock(&c->view_mu);
}

bool coord_rank_progress(coord *c, int rank, coord_rank *out)
{
    pthread_mutex_lock(&c->view_mu);
    coord_rank *r = rank_of(c, rank);
    if (r)
        *out = *r;
    pthread_mutex_unlock(&c->view_mu);
    return r != NULL;
}

void coord_set_start_grace(coord *c, double seconds)
{
    pthread_mutex_lock(&c->mu);
    c->start_grace_s = seconds;
    pthread_mutex_unlock(&c->mu);
}

void coord_set_guard(coord *c, sl_status (*guard)(void *user), void *user)
{
    pthread_mutex_lock(&c->mu);
    c->guard = guard;
    c->guard_user = user;
    pthread_mutex_unlock(&c->mu);
}

bool coord_wait_finished(coord *c, int timeout_ms, int *failed_rank, sl_status *status, char *msg,
                         size_t cap)
{
    struct timespec until;
    sl_deadline_after(timeout_ms, &until);
    pthread_mutex_lock(&c->mu);
    while (c->finished < c->n_ranks - 1)
        if (pthread_cond_timedwait(&c->finished_cv, &c->mu, &until) != 0)
            break;
    bool all = c->finished >= c->n_ranks - 1;
    *failed_rank = c->failed_rank;
    *status = c->failed_status;
    snprintf(msg, cap, "%s", c->failed_msg);
    pthread_mutex_unlock(&c->mu);
    return all;
}
