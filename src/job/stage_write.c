/* job/stage_write.c — the write stage: each row's cells (job/schema.h) to
 * the sink's open part (io/sink.h), its id to the ledger's open part; a
 * part cut every rows_per_shard rows and committed in two phases with the
 * ledger: rows recorded, file synced, part pending, file renamed, part
 * committed. Only committed parts count in the summary. One worker. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/log.h"
#include "core/redact.h"
#include "job/batch.h"
#include "job/job.h"

static sl_pq_value cell_text(const char *s)
{
    return s ? (sl_pq_value){.ptr = s, .len = strlen(s)} : (sl_pq_value){.is_null = true};
}

/* The answers per task (or per input without tasks): --samples. */
static int samples_of(const sl_caption_params *p)
{
    return p->sampling.n > 1 ? p->sampling.n : 1;
}

/* All of the cells (job/schema.h, CELL_*) of output row i of a row (of
 * output_rows()): with rows_per_task, task i / N's answer i % N (N
 * samples); else with tasks, sample i's answer of each task in its
 * columns; else answer i (with samples) or the one. The results are task
 * t's answer k at t * N + k. */
static void row_cells(const job *j, const caption_row *r, const sl_row *row, int i,
                      sl_pq_value *v)
{
    const sl_caption_params *p = j->p;
    int n = samples_of(p);
    bool per_task = p->n_tasks > 0 && p->rows_per_task;
    int sample = per_task ? i % n : i;
    int piece = per_task || (p->n_tasks == 0 && n > 1) ? i : -1; /* the caption's result */
    const sl_result *res = r->has_result ? &r->result : NULL;
    const sl_result *answer = res; /* what caption, finish_reason and the tokens say */
    if (piece >= 0)
        answer = res && piece < r->n_results ? &r->results[piece] : NULL;
    v[CF_ID] = cell_text(r->rel);
    v[CF_PATH] = cell_text(r->path);
    v[CF_CAPTION] = cell_text(answer ? answer->text : NULL);
    v[CF_FINISH] = cell_text(answer ? answer->finish_reason : NULL);
    v[CF_PROMPT_TOKENS] = (sl_pq_value){.i64 = answer ? answer->prompt_tokens : 0};
    v[CF_GENERATED_TOKENS] = (sl_pq_value){.i64 = answer ? answer->generated_tokens : 0};
    v[CF_CACHED_TOKENS] = (sl_pq_value){.i64 = answer ? answer->cached_tokens : 0};
    v[CF_LOGPROBS] = cell_text(answer ? answer->logprobs : NULL);
    v[CF_SCORES] = cell_text(answer ? answer->scores : NULL);
    v[CELL_TASK] = cell_text(per_task ? p->tasks[i / n].name : NULL);
    v[CELL_SAMPLE] = (sl_pq_value){.i64 = sample};
    for (int t = 0; t < p->n_tasks && !per_task; t++) {
        int at = t * n + sample;
        const sl_result *a = res && at < r->n_results ? &r->results[at] : NULL;
        v[CELL_ANSWER(t, TC_TEXT)] = cell_text(a ? a->text : NULL);
        v[CELL_ANSWER(t, TC_FINISH)] = cell_text(a ? a->finish_reason : NULL);
        v[CELL_ANSWER(t, TC_PROMPT_TOKENS)] = (sl_pq_value){.i64 = a ? a->prompt_tokens : 0};
        v[CELL_ANSWER(t, TC_GENERATED_TOKENS)] =
            (sl_pq_value){.i64 = a ? a->generated_tokens : 0};
        v[CELL_ANSWER(t, TC_CACHED_TOKENS)] = (sl_pq_value){.i64 = a ? a->cached_tokens : 0};
        v[CELL_ANSWER(t, TC_LOGPROBS)] = cell_text(a ? a->logprobs : NULL);
        v[CELL_ANSWER(t, TC_SCORES)] = cell_text(a ? a->scores : NULL);
    }
    int dims[4] = {r->width, r->height, r->source_width, r->source_height};
    for (int k = 0; k < 4; k++)
        v[CF_WIDTH + k] = (sl_pq_value){.is_null = r->width == 0, .i64 = dims[k]};
    const media_row *m = r->media;
    bool video = m && m->is_video;
    /* The list's length as read, also when an image of it failed (m->n
     * then counts those made) or before any was decoded (no media yet). */
    int list = m && !video ? (m->listed ? m->listed : m->n) : (int)r->n_list;
    v[CF_IMAGE_COUNT] = (sl_pq_value){.is_null = list == 0, .i64 = list};
    v[CF_VIDEO_FRAMES] = (sl_pq_value){.is_null = !video, .i64 = video ? m->n : 0};
    v[CF_VIDEO_SECONDS] = (sl_pq_value){.is_null = !video, .f64 = video ? m->seconds : 0};
    v[CF_MODEL] = cell_text(j->model_name);
    /* An answer's own seed: the one that reproduces it (the row's when the
     * server drew all of them from it). */
    uint64_t seed = n > 1 && !job_answers_share_seed(p) ? sl_sampling_answer_seed(r->seed, sample)
                                                         : r->seed;
    v[CF_SEED] = (sl_pq_value){.i64 = (int64_t)(seed & INT64_MAX)};
    double ms[7] = {r->decode_ms,
                    res ? res->queue_ms : 0.0,
                    res ? res->prefill_ms : 0.0,
                    res ? res->encode_ms : 0.0,
                    res ? res->ttft_ms : 0.0,
                    res ? res->generate_ms : 0.0,
                    (sl_mono_s() - r->started) * 1e3};
    for (int k = 0; k < 7; k++)
        v[CF_DECODE_MS + k] = (sl_pq_value){.f64 = ms[k]};
    uint64_t sent = 0;
    bool sends = job_row_sent_bytes(j, r, &sent);
    v[CELL_FORMAT] = cell_text(r->format);
    v[CELL_INPUT_BYTES] = (sl_pq_value){.is_null = !r->input_sized, .i64 = (int64_t)r->input_bytes};
    v[CELL_JPEG_BYTES] = (sl_pq_value){.is_null = !sends, .i64 = (int64_t)sent};
    v[CF_ERROR_STAGE] = cell_text(sl_row_error_stage(row));
    v[CF_ERROR] = cell_text(sl_row_error(row));
    /* A WebDataset sample with an image is one to train on: a failed row
     * is its .json alone (Parquet keeps the bytes beside the error). */
    bool bytes = r->data && j->p->include_image_bytes &&
                 !(sl_row_failed(row) && strcmp(sl_sink_format(j->sink), "webdataset") == 0);
    v[CELL_IMAGE_BYTES] = bytes ? (sl_pq_value){.ptr = r->data, .len = r->len}
                                : (sl_pq_value){.is_null = true};
}

/* The output rows a row becomes: with rows_per_task one per task and
 * answer, else one per answer (--samples N: N), else one. */
static int output_rows(const job *j)
{
    const sl_caption_params *p = j->p;
    if (job_is_batch(p))
        return 1;
    return (p->n_tasks > 0 && p->rows_per_task ? p->n_tasks : 1) * samples_of(p);
}

/* Adds the choice `text` is among `choices` to counts (an answer that is
 * none of them, from a stage that set it, is not counted). */
static void tally(long *counts, const char *const *choices, int n, const char *text)
{
    for (int i = 0; text && i < n; i++)
        if (strcmp(choices[i], text) == 0) {
            counts[i]++;
            return;
        }
}

/* The choices a row's answers took, into the open part's counts (task t's
 * answer k is result t * N + k): a written row's, or a dropped one's. */
static void count_answers(job *j, const caption_row *r, const sl_row *row, bool dropped)
{
    const sl_caption_params *p = j->p;
    if (!r->has_result || sl_row_failed(row))
        return;
    int n = samples_of(p);
    int group = dropped ? SL_MAX_TASKS : 0;
    for (int t = 0; t < (p->n_tasks > 0 ? p->n_tasks : 1); t++) {
        const char *const *choices;
        int n_choices = job_choices(p, t, &choices);
        for (int k = 0; n_choices && k < n; k++) {
            int at = t * n + k;
            if (r->n_results == 0 && at == 0)
                tally(j->part.answers[group + t], choices, n_choices, r->result.text);
            else if (at < r->n_results)
                tally(j->part.answers[group + t], choices, n_choices, r->results[at].text);
        }
    }
}

/* --answer-columns where an input is several output rows (--samples,
 * --rows-per-task): output row i's own columns, from the answers it holds
 * (task i / N's answer i % N, or each task's answer i), into *own (a copy
 * of the row's columns). The row's columns (set with each task's first
 * answer, for the stages) serve one row an input. */
static sl_status answer_columns_of_row(const job *j, const caption_row *r, const sl_row *row,
                                       int i, json_t **own)
{
    const sl_caption_params *p = j->p;
    int n = samples_of(p);
    bool per_task = p->n_tasks > 0 && p->rows_per_task;
    *own = NULL;
    if (j->answer_cols.n == 0 || (n == 1 && !per_task) || !r->has_result ||
        sl_row_failed(row))
        return SL_OK;
    if (!(*own = r->extra ? json_copy(r->extra) : json_object()))
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory writing its answer columns", r->rel);
    answer_columns_drop(&j->answer_cols, *own);
    if (per_task)
        return i < r->n_results
                   ? answer_columns_fill(&j->answer_cols, i / n, r->results[i].text, own)
                   : SL_OK;
    sl_status st = SL_OK;
    for (int t = 0; st == SL_OK && t < (p->n_tasks > 0 ? p->n_tasks : 1); t++)
        if (t * n + i < r->n_results)
            st = answer_columns_fill(&j->answer_cols, t, r->results[t * n + i].text, own);
    return st;
}

/* Marks the --columns names the row holds (a column, or a struct's field
 * at that path): a name no row held is most likely misspelt, and its
 * column was null (Parquet) or absent (JSONL) without a word. */
static void note_columns_seen(job *j, const json_t *extra)
{
    for (int i = 0; j->columns_seen && extra && i < j->p->n_columns; i++)
        if (!j->columns_seen[i] && sl_columns_value(j->schema.cols, (size_t)i, extra))
            j->columns_seen[i] = true;
}

/* Writes the row (or its row for each task or answer): its cells laid out
 * in the schema's order. */
static sl_status write_row(job *j, const caption_row *r, const sl_row *row)
{
    if (job_is_batch(j->p)) {
        /* OpenAI's batch output line (a stage's copy k of a row answers
         * under custom_id "<custom_id>#k"); with errors_file, a failed
         * request goes to the errors part instead. */
        sl_pq_value cells[BATCH_CELLS];
        batch_cells_text owned;
        bool to_errors = j->errors_sink && sl_row_failed(row);
        batch_cells(j, r, row, to_errors, cells, &owned);
        sl_sink *sink = to_errors ? j->errors_sink : j->sink;
        sl_status st = sl_sink_write(sink, &(sl_schema_row){.cells = cells, .extra = r->extra,
                                                             .id = r->rel});
        batch_cells_free(&owned);
        return st;
    }
    const caption_schema *s = &j->schema;
    int n_rows = output_rows(j);
    /* A URL's password and signature are not the output's (core/redact.h):
     * the path column shows the URL without them. */
    char *shown = NULL;
    if (sl_redact_needed(r->path) && !(shown = sl_redact_dup(r->path)))
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory writing its row", r->rel);
    sl_status st = SL_OK;
    for (int t = 0; st == SL_OK && t < n_rows; t++) {
        sl_pq_value all[CELL_COUNT], cells[CELL_COUNT];
        row_cells(j, r, row, t, all);
        if (shown)
            all[CF_PATH] = cell_text(shown);
        for (size_t h = 0; h < s->schema.n_head; h++)
            cells[h] = all[s->head_cell[h]];
        if (s->schema.n_tail)
            cells[s->schema.n_head] = all[CELL_IMAGE_BYTES];
        /* With errors_file, a failed row goes to the errors part. */
        sl_sink *sink = j->errors_sink && sl_row_failed(row) ? j->errors_sink : j->sink;
        json_t *own = NULL;
        st = answer_columns_of_row(j, r, row, t, &own);
        if (st == SL_OK)
            st = sl_sink_write(sink, &(sl_schema_row){.cells = cells, .extra = own ? own : r->extra, .id = r->rel});
        json_decref(own);
    }
    sl_free(shown);
    if (st == SL_OK)
        count_answers(j, r, row, false);
    if (st == SL_OK)
        note_columns_seen(j, r->extra);
    return st;
}

/* What the gallery, the live page and on_row show of a row with tasks
 * (or answers): each answer under its task's name (and its number, with
 * --samples), or its number. NULL: the caption alone (or OOM). */
static char *answers_text(const job *j, const caption_row *r)
{
    if (!r->has_result || r->n_results == 0)
        return NULL;
    const sl_caption_params *p = j->p;
    int per = samples_of(p), n = r->n_results;
    if (p->n_tasks > 0 && n > p->n_tasks * per)
        n = p->n_tasks * per;
    char label[128];
    size_t len = 1;
    for (int i = 0; i < n; i++)
        len += sizeof label + 3 + (r->results[i].text ? strlen(r->results[i].text) : 0);
    char *out = sl_malloc(len), *at = out;
    for (int i = 0; out && i < n; i++) {
        if (p->n_tasks == 0)
            snprintf(label, sizeof label, "%d", i + 1);
        else if (per > 1)
            snprintf(label, sizeof label, "%.100s %d", p->tasks[i / per].name, i % per + 1);
        else
            snprintf(label, sizeof label, "%.100s", p->tasks[i].name);
        at += snprintf(at, len - (size_t)(at - out), "%s%s: %s", i ? "\n" : "", label,
                       r->results[i].text ? r->results[i].text : "");
    }
    return out;
}

/* A test fault (core/fault.h) at a step of the commit: a pause, or an error. */
static sl_status commit_point(const char *point, const char *part)
{
    int err = sl_fault(point, part);
    return err ? sl_fail(SL_ERR_IO, "cannot commit '%s': %s", part, strerror(err)) : SL_OK;
}

/* Commits the open shard, in two phases with the ledger (ledger/ledger.h
 * says why each crash point is safe): the file synced under its temporary
 * name, its rows recorded as a pending part, the file renamed and the folder
 * synced, the part committed. Only then do its rows count in the summary. */
static sl_status part_durable(void *arg)
{
    job *j = arg;
    const char *part = sl_sink_part_path(j->sink);
    sl_status st = commit_point("commit.after_sync", part);
    /* The errors part goes first: a crash before the part commits leaves
     * it behind, and the rerun writes it again (batch_errors_collect
     * reads only those of committed parts). */
    if (st == SL_OK && j->errors_sink)
        st = sl_sink_commit(j->errors_sink, NULL, NULL);
    if (st == SL_OK)
        st = job_part_prepare(j);
    if (st == SL_OK)
        st = commit_point("commit.after_prepare", part);
    return st;
}

static sl_status commit_shard(job *j)
{
    const char *part = sl_sink_part_path(j->sink);
    sl_status st = job_check_bucket_lock(j);
    if (st == SL_OK)
        st = commit_point("commit.begin", part);
    if (st == SL_OK) /* rename, folder sync: io/shard.c has their points */
        st = sl_sink_commit(j->sink, part_durable, j);
    /* The object's size for the ledger's commit to record; under MPI
     * rank 0 records other ranks' parts, sized when a later run lists them. */
    if (st == SL_OK && j->remote && !j->dist)
        job_note_upload(j, part, sl_sink_uploaded_bytes(j->sink));
    if (st == SL_OK)
        st = job_part_commit(j);
    if (st == SL_OK)
        st = commit_point("commit.end", part);
    if (st == SL_OK) {
        snprintf(j->last_shard, sizeof j->last_shard, "%s", part);
        if (!j->first_shard_path[0])
            snprintf(j->first_shard_path, sizeof j->first_shard_path, "%s", part);
        const char *slash = strrchr(part, '/');
        if (json_array_append_new(j->parts, json_string(slash ? slash + 1 : part)) != 0)
            sl_log(SL_LOG_WARN, "out of memory: part '%s' is left out of the report's list",
                   part);
        j->sum->shards++;
        j->sum->rows += j->part.rows;
        j->sum->rows_ok += j->part.ok;
        j->sum->rows_failed += j->part.failed;
        j->sum->prompt_tokens += j->part.prompt_tokens;
        j->sum->generated_tokens += j->part.generated_tokens;
        j->sum->rows_dropped += j->part.dropped;
        j->sum->inputs_done += j->part.inputs;
        j->sum->input_bytes += j->part.input_bytes;
        j->sum->jpeg_bytes += j->part.jpeg_bytes;
        for (int t = 0; t < 2 * SL_MAX_TASKS; t++)
            for (int c = 0; c < SL_MAX_CHOICES; c++)
                j->answers[t][c] += j->part.answers[t][c];
    }
    memset(&j->part, 0, sizeof j->part);
    return st;
}

/* Gives up the open shard: its rows are in no committed part, so a rerun
 * captions them again. After a failed write or a failed row record, the
 * file may hold rows the ledger lacks or lack rows the ledger holds. */
static void abandon_shard(job *j)
{
    job_part_abandon(j);
    sl_sink_abandon(j->sink); /* removes the temporary */
    if (j->errors_sink)
        sl_sink_abandon(j->errors_sink);
    memset(&j->part, 0, sizeof j->part);
}

static sl_status next_shard(job *j)
{
    sl_status st = commit_shard(j);
    if (st != SL_OK)
        return st; /* the writer fails; write_close gives the part up */
    j->shard += j->part_stride;
    j->shard_rows = 0;
    return job_open_output(j);
}

static sl_status write_init(void *cfg, int worker, void **state)
{
    *state = cfg;
    return SL_OK;
}

/* The rows of an input with copies (a stage's fan-out, sl_row_emit) are
 * each recorded in the ledger under their own id ("<input>#0" for the
 * input's own row, "<input>#k" for copy k), and the input's id is recorded
 * with the last of them. A crash in between leaves the input not done: the
 * rerun makes its rows again and writes only those not committed before, so
 * each is written once (provided the stage makes the same copies again). */
static sl_status group_member(job *j, const sl_row *row, const caption_row *r, char **member,
                              bool *committed)
{
    *member = NULL;
    *committed = false;
    if (!sl_row_in_group(row) || !job_records(j))
        return SL_OK;
    *member = r->root_len ? sl_strdup(r->rel) : sl_asprintf("%s#0", r->rel);
    if (!*member)
        return sl_fail(SL_ERR_NOMEM, "out of memory recording '%s'", r->rel);
    return job_is_done(j, *member, committed);
}

static sl_status input_done(job *j, const sl_row *row, const caption_row *r)
{
    if (!sl_row_in_group(row) || !sl_row_completes_input(row) || !job_records(j))
        return SL_OK;
    char *input = job_row_input_id(r);
    sl_status st = input ? job_part_add(j, input, r->shard)
                         : sl_fail(SL_ERR_NOMEM, "out of memory recording '%s'", r->rel);
    sl_free(input);
    return st;
}

static sl_status write_process(void *state, sl_row *const *rows, size_t n)
{
    job *j = state;
    for (size_t i = 0; i < n; i++) {
        caption_row *r = sl_row_data(rows[i]);
        if (sl_row_deferred(rows[i])) {
            /* Not sent to the engine before a stop: neither written nor in
             * the ledger, so the resume does it (and its input, whose
             * other rows do not complete it: sl_row_completes_input). */
            j->sum->rows_deferred++;
            continue;
        }
        char *member;
        bool committed;
        sl_status st = group_member(j, rows[i], r, &member, &committed);
        /* A dropped row is not written, but the ledger records it with the
         * part, so a rerun skips it as done; so is a row of an input with
         * copies that an earlier run committed. */
        bool dropped = sl_row_dropped(rows[i]) || committed;
        if (st == SL_OK && !dropped) {
            job_answer_room(j, rows[i]); /* a row that never reached the engine */
            st = write_row(j, r, rows[i]);
        }
        if (st == SL_OK && !committed)
            st = job_part_add(j, member ? member : r->rel, r->shard);
        sl_free(member);
        if (st == SL_OK)
            st = input_done(j, rows[i], r);
        bool failed = sl_row_failed(rows[i]);
        /* The summary counts what the output holds: each row written (with
         * rows_per_task, each task's), so rows.total is the parts' lines;
         * the inputs apart, each once, with the row that finished it. */
        long written = dropped ? 0 : output_rows(j);
        if (st == SL_OK && (!sl_row_in_group(rows[i]) || sl_row_completes_input(rows[i])))
            j->part.inputs++;
        if (st == SL_OK && committed) {
            /* counted by the run that wrote it */
        } else if (st == SL_OK && dropped) {
            j->part.dropped++;
            count_answers(j, r, rows[i], true);
        } else if (st == SL_OK) {
            j->part.rows += written;
            j->part.ok += failed ? 0 : written;
            j->part.failed += failed ? written : 0;
            if (failed)
                coord_failures_add(&j->part.failures,
                                   sl_row_error_stage(rows[i]) ? sl_row_error_stage(rows[i])
                                                               : "unknown",
                                   sl_status_class(sl_row_error_status(rows[i])), written);
            if (r->has_result) {
                j->part.prompt_tokens += r->result.prompt_tokens;
                j->part.generated_tokens += r->result.generated_tokens;
            }
            uint64_t sent = 0;
            j->part.input_bytes += r->input_bytes;
            if (j->p->dry_run && job_row_sent_bytes(j, r, &sent))
                j->part.jpeg_bytes += sent;
        }
        /* A part holds whole inputs, cut once it has --shard-rows rows or
         * --shard-bytes bytes. */
        j->shard_rows += written ? written : 1;
        if (st == SL_OK && (j->shard_rows >= j->rows_per_shard ||
                            (j->p->shard_bytes &&
                             sl_sink_part_bytes(j->sink) >= (int64_t)j->p->shard_bytes)))
            st = next_shard(j);
        if (st != SL_OK) {
            /* The writer cannot go on: the executor ends the run, and
             * write_close() gives the open part up. */
            j->write_failed = true;
            return st;
        }
        if (dropped)
            continue;
        char *answers = r->batch ? batch_show_text(r, failed              ? NULL
                                                      : r->n_results > 0 ? r->results[0].text
                                                                         : r->result.text)
                        : failed ? NULL : answers_text(j, r);
        gallery_row gr = {sl_row_seq(rows[i]), r->rel,
                          failed ? NULL : answers ? answers : r->result.text,
                          sl_row_error(rows[i]), sl_row_error_stage(rows[i]),
                          sl_row_error_status(rows[i]), r->thumb, r->thumb_len,
                          (int)written};
        gallery_add(j->gallery, &gr);
        if (failed)
            caption_metrics_row_failed(j->metrics, gr.error_stage,
                                       sl_status_class(gr.error_status));
        if (j->p->on_row) {
            sl_row_view view = {r->rel, failed ? NULL : answers ? answers : r->result.text,
                                sl_row_error(rows[i]), (long)sl_row_seq(rows[i]),
                                sl_row_error_stage(rows[i])};
            j->p->on_row(&view, j->p->on_row_user);
        }
        sl_free(answers);
    }
    return SL_OK;
}

/* Every row written is complete, so the shard is committed whatever ended
 * the run (finished work is never thrown away) unless a write or a commit
 * failed: then the file or the ledger may miss rows, and the part is given
 * up whole. A shard with no rows is not committed (freeing it removes the
 * empty temporary), unless it is the output's first and only one of a run
 * that went to the end: an input with no images still gives a file, but a
 * run that could not start (an engine that did not load) leaves no part, so
 * the ledger takes the corrected settings of the next run. */
static void write_close(void *state, sl_exec_end end)
{
    job *j = state;
    if (j->write_failed) {
        abandon_shard(j);
        return;
    }
    if (!sl_sink_part_is_open(j->sink))
        return; /* the next shard could not open: the run already failed */
    if (j->shard_rows == 0 && (j->shard > 0 || j->done_before > 0 || end != SL_END_COMPLETE)) {
        job_part_abandon(j);
        if (j->errors_sink)
            sl_sink_abandon(j->errors_sink);
        return;
    }
    long rows = j->part.rows, inputs = j->part.inputs; /* (the commit clears them) */
    if (commit_shard(j) != SL_OK) {
        /* The cause alone read as a run that ended with a warning: say
         * what it cost and that the same command makes it good. */
        j->sink_status = SL_ERR_IO;
        char *why = sl_strdup(sl_last_error()), *part = sl_strdup(sl_sink_part_path(j->sink));
        abandon_shard(j);
        /* Past its rename (a folder sync, the ledger's commit failing) the
         * part is whole under its name, and the next run's reconcile keeps
         * it; an object store's part is not looked for here. */
        if (!j->remote && part && access(part, F_OK) == 0)
            snprintf(j->sink_error, sizeof j->sink_error,
                     "%s; the %ld row%s of that part %s in '%s' but not committed: run the "
                     "same command again once that is fixed (it keeps them)", why ? why : "", rows,
                     rows == 1 ? "" : "s", rows == 1 ? "is" : "are", part);
        else if (rows == 0)
            snprintf(j->sink_error, sizeof j->sink_error,
                     "%s; the %ld input%s of that part (a stage dropped their rows) %s not "
                     "done: run the same command again once that is fixed", why ? why : "", inputs,
                     inputs == 1 ? "" : "s", inputs == 1 ? "is" : "are");
        else
            snprintf(j->sink_error, sizeof j->sink_error,
                     "%s; the %ld row%s of that part %s not in the output: run the same "
                     "command again once that is fixed", why ? why : "", rows, rows == 1 ? "" : "s",
                     rows == 1 ? "is" : "are");
        sl_free(why);
        sl_free(part);
    }
}

sl_status job_open_output(job *j)
{
    const sl_caption_params *p = j->p;
    sl_status st = SL_OK;
    if (!j->sink &&
        ((st = sl_sink_open(job_is_batch(p) && !(p->output_format &&
                                                 strcmp(p->output_format, "parquet") == 0)
                                ? "jsonl"
                                : p->output_format,
                            j->dir, p->overwrite, &j->schema.schema,
                            &j->sink)) != SL_OK ||
         (j->remote && (st = sl_sink_set_remote(j->sink, j->remote)) != SL_OK) ||
         (p->output_compression &&
          (st = sl_sink_set_codec(j->sink, p->output_compression)) != SL_OK)))
        return st;
    char name[64];
    snprintf(name, sizeof name, "part-%05ld.%s", j->shard, sl_sink_extension(j->sink));
    st = sl_sink_part_open(j->sink, name);
    if (st == SL_OK && p->errors_file) {
        /* Overwriting: an errors part of this number is a leftover of a
         * part that was never committed. */
        char errors[64];
        /* A caption job's: the output's columns in JSONL, no image bytes. */
        if (!j->errors_sink && !job_is_batch(p)) {
            j->errors_schema = j->schema.schema;
            j->errors_schema.tail = NULL;
            j->errors_schema.n_tail = 0;
        }
        /* In a bucket, beside the parts: every rank's are there at the end. */
        if (!j->errors_sink &&
            (st = sl_sink_open("jsonl", j->dir, true,
                               job_is_batch(p) ? batch_errors_schema() : &j->errors_schema,
                               &j->errors_sink)) == SL_OK &&
            j->remote)
            st = sl_sink_set_remote(j->errors_sink, j->remote);
        snprintf(errors, sizeof errors, "errors-%05ld.jsonl", j->shard);
        if (st == SL_OK)
            st = sl_sink_part_open(j->errors_sink, errors);
    }
    if (st == SL_OK)
        st = job_part_begin(j, name, j->shard);
    return st;
}

sl_stage_def stage_write(job *j)
{
    return (sl_stage_def){.name = "write", .kind = SL_STAGE_SINK, .workers = 1, .batch_size = 4,
                          .config = j, .init = write_init, .close = write_close,
                          .process = write_process};
}
