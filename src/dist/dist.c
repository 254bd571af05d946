/* dist/dist.c — sluice/dist.h and dist/dist.h: MPI as the transport of the
 * coordinator's protocol (dist/coord.h). Rank 0 serves on a thread of its
 * own; a rank's request is one message and its reply one message (tags
 * below). Waiting is by polling with short sleeps, never by a blocking MPI
 * call: Open MPI's blocking calls spin a core each, and here a rank shares
 * its cores with its own decode and engine threads. MPI is initialized
 * with MPI_THREAD_SERIALIZED: on rank 0 only the serving thread calls MPI
 * while it runs; on the others each call is under the handle's mutex. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/log.h"
#include "dist/dist.h"

#ifdef SLUICE_HAVE_MPI
#include <mpi.h>
#endif

/* TAG_ALIVE: rank 0's serving thread tells each finished rank, every
 * wait_step_s(), that it still runs: a rank waiting for its goodbye can
 * tell a rank 0 that waits for the others from one that is stuck.
 * TAG_ARRIVED: a rank reached the ranks' start agreement (dist_start). */
enum { TAG_REQUEST = 101, TAG_REPLY = 102, TAG_BYE = 103, TAG_ALIVE = 104, TAG_ARRIVED = 105 };

struct sl_dist {
    int rank, size;
    bool reported;
    bool started;             /* this rank took part in dist_start */
    int speaker;              /* after a failed start, the rank that says why; else -1 */
    pthread_mutex_t mu;       /* a rank's request and its reply, one at a time */
    wire_buf request, reply;  /* under mu */
    coord *coord;             /* rank 0, from dist_serve() */
    pthread_t server;
    bool serving;
    atomic_bool stop_serving;
};

/* The size of the job from the launcher's environment (0: not launched). */
static int launched_size(int *rank)
{
    static const char *const sizes[][2] = {{"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"},
                                           {"PMI_SIZE", "PMI_RANK"},
                                           {"PMIX_SIZE", "PMIX_RANK"},
                                           {"SLURM_NTASKS", "SLURM_PROCID"}};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        const char *n = getenv(sizes[i][0]), *r = getenv(sizes[i][1]);
        /* srun sets SLURM_NTASKS for a batch job's steps too: only with
         * a rank of a step (SLURM_PROCID) beside it, and PMI_* set by srun. */
        if (i == 3 && !getenv("PMI_FD") && !getenv("PMIX_RANK"))
            continue;
        if (n && atoi(n) > 0) {
            *rank = r ? atoi(r) : 0;
            return atoi(n);
        }
    }
    return 0;
}

bool sl_dist_available(void)
{
#ifdef SLUICE_HAVE_MPI
    return true;
#else
    return false;
#endif
}

int sl_dist_launched_rank(void)
{
    int rank = 0;
    return launched_size(&rank) > 1 ? rank : 0;
}

int sl_dist_launched_size(void)
{
    int rank = 0, size = launched_size(&rank);
    return size > 1 ? size : 1;
}

int sl_dist_rank(const sl_dist *d) { return d ? d->rank : 0; }
int sl_dist_size(const sl_dist *d) { return d ? d->size : 1; }
bool sl_dist_reported(const sl_dist *d) { return d && d->reported; }
bool sl_dist_quiet(const sl_dist *d) { return d && d->speaker >= 0 && d->speaker != d->rank; }

int dist_first_warning_s(void)
{
    /* (the tests' knob: their waits for a warning took a minute each) */
    long s = sl_fault_value("dist.warn_s", 30);
    return s < 3600 ? (int)s : 3600;
}

int dist_next_warning_s(int now, int first)
{
    return now < 20 * first ? 2 * now : now + 20 * first;
}

/* Rank 0's step in its wait for the others, and between its notes that it
 * is alive (TAG_ALIVE): a third of the first warning's wait, 10 s, so that
 * a finished rank hears from it three times before it would warn. Outside
 * the MPI part: dist_wait_all, built either way, takes it too. */
static int wait_step_s(void)
{
    int s = dist_first_warning_s() / 3;
    return s < 1 ? 1 : s > 10 ? 10 : s;
}

#ifdef SLUICE_HAVE_MPI

static double seconds_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A rank other than 0 waiting on rank 0 (for `what`) since `since`: a
 * warning when a step of dist_next_warning_s is passed. Nothing else says it:
 * rank 0 stuck (a stopped process, a hung mount or GPU) holds the job, and
 * the other ranks waited for it in silence. */
typedef struct rank0_wait {
    double since;
    int first_s, warn_at_s;
} rank0_wait;

static void rank0_wait_start(rank0_wait *w)
{
    w->since = seconds_now();
    w->first_s = w->warn_at_s = dist_first_warning_s();
}

/* The seconds waited when a warning is due (a step of dist_next_warning_s
 * passed), else -1. */
static int wait_warning_due(rank0_wait *w)
{
    int waited = (int)(seconds_now() - w->since);
    if (waited < w->warn_at_s)
        return -1;
    w->warn_at_s = dist_next_warning_s(w->warn_at_s, w->first_s);
    return waited;
}

static void rank0_wait_check(rank0_wait *w, const sl_dist *d, const char *what)
{
    int waited = wait_warning_due(w);
    if (waited < 0)
        return;
    /* At the error level: the CLI shows the ranks other than 0 nothing
     * less (rank 0 speaks for the job), and this only they can say. */
    sl_log(SL_LOG_ERROR,
           "rank %d has heard nothing from rank 0 for %d s (waiting for %s): a rank 0 that is "
           "stuck (a stopped process, a hung mount or GPU) holds the job: end it (kill -9 rank "
           "0's process) and run the same command again to resume",
           d->rank, waited, what);
}

static void nap(int *us)
{
    struct timespec ts = {0, (long)*us * 1000L};
    nanosleep(&ts, NULL);
    if (*us < 2000)
        *us *= 2;
}

sl_status sl_dist_open(sl_dist **out)
{
    *out = NULL;
    int rank = 0, size = launched_size(&rank);
    if (size <= 1)
        return SL_OK;
    int provided = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS)
        return sl_fail(SL_ERR_IO, "MPI_Init_thread failed: this rank cannot join the job");
    if (provided < MPI_THREAD_SERIALIZED) {
        MPI_Finalize();
        return sl_fail(SL_ERR_INVALID_ARG, "this MPI gives no threads (level %d): sluice needs "
                                           "MPI_THREAD_SERIALIZED", provided);
    }
    sl_dist *d = sl_calloc(1, sizeof *d);
    if (!d) {
        MPI_Finalize();
        return sl_fail(SL_ERR_NOMEM, "out of memory joining the MPI job");
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &d->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &d->size);
    d->speaker = -1;
    pthread_mutex_init(&d->mu, NULL);
    *out = d;
    return SL_OK;
}

void sl_dist_abort(sl_dist *d, int exit_code)
{
    (void)d;
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    abort(); /* MPI_Abort does not return */
}

/* A status and the rank it is from in one int, so that one MPI_MIN finds
 * the first rank that failed and its status (a status is below 64). */
enum { STATUS_SPAN = 64 };

/* Who a rank at the start agreement tells it arrived (or, told_by, who
 * tells it), so that one of the waiting ranks, not each, warns while some
 * rank is stuck before it (every rank warned alike, 8 ranks 8 times, none
 * saying which rank it waited for): rank 0 tells every rank and hears from
 * each, so it names the ranks missing; rank r > 0 tells rank r + 1 too. A rank that has heard from rank
 * 0 leaves the warning to it; one that has not warns when it is rank 1 or
 * has not heard from rank r - 1 either: so the lowest waiting rank always
 * warns, and another only to name other missing ranks. O(ranks) messages. */
static int arrival_peers(const sl_dist *d, bool told_by, int *ranks)
{
    int n = 0, next = told_by ? d->rank - 1 : d->rank + 1;
    for (int r = 1; d->rank == 0 && r < d->size; r++)
        ranks[n++] = r;
    if (d->rank > 0)
        ranks[n++] = 0;
    if (d->rank > 0 && next > 0 && next < d->size)
        ranks[n++] = next;
    return n;
}

static bool arrived(int rank)
{
    int flag = 0;
    MPI_Status status;
    return MPI_Iprobe(rank, TAG_ARRIVED, MPI_COMM_WORLD, &flag, &status) == MPI_SUCCESS && flag;
}

/* The start wait's warning, `waited` seconds in, or nothing when another
 * rank gives it (arrival_peers). At the error level: the CLI shows the
 * ranks other than 0 nothing less, and rank 0 may be the one stuck. */
static void warn_start_wait(const sl_dist *d, int waited)
{
    char names[256] = "";
    size_t len = 0;
    int missing = 0;
    if (d->rank == 0) {
        for (int r = 1; r < d->size; r++) {
            if (arrived(r))
                continue;
            if (missing < 16) /* (16 ranks of 7 digits fit in names) */
                len += (size_t)snprintf(names + len, sizeof names - len, "%s%d",
                                        missing ? ", " : "", r);
            else if (missing == 16)
                len += (size_t)snprintf(names + len, sizeof names - len, ", ...");
            missing++;
        }
        if (!missing) /* (every note came: the agreement ends at once) */
            return;
        sl_log(SL_LOG_ERROR, "rank 0 has waited %d s for %d rank%s to finish their start check: "
               "%s: a rank that is stuck there (a hung mount), or that runs another sluice "
               "build (every node must run the same one: `sluice --version`, its build line), "
               "holds the job: end it and run the same command again", waited, missing,
               missing == 1 ? "" : "s", names);
        return;
    }
    if (arrived(0) || (d->rank > 1 && arrived(d->rank - 1)))
        return;
    if (d->rank > 1)
        snprintf(names, sizeof names, " and rank %d", d->rank - 1);
    sl_log(SL_LOG_ERROR, "rank %d has waited %d s for the other ranks to finish their start "
           "check: rank 0 (it checks the output and opens its ledger there)%s ha%s not: a rank "
           "that is stuck there (a hung mount), or that runs another sluice build (every node "
           "must run the same one: `sluice --version`, its build line), holds the job: end it "
           "and run the same command again", d->rank, waited, names, d->rank > 1 ? "ve" : "s");
}

/* The ranks' agreement on whether each can go on (st): SL_OK, or the
 * first failed rank's status, it the speaker (dist_start). */
static sl_status agree(sl_dist *d, sl_status st)
{
    int mine = st == SL_OK ? d->size * STATUS_SPAN : d->rank * STATUS_SPAN + (int)st, first = 0;
    char why[1024];
    snprintf(why, sizeof why, "%s", sl_last_error()); /* an MPI failure below replaces it */
    int *to = sl_calloc((size_t)d->size + 1, sizeof *to);
    MPI_Request *told = sl_calloc((size_t)d->size + 1, sizeof *told);
    if (!to || !told) {
        sl_free(to);
        sl_free(told);
        return sl_fail(SL_ERR_NOMEM, "out of memory joining the ranks at the job's start");
    }
    int n_to = arrival_peers(d, false, to);
    MPI_Request req;
    int done = 0;
    rank0_wait wait; /* (on all the ranks, not rank 0 alone) */
    rank0_wait_start(&wait);
    /* Polled, not MPI_Allreduce: a rank that is still checking (opening a
     * ledger, listing an input) would have the others spin a core each. */
    pthread_mutex_lock(&d->mu);
    bool sent = true;
    for (int i = 0; i < n_to && sent; i++)
        sent = MPI_Isend("", 0, MPI_BYTE, to[i], TAG_ARRIVED, MPI_COMM_WORLD, &told[i]) ==
               MPI_SUCCESS;
    sent = sent && MPI_Iallreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD, &req) ==
                       MPI_SUCCESS;
    for (int us = 20; sent && !done;) {
        if (MPI_Test(&req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            sent = false;
        else if (!done)
            nap(&us);
        int waited = done ? -1 : wait_warning_due(&wait);
        if (waited >= 0)
            warn_start_wait(d, waited);
    }
    /* Every rank arrived: the notes sent to this one are here, and its own
     * were taken (none left for a later probe of any tag to find). */
    int n_from = sent ? arrival_peers(d, true, to) : 0;
    for (int i = 0; i < n_from && sent; i++) {
        char none[1];
        sent = MPI_Recv(none, 0, MPI_BYTE, to[i], TAG_ARRIVED, MPI_COMM_WORLD,
                        MPI_STATUS_IGNORE) == MPI_SUCCESS;
    }
    if (sent)
        sent = MPI_Waitall(n_to, told, MPI_STATUSES_IGNORE) == MPI_SUCCESS;
    sl_free(to);
    sl_free(told);
    pthread_mutex_unlock(&d->mu);
    if (!sent) /* the others may wait for this rank: the caller ends the job */
        return sl_fail(SL_ERR_IO, "rank %d cannot reach the other ranks at the job's start "
                                  "(an MPI call failed)%s%s", d->rank,
                       st == SL_OK ? "" : "; it could not start: ", st == SL_OK ? "" : why);
    if (first >= d->size * STATUS_SPAN)
        return SL_OK;
    /* Every rank knows that rank `first` could not start, and none waits
     * for another: each stops with the exit status `first`'s failure gives,
     * and `first` alone says why. */
    d->reported = true;
    d->speaker = first / STATUS_SPAN;
    sl_status status = (sl_status)(first % STATUS_SPAN);
    if (st == SL_OK)
        return sl_fail(status, "rank %d could not start the job: this rank stops with it",
                       d->speaker);
    return sl_fail(status, "%s", why);
}

sl_status dist_start(sl_dist *d, sl_status st)
{
    if (d->started)
        return st;
    d->started = true;
    sl_fault("dist.start", NULL); /* tests: a rank stuck in its start check */
    return agree(d, st);
}

sl_status sl_dist_fail_start(sl_dist *d, sl_status st)
{
    return d && st != SL_OK ? dist_start(d, st) : st;
}

sl_status sl_dist_agree_settings(sl_dist *d, sl_status st)
{
    return d ? agree(d, st) : st;
}

static void say_goodbye(sl_dist *d)
{
    for (int r = 1; r < d->size; r++)
        MPI_Send("", 0, MPI_BYTE, r, TAG_BYE, MPI_COMM_WORLD);
}

/* Receives the message from `source` with `tag` into *into, polling; with
 * `wait` (a rank waiting on rank 0 for `what`), warning as it goes. */
static sl_status receive(int source, int tag, wire_buf *into, int *from, const sl_dist *d,
                         rank0_wait *wait, const char *what)
{
    int us = 20;
    for (;;) {
        int flag = 0;
        MPI_Status status;
        if (MPI_Iprobe(source, tag, MPI_COMM_WORLD, &flag, &status) != MPI_SUCCESS)
            return sl_fail(SL_ERR_IO, "MPI_Iprobe failed");
        if (flag) {
            int n = 0;
            MPI_Get_count(&status, MPI_BYTE, &n);
            wire_reset(into);
            if (!sl_buf_reserve(&into->buf, (size_t)n + 1)) /* + 1: a message may be empty */
                return sl_fail(SL_ERR_NOMEM, "out of memory for a message of %d bytes", n);
            if (MPI_Recv(into->buf.data, n, MPI_BYTE, status.MPI_SOURCE, tag, MPI_COMM_WORLD,
                         MPI_STATUS_IGNORE) != MPI_SUCCESS)
                return sl_fail(SL_ERR_IO, "MPI_Recv failed");
            into->buf.len = (size_t)n;
            if (from)
                *from = status.MPI_SOURCE;
            return SL_OK;
        }
        nap(&us);
        if (wait)
            rank0_wait_check(wait, d, what);
    }
}

static void *serve(void *arg)
{
    sl_dist *d = arg;
    wire_buf in = {0}, out = {0};
    int us = 20, alive_every_s = wait_step_s();
    double alive_at = seconds_now();
    while (!atomic_load(&d->stop_serving)) {
        if (seconds_now() - alive_at >= alive_every_s) {
            alive_at = seconds_now();
            for (int r = 1; r < d->size; r++) {
                coord_rank cr;
                if (coord_rank_progress(d->coord, r, &cr) && cr.finished)
                    MPI_Send("", 0, MPI_BYTE, r, TAG_ALIVE, MPI_COMM_WORLD);
            }
        }
        int flag = 0;
        MPI_Status status;
        MPI_Iprobe(MPI_ANY_SOURCE, TAG_REQUEST, MPI_COMM_WORLD, &flag, &status);
        if (!flag) {
            nap(&us);
            continue;
        }
        us = 20;
        int from = 0;
        if (receive(status.MPI_SOURCE, TAG_REQUEST, &in, &from, d, NULL, NULL) != SL_OK) {
            sl_log(SL_LOG_ERROR, "coordinator: %s", sl_last_error());
            break;
        }
        coord_handle(d->coord, from, in.buf.data, in.buf.len, &out);
        if (out.oom) { /* the reply could not be built: say so in one that fits */
            wire_reset(&out);
            wire_put_u8(&out, SL_ERR_NOMEM);
            wire_put_str(&out, "rank 0 ran out of memory answering");
        }
        MPI_Send(out.buf.data, (int)out.buf.len, MPI_BYTE, from, TAG_REPLY, MPI_COMM_WORLD);
    }
    wire_free(&in);
    wire_free(&out);
    return NULL;
}

/* What a request asks rank 0 for, in a warning. */
static const char *request_name(uint8_t type)
{
    switch (type) {
    case COORD_HELLO: return "its answer to this rank's hello";
    case COORD_NEXT: return "the next input shard";
    case COORD_END: return "its answer to the input's end";
    case COORD_RECORD: return "a part to be recorded in the ledger";
    case COORD_COMMIT: return "a part to be marked committed";
    case COORD_FINISH: return "its answer to this rank's finish";
    default: return "an answer";
    }
}

/* One request and its reply, left in d->reply. */
static sl_status call(sl_dist *d)
{
    if (d->request.oom)
        return sl_fail(SL_ERR_NOMEM, "out of memory for a request to rank 0");
    if (d->rank == 0) {
        coord_handle(d->coord, 0, d->request.buf.data, d->request.buf.len, &d->reply);
    } else {
        if (d->request.buf.len > (size_t)INT32_MAX)
            return sl_fail(SL_ERR_TOO_LARGE, "a request to rank 0 of %zu bytes", d->request.buf.len);
        /* Not MPI_Send: a request past the eager limit (a part's row
         * ids) waits for rank 0 to take it, and a stuck rank 0 never does. */
        const char *what = request_name(d->request.buf.len ? d->request.buf.data[0] : 0);
        rank0_wait wait;
        rank0_wait_start(&wait);
        MPI_Request sent;
        if (MPI_Isend(d->request.buf.data, (int)d->request.buf.len, MPI_BYTE, 0, TAG_REQUEST,
                      MPI_COMM_WORLD, &sent) != MPI_SUCCESS)
            return sl_fail(SL_ERR_IO, "rank %d cannot reach rank 0 (MPI_Isend failed)", d->rank);
        for (int done = 0, us = 20; !done;) {
            if (MPI_Test(&sent, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
                return sl_fail(SL_ERR_IO, "rank %d cannot reach rank 0 (MPI_Test failed)", d->rank);
            if (!done) {
                nap(&us);
                rank0_wait_check(&wait, d, what);
            }
        }
        sl_status st = receive(0, TAG_REPLY, &d->reply, NULL, d, &wait, what);
        if (st != SL_OK)
            return st;
    }
    if (d->reply.oom)
        return sl_fail(SL_ERR_NOMEM, "out of memory for rank 0's reply");
    return SL_OK;
}

/* MPI_Finalize waits for every rank, spinning a core: a rank that is done
 * waits for rank 0's goodbye (sent once all are) napping instead. Rank 0
 * says it is alive meanwhile (TAG_ALIVE, each restarting the wait): the
 * other ranks may take long, and then rank 0 names them itself. Its
 * messages come in the order sent, so the goodbye comes after them all. */
static void finalize(sl_dist *d)
{
    rank0_wait wait;
    rank0_wait_start(&wait);
    /* (after a failed start rank 0 never served: nobody says goodbye) */
    for (int us = 20; d->rank != 0 && d->reported && d->speaker < 0;) {
        int flag = 0;
        MPI_Status status;
        if (MPI_Iprobe(0, MPI_ANY_TAG, MPI_COMM_WORLD, &flag, &status) != MPI_SUCCESS)
            break;
        if (!flag) {
            nap(&us);
            rank0_wait_check(&wait, d, "the job's end, this rank's part finished");
            continue;
        }
        char none[1];
        MPI_Recv(none, 0, MPI_BYTE, 0, status.MPI_TAG, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
        if (status.MPI_TAG == TAG_BYE)
            break;
        rank0_wait_start(&wait);
        us = 20;
    }
    MPI_Finalize();
}

#else /* without MPI */

sl_status sl_dist_open(sl_dist **out)
{
    *out = NULL;
    int rank = 0, size = launched_size(&rank);
    if (size > 1)
        return sl_fail(SL_ERR_INVALID_ARG, "started as rank %d of %d by an MPI launcher, but this "
                                           "sluice was built without MPI: install Open MPI "
                                           "(libopenmpi-dev) and rebuild, or run one process",
                       rank, size);
    return SL_OK;
}

void sl_dist_abort(sl_dist *d, int exit_code)
{
    (void)d;
    exit(exit_code);
}

static void *serve(void *arg) { return arg; }

/* (without MPI there is no handle: sl_dist_open makes none) */
sl_status dist_start(sl_dist *d, sl_status st)
{
    (void)d;
    return st;
}

sl_status sl_dist_fail_start(sl_dist *d, sl_status st)
{
    (void)d;
    return st;
}

sl_status sl_dist_agree_settings(sl_dist *d, sl_status st)
{
    (void)d;
    return st;
}

static void say_goodbye(sl_dist *d) { (void)d; }

static sl_status call(sl_dist *d)
{
    coord_handle(d->coord, 0, d->request.buf.data, d->request.buf.len, &d->reply);
    return d->reply.oom ? sl_fail(SL_ERR_NOMEM, "out of memory") : SL_OK;
}

static void finalize(sl_dist *d) { (void)d; }

#endif

sl_status dist_serve(sl_dist *d, sl_ledger *ledger, const char *fingerprint, long first_part,
                     sl_status (*guard)(void *user), void *guard_user)
{
    if (d->rank != 0 || d->coord)
        return sl_fail(SL_ERR_INVALID_ARG, "only rank 0 coordinates, once");
    if (!(d->coord = coord_new(ledger, fingerprint, first_part, d->size)))
        return sl_fail(SL_ERR_NOMEM, "out of memory coordinating the job");
    coord_set_guard(d->coord, guard, guard_user);
    if (pthread_create(&d->server, NULL, serve, d) != 0)
        return sl_fail(SL_ERR_IO, "cannot start the coordinator's thread");
    d->serving = true;
    return SL_OK;
}

/* The reply's status, and its message as the error when it is not SL_OK. */
static sl_status reply_status(sl_dist *d, wire_reader *r)
{
    *r = wire_read(d->reply.buf.data, d->reply.buf.len);
    sl_status st = (sl_status)wire_get_u8(r);
    if (r->bad)
        return sl_fail(SL_ERR_IO, "rank 0 sent rank %d a malformed reply", d->rank);
    if (st != SL_OK) {
        const char *msg = wire_get_str(r);
        return sl_fail(st, "%s", *msg ? msg : "rank 0 refused the request");
    }
    return SL_OK;
}

sl_status dist_hello(sl_dist *d, const char *fingerprint, long *first_part)
{
    pthread_mutex_lock(&d->mu);
    wire_reset(&d->request);
    wire_put_u8(&d->request, COORD_HELLO);
    wire_put_str(&d->request, fingerprint);
    wire_reader r;
    sl_status st = call(d);
    if (st == SL_OK && (st = reply_status(d, &r)) == SL_OK) {
        *first_part = (long)wire_get_i64(&r);
        if (r.bad)
            st = sl_fail(SL_ERR_IO, "rank 0 sent rank %d a malformed reply", d->rank);
    }
    pthread_mutex_unlock(&d->mu);
    return st;
}

static sl_status next_once(sl_dist *d, int64_t position, int64_t *shard,
                           sl_status (*each)(void *user, const char *id), void *user);

sl_status dist_next_shard(sl_dist *d, int64_t position, int64_t *shard,
                          sl_status (*each)(void *user, const char *id), void *user)
{
    sl_status st;
    /* Until every rank is there: asked again every 20 ms. */
    while ((st = next_once(d, position, shard, each, user)) == SL_OK && *shard == COORD_WAIT) {
        struct timespec ts = {0, 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return st;
}

static sl_status next_once(sl_dist *d, int64_t position, int64_t *shard,
                           sl_status (*each)(void *user, const char *id), void *user)
{
    pthread_mutex_lock(&d->mu);
    wire_reset(&d->request);
    wire_put_u8(&d->request, COORD_NEXT);
    wire_put_i64(&d->request, position);
    wire_reader r;
    sl_status st = call(d);
    if (st == SL_OK && (st = reply_status(d, &r)) == SL_OK) {
        *shard = wire_get_i64(&r);
        int64_t n = wire_get_i64(&r);
        for (int64_t i = 0; st == SL_OK && !r.bad && i < n; i++) {
            const char *id = wire_get_str(&r);
            if (!r.bad)
                st = each(user, id);
        }
        if (st == SL_OK && r.bad)
            st = sl_fail(SL_ERR_IO, "rank 0 sent rank %d a malformed shard", d->rank);
    }
    pthread_mutex_unlock(&d->mu);
    return st;
}

/* A request of a type and integers, whose reply is a status alone. */
/* Sends d->request (filled under d->mu, held) and reads the reply's status. */
static sl_status ask_locked(sl_dist *d)
{
    wire_reader r;
    sl_status st = call(d);
    if (st == SL_OK)
        st = reply_status(d, &r);
    pthread_mutex_unlock(&d->mu);
    return st;
}

static sl_status simple(sl_dist *d, uint8_t type, const int64_t *v, int n, const char *text)
{
    pthread_mutex_lock(&d->mu);
    wire_reset(&d->request);
    wire_put_u8(&d->request, type);
    for (int i = 0; i < n; i++)
        wire_put_i64(&d->request, v[i]);
    if (text)
        wire_put_str(&d->request, text);
    return ask_locked(d);
}

sl_status dist_shards_end(sl_dist *d, int64_t n) { return simple(d, COORD_END, &n, 1, NULL); }

void dist_part_start(dist_part *p, const char *name, long number)
{
    wire_reset(&p->msg);
    wire_put_u8(&p->msg, COORD_RECORD);
    wire_put_str(&p->msg, name);
    wire_put_i64(&p->msg, number);
    p->count_at = p->msg.buf.len;
    wire_put_i64(&p->msg, 0); /* n, inputs, written, failed: sealed once known */
    wire_put_i64(&p->msg, 0);
    wire_put_i64(&p->msg, 0);
    wire_put_i64(&p->msg, 0);
    p->n = p->inputs = p->written = p->failed = 0;
    p->number = number;
}

void dist_part_row(dist_part *p, const char *id, int64_t shard)
{
    wire_put_str(&p->msg, id);
    wire_put_i64(&p->msg, shard);
    p->n++;
}

void dist_part_seal(dist_part *p)
{
    wire_set_i64(&p->msg, p->count_at, p->n);
    wire_set_i64(&p->msg, p->count_at + 8, p->inputs);
    wire_set_i64(&p->msg, p->count_at + 16, p->written);
    wire_set_i64(&p->msg, p->count_at + 24, p->failed);
}

sl_status dist_part_record(sl_dist *d, dist_part *p)
{
    if (p->msg.oom)
        return sl_fail(SL_ERR_NOMEM, "out of memory gathering the rows of part %ld", p->number);
    dist_part_seal(p);
    pthread_mutex_lock(&d->mu);
    /* The part's message is the request: swapped in, not copied. */
    wire_buf saved = d->request;
    d->request = p->msg;
    wire_reader r;
    sl_status st = call(d);
    if (st == SL_OK)
        st = reply_status(d, &r);
    p->msg = d->request;
    d->request = saved;
    pthread_mutex_unlock(&d->mu);
    return st;
}

sl_status dist_part_commit(sl_dist *d, long number, const coord_counts *c, const long *tally,
                           const coord_failures *failures)
{
    pthread_mutex_lock(&d->mu);
    coord_put_commit(&d->request, number, c, tally, failures);
    return ask_locked(d);
}

void dist_part_free(dist_part *p) { wire_free(&p->msg); }

sl_status dist_finish(sl_dist *d, sl_status status, const char *message, int64_t skipped,
                      int64_t deferred, const json_t *unfit)
{
    char *unfit_text = json_object_size(unfit) ? json_dumps(unfit, JSON_COMPACT) : NULL;
    pthread_mutex_lock(&d->mu);
    /* unfit_text NULL (none, or out of memory): "" */
    coord_put_finish(&d->request, status, skipped, deferred, message, unfit_text);
    if (d->request.oom && unfit_text) /* rank 0 must hear of the end, without them if need be */
        coord_put_finish(&d->request, status, skipped, deferred, message, NULL);
    free(unfit_text);
    sl_status st = ask_locked(d);
    d->reported = st == SL_OK;
    return st;
}

static void stop_serving(sl_dist *d)
{
    if (d->serving) {
        atomic_store(&d->stop_serving, true);
        pthread_join(d->server, NULL);
        d->serving = false;
    }
}

void dist_stop(sl_dist *d)
{
    if (d)
        stop_serving(d);
}

void sl_dist_free(sl_dist *d)
{
    if (!d)
        return;
    stop_serving(d);
    finalize(d); /* after the serving thread: MPI is called from one thread at a time */
    coord_free(d->coord);
    wire_free(&d->request);
    wire_free(&d->reply);
    pthread_mutex_destroy(&d->mu);
    sl_free(d);
}

/* "rank 0 has finished its part; waiting ... for ranks 2 (shard 57), ..." */
static void log_waiting(sl_dist *d, sl_log_level level, int waited_s)
{
    char ranks[512] = "";
    size_t len = 0;
    int left = 0;
    for (int r = 1; r < d->size; r++) {
        coord_rank cr;
        if (!coord_rank_progress(d->coord, r, &cr) || cr.finished)
            continue;
        if (left++ < 16 && len < sizeof ranks) {
            int n = cr.shards > 0 && cr.last_shard >= 0
                        ? snprintf(ranks + len, sizeof ranks - len, "%s%d (its last shard %lld)",
                                   len ? ", " : "", r, (long long)cr.last_shard)
                        : snprintf(ranks + len, sizeof ranks - len, "%s%d", len ? ", " : "", r);
            len += n > 0 ? (size_t)n : 0;
        }
    }
    sl_log(level,
           "rank 0 has finished its part; waiting %d s so far for %d rank%s: %s%s (a rank that "
           "is stuck holds the job: end the job and run the same command again to resume)",
           waited_s, left, left == 1 ? "" : "s", ranks, left > 16 ? ", ..." : "");
}

sl_status dist_wait_all(sl_dist *d, coord_counts *totals)
{
    memset(totals, 0, sizeof *totals);
    if (d->rank != 0 || !d->coord)
        return SL_OK;
    d->reported = true;
    int failed_rank = -1, waited_s = 0, first_s = dist_first_warning_s(), warn_at_s = first_s;
    int step_s = wait_step_s();
    sl_status status = SL_OK;
    char msg[1024];
    while (!coord_wait_finished(d->coord, step_s * 1000, &failed_rank, &status, msg,
                                sizeof msg)) {
        waited_s += step_s;
        /* A rank that is stuck (a hung mount or GPU, a stopped process)
         * holds the job for good, and nothing else says which one: say
         * it, at 30 s, 60, 120, ... 960 s, then every 10 minutes. */
        bool warn = waited_s >= warn_at_s;
        if (warn)
            warn_at_s = dist_next_warning_s(waited_s, first_s);
        log_waiting(d, warn ? SL_LOG_WARN : SL_LOG_INFO, waited_s);
    }
    if (d->serving) {
        stop_serving(d);
        say_goodbye(d);
    }
    coord_progress(d->coord, totals, NULL, NULL);
    if (failed_rank >= 0)
        return sl_fail(status, "rank %d: %s", failed_rank, msg);
    return SL_OK;
}

void dist_tally(sl_dist *d, long *out)
{
    if (d->rank == 0 && d->coord)
        coord_tally(d->coord, out);
    else
        memset(out, 0, COORD_TALLY_SIZE * sizeof *out);
}

void dist_failures(sl_dist *d, coord_failures *out)
{
    if (d->rank == 0 && d->coord)
        coord_failures_get(d->coord, out);
    else
        out->n = 0;
}

json_t *dist_unfit(sl_dist *d)
{
    return d->rank == 0 && d->coord ? coord_unfit(d->coord) : NULL;
}

json_t *dist_parts(sl_dist *d)
{
    return d->rank == 0 && d->coord ? coord_parts(d->coord) : NULL;
}

bool dist_progress(sl_dist *d, coord_counts *committed, int64_t *shards_handed,
                   int64_t *shards_total)
{
    if (!d || d->rank != 0 || !d->coord)
        return false;
    coord_progress(d->coord, committed, shards_handed, shards_total);
    return true;
}

bool dist_rank_progress(sl_dist *d, int rank, coord_rank *out)
{
    return d && d->rank == 0 && d->coord && coord_rank_progress(d->coord, rank, out);
}
