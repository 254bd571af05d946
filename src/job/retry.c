/* job/retry.c — --retry-failed: the failed rows of an output's committed
 * parts taken out, so the run captions those inputs again (the ledger's
 * steps and their crash argument: ledger/ledger.h, "Retrying failed rows").
 * A part's failed rows are in its file (their "error" set) or, with
 * --errors-file, in errors-N.jsonl beside it; both are read back
 * (io/part_filter.h): from the output folder, or for an s3:// output from
 * copies downloaded into the state folder, the part then replaced by an
 * upload (a PUT replaces an object whole, as the rename does a file). Run
 * at the start by the process that holds the ledger (rank 0 under MPI),
 * before any row is read. */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/file.h"
#include "core/log.h"
#include "io/part_filter.h"
#include "io/s3.h"
#include "job/job.h"

/* One part's failed rows: their ids once each (drop, for the filter) and
 * in order (ids, NUL-separated, for the ledger); `rows`: failed rows seen,
 * an id once per row. */
typedef struct failed_set {
    sl_idset *drop;
    sl_buf ids;
    size_t n;
    long rows;
} failed_set;

static sl_status add_failed(void *user, const char *id)
{
    failed_set *f = user;
    bool seen;
    int64_t a, b;
    f->rows++;
    sl_status st = sl_idset_add(f->drop, id, 0, 0, &seen, &a, &b);
    if (st != SL_OK || seen)
        return st;
    f->n++;
    return sl_buf_append(&f->ids, id, strlen(id) + 1) ? SL_OK
           : sl_fail(SL_ERR_NOMEM, "out of memory listing failed rows");
}

static sl_status add_begun(void *user, const char *id)
{
    failed_set *f = user;
    bool seen;
    int64_t a, b;
    return sl_idset_add(f->drop, id, 0, 0, &seen, &a, &b);
}

/* The part's file, its errors file and the filtered copy's temporary. An
 * s3:// output's part and errors objects (url, errors_url) are read from
 * copies downloaded into the state folder (part, errors); the copies and
 * the temporary are named as io/shard.h's temporaries, so a killed run's
 * are removed by the next. */
typedef struct part_files {
    char *part, *errors, *tmp;
    char *url, *errors_url; /* s3:// output; else NULL */
} part_files;

static sl_status name_files(const job *j, long number, const char *name, part_files *f)
{
    long pid = (long)getpid();
    f->tmp = sl_asprintf("%s/.%s.tmp-%ld", j->dir, name, pid);
    if (j->remote) {
        /* ending as the part does: its format is known by its name */
        f->part = sl_asprintf("%s/.%s.tmp-get-%ld-%s", j->dir, name, pid, name);
        f->errors = sl_asprintf("%s/.%s.tmp-errors-%ld.jsonl", j->dir, name, pid);
        f->url = sl_asprintf("%s/%s", j->remote, name);
        f->errors_url = sl_asprintf("%s/errors-%05ld.jsonl", j->remote, number);
    } else {
        f->part = sl_asprintf("%s/%s", j->dir, name);
        f->errors = sl_asprintf("%s/errors-%05ld.jsonl", j->dir, number);
    }
    if (f->part && f->errors && f->tmp && (!j->remote || (f->url && f->errors_url)))
        return SL_OK;
    return sl_fail(SL_ERR_NOMEM, "out of memory retrying '%s'", name);
}

static void free_files(part_files *f)
{
    if (f->url) { /* the downloaded copies */
        unlink(f->part);
        unlink(f->errors);
    }
    sl_free(f->part);
    sl_free(f->errors);
    sl_free(f->tmp);
    sl_free(f->url);
    sl_free(f->errors_url);
}

/* An object of an s3:// output into a local copy; *found is false when
 * there is none (no errors object for a part without failed rows). */
static sl_status download(const char *url, const char *path, bool *found)
{
    sl_status st = job_download(url, path);
    *found = st == SL_OK;
    return st == SL_ERR_NOT_FOUND ? SL_OK : st;
}

/* An s3:// output's part and errors objects, into their local copies. */
static sl_status fetch_part(const part_files *f)
{
    bool found;
    sl_status st = download(f->url, f->part, &found);
    if (st == SL_OK && !found)
        st = sl_fail(SL_ERR_NOT_FOUND, "'%s' is gone from the output", f->url);
    if (st == SL_OK)
        st = download(f->errors_url, f->errors, &found);
    return st;
}

/* Step 3 for an s3:// output: the filtered copy uploaded as the part (a PUT
 * replaces an object whole), the errors object deleted. */
static sl_status replace_remote(job *j, const part_files *f)
{
    const sl_s3 *s3 = sl_s3_shared();
    struct stat sb;
    int64_t bytes = stat(f->tmp, &sb) == 0 ? (int64_t)sb.st_size : -1;
    sl_status st = s3 ? sl_s3_upload_file(s3, f->tmp, f->url, 0)
                      : sl_fail(SL_ERR_INVALID_ARG, "no S3 client for '%s'", f->url);
    unlink(f->tmp);
    if (st == SL_OK) /* the ledger records the new object's size */
        job_note_upload(j, f->url, bytes);
    int err = st == SL_OK ? sl_fault("retry.after_rename", f->url) : 0;
    if (err)
        return sl_fail(SL_ERR_IO, "cannot retry the failed rows of '%s': %s", f->url,
                       strerror(err));
    return st == SL_OK ? sl_s3_delete(s3, f->errors_url) : st;
}

/* Step 3: the filtered copy over the part, the errors file gone, both
 * durable. Doing it again gives the same files. */
static sl_status replace_part(job *j, const part_files *f)
{
    if (f->url)
        return replace_remote(j, f);
    sl_status st = sl_file_rename(f->tmp, f->part);
    if (st == SL_OK)
        st = sl_file_sync_dir(j->dir);
    int err = st == SL_OK ? sl_fault("retry.after_rename", f->part) : 0;
    if (err)
        return sl_fail(SL_ERR_IO, "cannot retry the failed rows of '%s': %s", f->part,
                       strerror(err));
    if (st == SL_OK && unlink(f->errors) == 0)
        st = sl_file_sync_dir(j->dir);
    else if (st == SL_OK && errno != ENOENT)
        st = sl_fail(SL_ERR_IO, "cannot remove '%s': %s", f->errors, strerror(errno));
    return st;
}

typedef struct retry_walk {
    job *j;
    long rows, parts, kept; /* ids taken out, parts rewritten, rows those kept */
} retry_walk;

/* A retry an earlier run began: the ids it recorded are taken out again. */
static sl_status settle_part(void *user, long number, const char *name)
{
    retry_walk *w = user;
    failed_set f = {0};
    part_files files = {0};
    long removed, kept;
    sl_status st = name_files(w->j, number, name, &files);
    if (st == SL_OK)
        st = sl_idset_open(&f.drop);
    if (st == SL_OK)
        st = sl_ledger_retry_ids(w->j->ledger, number, add_begun, &f);
    if (st == SL_OK && files.url)
        st = fetch_part(&files);
    if (st == SL_OK)
        st = sl_part_filter(files.part, files.tmp, f.drop, w->j->p->output_compression,
                            &removed, &kept);
    if (st == SL_OK)
        st = replace_part(w->j, &files);
    if (st == SL_OK)
        st = sl_ledger_retry_finish(w->j->ledger, number);
    if (st == SL_OK)
        w->parts++;
    sl_idset_free(f.drop);
    free_files(&files);
    return st;
}

static sl_status retry_part(void *user, long number, const char *name)
{
    retry_walk *w = user;
    /* A stop (Ctrl-C) between parts: each part is taken out whole or not
     * at all, so the output is whole either way; the same command goes on
     * with the parts left (those done hold no failed row any more). */
    const sl_atomic_int *stop = w->j->p->stop_requests;
    if (stop && atomic_load(stop))
        return sl_fail(SL_ERR_STOPPED, "stopped while taking the failed rows out of '%s' (%ld "
                       "part%s done, the others as they were)", w->j->p->output_dir, w->parts,
                       w->parts == 1 ? "" : "s");
    failed_set f = {0};
    part_files files = {0};
    long removed = 0, kept = 0;
    sl_status st = name_files(w->j, number, name, &files);
    if (st == SL_OK)
        st = sl_idset_open(&f.drop);
    if (st == SL_OK && files.url)
        st = fetch_part(&files);
    if (st == SL_OK)
        st = sl_part_failed_ids(files.part, add_failed, &f);
    long in_part = f.rows;
    if (st == SL_OK && access(files.errors, F_OK) == 0)
        st = sl_part_failed_ids(files.errors, add_failed, &f);
    if (st != SL_OK || f.n == 0)
        goto out;
    /* 1: the part without them, synced; 2: durably begun; 3; 4. */
    if ((st = sl_part_filter(files.part, files.tmp, f.drop, w->j->p->output_compression,
                             &removed, &kept)) != SL_OK)
        goto out;
    /* The rows the part counts as written that go: those in its file and
     * those in its errors file (written there instead). */
    st = sl_ledger_retry_begin(w->j->ledger, number, (const char *)f.ids.data, f.n,
                               removed + (f.rows - in_part));
    if (st != SL_OK) {
        unlink(files.tmp);
        goto out;
    }
    int err = sl_fault("retry.after_begin", files.part);
    if (err)
        st = sl_fail(SL_ERR_IO, "cannot retry the failed rows of '%s': %s", files.part,
                     strerror(err));
    if (st == SL_OK)
        st = replace_part(w->j, &files);
    if (st == SL_OK)
        st = sl_ledger_retry_finish(w->j->ledger, number);
    if (st == SL_OK) {
        w->rows += (long)f.n;
        w->parts++;
        w->kept += kept;
    }
out:
    sl_idset_free(f.drop);
    sl_buf_free(&f.ids);
    free_files(&files);
    return st;
}

sl_status job_retry_settle(job *j, long *parts)
{
    retry_walk w = {.j = j};
    sl_status st = sl_ledger_each_retry(j->ledger, settle_part, &w);
    *parts = w.parts;
    return st;
}

sl_status job_retry_failed(job *j, long *rows, long *parts, long *kept)
{
    retry_walk w = {.j = j};
    sl_status st = sl_ledger_each_part(j->ledger, retry_part, &w);
    *rows = w.rows;
    *parts = w.parts;
    *kept = w.kept;
    return st;
}
