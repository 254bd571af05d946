/* job/stage_engine.c — the engine stage: one replica per worker, each its
 * own engine (sl_engine: llama.cpp or HTTP servers) and batching thread.
 * Rows are submitted as they come and complete out of order; a request the
 * engine refuses fails its row alone, a broken engine fails the worker. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/clock.h"
#include "core/error.h"
#include "job/batch.h"
#include "job/job.h"
#include "job/template.h"
#include "job/turns.h"

/* One replica: its own model, context and batching thread (an async stage
 * worker). Rows are submitted as they come and complete out of order. */
typedef struct replica {
    job *j;
    sl_engine *engine;
    replica_metrics *metrics;
    bool stopped;   /* the run is stopping and the engine sends nothing more */
    sl_completion done[64];
} replica;

/* Whether a prompt goes to the model as it is, every row the same: not
 * filled from the row's columns, and not holding the --image-placeholder
 * mark (the images go there: a conversation of parts, not this text; the
 * mark may be mtmd's own). */
static bool sent_as_is(const sl_caption_params *p, const char *prompt)
{
    const char *mark = p->image_placeholder;
    return prompt && !template_has_fields(prompt) && !(mark && *mark && strstr(prompt, mark));
}

static sl_status engine_init(void *cfg, int worker, void **state)
{
    job *j = cfg;
    sl_llama_params lp = j->p->llama;
    if (lp.n_threads <= 0) {
        /* The cores are shared between replicas. */
        long cores = sysconf(_SC_NPROCESSORS_ONLN) / (j->p->replicas > 0 ? j->p->replicas : 1);
        lp.n_threads = cores < 1 ? 1 : (int)cores;
    }
    if (j->p->n_gpus > 0)
        lp.gpu = j->p->gpus[worker];
    /* The longest answer asked for sizes the context: a choice takes one
     * position (sized for the prompts alone: on a GPU, more sequences), a
     * task its own max_tokens (a task's 100000 past the model's context
     * passed this check and failed every row). */
    const char *const *choices;
    lp.max_tokens_hint = job_choices(j->p, 0, &choices) == 0 ? j->p->sampling.max_tokens : 1;
    /* The prompt every row sends as it is sizes it too: a --prompt longer
     * than the model's context failed every row, one by one, each told to
     * lower its max_tokens. One filled from a row's columns is the row's
     * own, and fails alone. Each task is its own sequence: its prompt with
     * its own max_tokens (the longest prompt of one task with the largest
     * max_tokens of another refused tasks that each fit). */
    sl_llama_prompt_hint hints[SL_MAX_TASKS];
    char names[SL_MAX_TASKS][96], system_names[SL_MAX_TASKS][96];
    if (!job_is_batch(j->p) && j->p->n_tasks == 0 && sent_as_is(j->p, j->p->prompt)) {
        lp.prompt_hint = j->p->prompt;
        lp.prompt_hint_name = "the prompt (--prompt)";
    }
    for (int i = 0; i < j->p->n_tasks && i < SL_MAX_TASKS; i++) {
        const sl_caption_task *t = &j->p->tasks[i];
        snprintf(names[i], sizeof names[i], "the prompt of task '%.60s'", t->name);
        snprintf(system_names[i], sizeof system_names[i], "the system prompt of task '%.60s'",
                 t->name);
        /* a task's own system prompt is in each of its requests: sized too
         * (one past the context failed every row, told to lower its
         * max_tokens); one holding {fields} by its text, as the job's is
         * (its fixed part is in every row; a long field fails its row
         * alone), not by the job's system prompt it replaces (a long
         * --system that no task sends refused the job) */
        hints[i] = (sl_llama_prompt_hint){
            .prompt = !job_is_batch(j->p) && sent_as_is(j->p, t->prompt) ? t->prompt : NULL,
            .name = names[i],
            .max_tokens = job_choices(j->p, i, &choices) == 0 ? t->sampling.max_tokens : 1,
            .system = t->system_prompt,
            .system_name = system_names[i]};
    }
    if (j->p->n_tasks > 0) {
        lp.prompt_hints = hints;
        lp.n_prompt_hints = j->p->n_tasks < SL_MAX_TASKS ? j->p->n_tasks : SL_MAX_TASKS;
    }
    lp.image_edge_hint = j->p->image.max_edge > 0 ? j->p->image.max_edge : 2048;
    lp.prefix_system_prompt = j->p->system_prompt;
    lp.stop_requests = j->p->stop_requests; /* a stop cancels loading the model */
    if (j->metrics) {
        lp.on_phase = caption_metrics_engine_phase;
        lp.on_phase_user = j->metrics;
    }
    replica *rep = sl_calloc(1, sizeof *rep);
    if (!rep)
        return sl_fail(SL_ERR_NOMEM, "out of memory starting an engine replica");
    rep->j = j;
    double t0 = sl_mono_s();
    sl_openai_params op = j->p->openai;
    op.stop_requests = j->p->stop_requests; /* a stop ends the wait for a loading server */
    sl_status st = job_uses_openai(j->p) ? sl_engine_open_openai(&op, &rep->engine)
                                    : sl_engine_open_llama(&lp, &rep->engine);
    if (st != SL_OK) {
        sl_free(rep);
        return st;
    }
    double took = sl_mono_s() - t0;
    /* Choices that cannot be told apart would fail every row: say so once. */
    const sl_caption_params *p = j->p;
    if (p->n_tasks == 0)
        st = sl_engine_check_choices(rep->engine, "--choices", p->system_prompt, p->prompt,
                                     p->choices, p->n_choices);
    for (int i = 0; st == SL_OK && i < p->n_tasks; i++) {
        const sl_caption_task *t = &p->tasks[i];
        char who[96];
        snprintf(who, sizeof who, "task '%s': choices", t->name);
        int n = job_choices(p, i, &choices);
        st = sl_engine_check_choices(rep->engine, who,
                                     t->system_prompt ? t->system_prompt : p->system_prompt,
                                     t->prompt, choices, n);
    }
    /* A resumed folder's rows were answered by one model: not mixed. */
    if (st == SL_OK && job_uses_openai(p))
        st = job_check_served_model(j, sl_engine_model_name(rep->engine));
    if (st == SL_OK)
        st = job_check_default_system(j, sl_engine_default_system(rep->engine));
    if (st != SL_OK) {
        sl_engine_free(rep->engine);
        sl_free(rep);
        return st;
    }
    if (j->metrics &&
        (st = caption_metrics_add_replica(j->metrics, worker, sl_engine_model_name(rep->engine),
                                          rep->engine, &rep->metrics)) != SL_OK) {
        sl_engine_free(rep->engine);
        sl_free(rep);
        return st;
    }
    pthread_mutex_lock(&j->mu);
    snprintf(j->model_name, sizeof j->model_name, "%s", sl_engine_model_name(rep->engine));
    caption_live_set_model(j->live, j->model_name);
    if (took > j->load_seconds)
        j->load_seconds = took; /* replicas load in parallel */
    pthread_mutex_unlock(&j->mu);
    *state = rep;
    return SL_OK;
}

static void engine_close(void *state, sl_exec_end end)
{
    replica *rep = state;
    replica_metrics_detach(rep->metrics);
    sl_engine_free(rep->engine);
    sl_free(rep);
}

/* The first stop request: the engine sends nothing it has not started
 * (sl_engine_cancel_queued: the llama engine finishes its sequences), and
 * rows arriving from now on are deferred before they are asked. The
 * rows come back deferred: left for the resume, not failed. A row whose
 * conversation has begun (--turns all) is finished: its next questions
 * are asked (sl_request.follows), so its answers are not thrown away. */
static void engine_stop(void *state)
{
    replica *rep = state;
    rep->stopped = sl_engine_cancel_queued(rep->engine);
}

/* A prompt template filled from the row's columns into *filled (sl_free;
 * NULL: tmpl is used as it is). The row fails, naming the column. */
static sl_status fill(const caption_row *r, const char *task, bool system, const char *tmpl,
                      char **filled)
{
    *filled = NULL;
    if (!tmpl || !template_has_fields(tmpl))
        return SL_OK;
    sl_status st = template_fill_in(tmpl, r->extra, system ? "the system prompt" : "the prompt",
                                    filled);
    if (st != SL_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", sl_last_error()); /* sl_fail writes over it */
        return sl_fail(st, "%s%s%s: %s", r->rel, task ? ", task " : "", task ? task : "", why);
    }
    return SL_OK;
}

/* Whether the row's images go as one video (openai.video_part). */
static bool sent_as_video(const sl_caption_params *p, const media_row *m)
{
    return m && m->is_video && job_uses_openai(p) && p->video_part == SL_VIDEO_PART_VIDEO_URL;
}

/* The text before each of the row's images: a video's frames after
 * frame_text with {time} and {index} filled in (none when they go as one
 * video_url part), a list's images after image_text with {index} (texts[i]
 * NULL: none; sl_free each). */
static sl_status media_texts(const sl_caption_params *p, const caption_row *r,
                             char *texts[SL_MAX_IMAGES])
{
    memset(texts, 0, SL_MAX_IMAGES * sizeof *texts);
    const media_row *m = r->media;
    const char *tmpl = m->is_video ? p->frame_text : p->image_text;
    if (!tmpl || !*tmpl || sent_as_video(p, m))
        return SL_OK;
    sl_status st = SL_OK;
    for (int i = 0; st == SL_OK && i < m->n; i++) {
        char time[32];
        snprintf(time, sizeof time, "%.1f", m->times[i]);
        json_t *fields = m->is_video ? json_pack("{s:s, s:i}", "time", time, "index", i + 1)
                                     : json_pack("{s:i}", "index", i + 1);
        st = fields ? template_fill(tmpl, fields, &texts[i])
                    : sl_fail(SL_ERR_NOMEM, "out of memory");
        json_decref(fields);
        if (st != SL_OK) {
            char why[512];
            snprintf(why, sizeof why, "%s", sl_last_error());
            st = sl_fail(st, "%s: %s: %s", r->rel, m->is_video ? "--frame-text" : "--image-text",
                         why);
        }
    }
    return st;
}

/* A request whose images sit where --image-placeholder marks them in the
 * prompt: one user message of the prompt's pieces with the images between
 * them (a list's image k at marker k; a single image, or a video's frames
 * with their texts, at the one marker), after the system prompt. Storage
 * for the message lives here, for the request's submit. */
typedef struct placed {
    char *pieces[SL_MAX_IMAGES + 1];  /* the prompt's text between markers */
    sl_content_part parts[3 * SL_MAX_IMAGES + 1];
    sl_message messages[2];
    sl_content_part system;
    const sl_image *images[SL_MAX_IMAGES];
    const uint8_t *encoded[SL_MAX_IMAGES];
    size_t encoded_len[SL_MAX_IMAGES];
    const char *mime[SL_MAX_IMAGES];
} placed;

static void placed_clear(placed *pl)
{
    for (int i = 0; i <= SL_MAX_IMAGES; i++)
        sl_free(pl->pieces[i]);
}

/* Markers of `mark` in `text`. */
static int count_markers(const char *text, const char *mark)
{
    int n = 0;
    for (const char *s = strstr(text, mark); s; s = strstr(s + strlen(mark), mark))
        n++;
    return n;
}

static void as_conversation(sl_request *req, placed *pl, const sl_message *messages,
                            int n_messages, int n_images);

/* Turns *req (prompt, system prompt, the row's images) into the
 * conversation `pl` holds, when the prompt has markers; a prompt without
 * any keeps its images before it. A count that does not match the row's
 * images fails the row, naming both. */
static sl_status place_images(const sl_caption_params *p, const caption_row *r,
                              char *const texts[SL_MAX_IMAGES], sl_request *req, placed *pl)
{
    const char *mark = p->image_placeholder;
    const char *prompt = req->prompt ? req->prompt : "";
    int markers = count_markers(prompt, mark);
    if (markers == 0)
        return SL_OK;
    const media_row *m = r->media;
    bool list = m && !m->is_video;
    int images = list ? m->n : 1;
    if (markers != images)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: the prompt has %d '%s' markers for %d image%s%s",
                       r->rel, markers, mark, images, images == 1 ? "" : "s",
                       m && m->is_video ? " (a video's frames go at one marker)" : "");
    int n_parts = 0, n_images = 0;
    const char *at = prompt;
    for (int k = 0; k <= markers; k++) {
        const char *end = k < markers ? strstr(at, mark) : at + strlen(at);
        if (!(pl->pieces[k] = sl_strndup(at, (size_t)(end - at))))
            return sl_fail(SL_ERR_NOMEM, "%s: out of memory", r->rel);
        if (*pl->pieces[k])
            pl->parts[n_parts++].text = pl->pieces[k];
        if (k == markers)
            break;
        at = end + strlen(mark);
        /* Marker k: image k of a list, or all the frames of a video. */
        int first = list ? k : 0, last = m ? (list ? k + 1 : m->n) : 1;
        for (int i = first; i < last; i++) {
            if (m && texts[i])
                pl->parts[n_parts++].text = texts[i];
            pl->parts[n_parts++].text = NULL;
            pl->images[n_images] = m ? m->images[i] : r->image;
            pl->encoded[n_images] = m ? m->jpeg[i] : req->image_encoded;
            pl->encoded_len[n_images] = m ? m->jpeg_len[i] : req->image_encoded_len;
            pl->mime[n_images] = m ? NULL : req->image_mime;
            n_images++;
        }
    }
    int n_messages = 0;
    if (req->system_prompt && *req->system_prompt) {
        pl->system.text = req->system_prompt;
        pl->messages[n_messages++] = (sl_message){"system", &pl->system, 1};
    }
    pl->messages[n_messages++] = (sl_message){"user", pl->parts, n_parts};
    as_conversation(req, pl, pl->messages, n_messages, n_images);
    return SL_OK;
}

/* --turns last: the row's conversation (its prompt column) as the request,
 * its images where the conversation marks them, else before its first
 * user turn's text. A column without a user turn leaves *req as it is. */
static sl_status converse(const sl_caption_params *p, caption_row *r,
                          char *const texts[SL_MAX_IMAGES], sl_request *req, placed *pl,
                          turns *conv)
{
    const json_t *value = job_prompt_value(p, r->extra);
    if (!json_is_array(value))
        return SL_OK;
    const media_row *m = r->media;
    bool video = m && m->is_video;
    int n_images = m ? m->n : 1, n_slots = 0, n_parts = 0;
    turn_slot slots[SL_MAX_IMAGES];
    for (int i = 0; i < n_images; i++) {
        if (!video || i == 0) /* a video's frames share one slot */
            slots[n_slots++] = (turn_slot){pl->parts + n_parts, 0};
        turn_slot *slot = &slots[n_slots - 1];
        if (m && texts[i])
            pl->parts[n_parts++].text = texts[i];
        pl->parts[n_parts++].text = NULL;
        slot->n = (int)(pl->parts + n_parts - slot->parts);
        pl->images[i] = m ? m->images[i] : r->image;
        pl->encoded[i] = m ? m->jpeg[i] : req->image_encoded;
        pl->encoded_len[i] = m ? m->jpeg_len[i] : req->image_encoded_len;
        pl->mime[i] = m ? NULL : req->image_mime;
    }
    sl_status st = turns_build(value, req->system_prompt, p->image_placeholder, slots, n_slots,
                               video, p->turns == SL_TURNS_ALL ? r->turn : -1, r->rel, conv);
    if (st == SL_OK && conv->n_messages) {
        as_conversation(req, pl, conv->messages, conv->n_messages, conv->n_images);
        r->questions = conv->n_questions;
    }
    return st;
}

/* *req becomes the conversation `messages` with pl's images. */
static void as_conversation(sl_request *req, placed *pl, const sl_message *messages,
                            int n_messages, int n_images)
{
    req->messages = messages;
    req->n_messages = n_messages;
    req->images = pl->images;
    req->images_encoded = pl->encoded;
    req->images_encoded_len = pl->encoded_len;
    req->images_mime = pl->mime;
    req->n_images = n_images;
    req->image_texts = NULL;
    req->prompt = req->system_prompt = NULL;
    req->image = NULL;
    req->image_encoded = NULL;
    req->image_encoded_len = 0;
    req->image_mime = NULL;
}

/* Fails the row with the last error; past a conversation's first question
 * (--turns all) the message names the question. */
static void fail_asking(sl_row *row, const caption_row *r, sl_status st)
{
    if (r->turn > 0)
        sl_row_fail_status(row, st, "%s (question %d of %d; the answers before it are in the "
                           "conversation)", sl_last_error(), r->turn + 1, r->questions);
    else
        sl_row_fail_status(row, st, "%s", sl_last_error());
}

static sl_status engine_submit(void *state, sl_row *row)
{
    replica *rep = state;
    const sl_caption_params *p = rep->j->p;
    caption_row *r = sl_row_data(row);
    if (rep->stopped && r->turn == 0) { /* a next question (--turns all) is still asked */
        sl_row_defer(row);
        return SL_OK;
    }
    if (r->batch)
        return batch_submit(rep->j, rep->engine, row, r);
    if (batch_copy_without_request(rep->j, row, r))
        return SL_OK;
    /* Templates: the job's prompts name the row's columns ({label}); a
     * prompt the row brings (--prompt-column) is data, used as it is. */
    char *filled[2 * SL_MAX_TASKS + 2] = {0};
    sl_task tasks[SL_MAX_TASKS];
    int n_filled = 0;
    sl_status st = fill(r, NULL, true, p->system_prompt, &filled[n_filled++]);
    const char *system = filled[0] ? filled[0] : p->system_prompt;
    if (st == SL_OK && !r->prompt)
        st = fill(r, NULL, false, p->n_tasks ? NULL : p->prompt, &filled[n_filled++]);
    for (int i = 0; st == SL_OK && i < p->n_tasks; i++) {
        const sl_caption_task *t = &p->tasks[i];
        tasks[i] = (sl_task){.name = t->name, .prompt = t->prompt,
                             .system_prompt = t->system_prompt ? t->system_prompt : system,
                             .sampling = t->sampling, .json_schema = t->json_schema,
                             .choices = t->choices, .n_choices = t->n_choices};
        tasks[i].sampling.seed = sl_sampling_row_seed(t->sampling.seed, r->rel);
        tasks[i].sampling.n = 1; /* the request's n (--samples) answers every task */
        char **f = &filled[n_filled++];
        if ((st = fill(r, t->name, false, t->prompt, f)) == SL_OK && *f)
            tasks[i].prompt = *f;
        f = &filled[n_filled++];
        if (st == SL_OK && t->system_prompt &&
            (st = fill(r, t->name, true, t->system_prompt, f)) == SL_OK &&
            *f)
            tasks[i].system_prompt = *f;
    }
    char *texts[SL_MAX_IMAGES] = {0};
    if (st == SL_OK && r->media)
        st = media_texts(p, r, texts);
    if (st != SL_OK) {
        for (int i = 0; i < n_filled; i++)
            sl_free(filled[i]);
        for (int i = 0; i < SL_MAX_IMAGES; i++)
            sl_free(texts[i]);
        fail_asking(row, r, st);
        return SL_OK;
    }
    sl_request req = {
        .id = r->rel,
        .system_prompt = system,
        .prompt = r->prompt ? r->prompt : filled[1] ? filled[1] : p->prompt,
        .tasks = p->n_tasks ? tasks : NULL,
        .n_tasks = p->n_tasks,
        .image = r->image,
        .image_encoded = r->original_mime ? r->data : r->jpeg,
        .image_encoded_len = r->original_mime ? r->len : r->jpeg_len,
        .image_mime = r->original_mime,
        .sampling = p->sampling,
        .stop = p->stop,
        .n_stop = p->n_stop,
        .json_schema = p->json_schema,
        .grammar = p->grammar,
        .choices = p->choices,
        .n_choices = p->n_choices,
    };
    req.sampling.seed = r->seed;
    if (r->media) { /* the images go before the prompt, each after its text */
        req.images = (const sl_image *const *)r->media->images;
        req.images_encoded = (const uint8_t *const *)r->media->jpeg;
        req.images_encoded_len = r->media->jpeg_len;
        req.image_texts = (const char *const *)texts;
        req.n_images = r->media->n;
        req.images_are_video = sent_as_video(p, r->media);
    }
    placed pl = {0};
    turns conv = {0};
    if (p->turns != SL_TURNS_FIRST && (st = converse(p, r, texts, &req, &pl, &conv)) != SL_OK) {
        fail_asking(row, r, st);
        st = SL_OK;
        goto done;
    }
    if (p->turns == SL_TURNS_ALL) { /* its sequence kept for the next question */
        req.follows = r->turn > 0;
        req.followed = r->turn + 1 < r->questions;
    }
    if (!conv.n_messages && p->image_placeholder && *p->image_placeholder) {
        st = place_images(p, r, texts, &req, &pl);
        if (st != SL_OK) {
            fail_asking(row, r, st);
            st = SL_OK;
            goto done;
        }
    }
    st = sl_engine_submit(rep->engine, &req, row);
done:
    turns_clear(&conv);
    placed_clear(&pl);
    for (int i = 0; i < n_filled; i++)
        sl_free(filled[i]);
    for (int i = 0; i < SL_MAX_IMAGES; i++)
        sl_free(texts[i]);
    if (st == SL_OK || st == SL_ERR_IO)
        return st; /* SL_ERR_IO: the engine is broken, a worker failure */
    /* A request the engine refuses fails its row alone; the rest go on. */
    fail_asking(row, r, st);
    return SL_OK;
}

/* A request's tasks answered: the answers go to the row, their token
 * counts summed (and counted per task) into r->result, with the timings
 * of the task that ended last. */
/* The completion's answers into r, summed into r->result; counted in the
 * task metrics when `count` (an answer taken, not one refused). */
static void take_results(job *j, caption_row *r, sl_completion *c, bool count)
{
    sl_result sum = {0};
    double end = -1.0;
    int per = j->p->sampling.n > 1 ? j->p->sampling.n : 1;
    for (int i = 0; i < c->n_results; i++) {
        const sl_result *t = &c->results[i];
        sum.prompt_tokens += t->prompt_tokens;
        sum.generated_tokens += t->generated_tokens;
        sum.cached_tokens += t->cached_tokens;
        sum.encode_ms += t->encode_ms;
        if (t->ttft_ms + t->generate_ms > end) {
            end = t->ttft_ms + t->generate_ms;
            sum.queue_ms = t->queue_ms;
            sum.prefill_ms = t->prefill_ms;
            sum.ttft_ms = t->ttft_ms;
            sum.generate_ms = t->generate_ms;
        }
        if (count)
            caption_metrics_task_answer(j->metrics,
                                        j->p->n_tasks > 0 ? j->p->tasks[i / per].name : "caption",
                                        t);
    }
    r->result = sum;
    r->results = c->results;
    r->n_results = c->n_results;
    r->samples = per;
    r->tasks = j->p->tasks;
    c->results = NULL;
    c->n_results = 0;
    r->has_result = true;
}

void job_answer_room(const job *j, sl_row *row)
{
    caption_row *r = sl_row_data(row);
    if (j->answer_cols.n == 0 || r->answer_room)
        return;
    r->answer_room = true;
    if (answer_columns_make_room(&j->answer_cols, r->extra) != SL_OK)
        sl_row_fail_status(row, SL_ERR_NOMEM, "%s: %s", r->rel, sl_last_error());
}

/* --answer-columns: each task's (first) answer's properties into the
 * row's columns (with --samples or --rows-per-task the writer gives each
 * output row its own answers'). */
static void fill_answer_columns(const job *j, sl_row *row, caption_row *r)
{
    sl_status st = SL_OK;
    int per = r->samples > 1 ? r->samples : 1;
    if (r->n_results == 0)
        st = answer_columns_fill(&j->answer_cols, 0, r->result.text, &r->extra);
    for (int i = 0; st == SL_OK && i < r->n_results; i += per)
        st = answer_columns_fill(&j->answer_cols, i / per, r->results[i].text, &r->extra);
    if (st != SL_OK)
        sl_row_fail_status(row, st, "%s: %s", r->rel, sl_last_error());
}

static size_t result_bytes(const sl_result *a)
{
    return (a->text ? strlen(a->text) : 0) + (a->logprobs ? strlen(a->logprobs) : 0) +
           (a->scores ? strlen(a->scores) : 0) +
           (a->response_json ? strlen(a->response_json) : 0);
}

/* What the row's answers hold. */
static size_t answer_bytes(const caption_row *r)
{
    size_t n = result_bytes(&r->result);
    for (int k = 0; k < r->n_results; k++)
        n += result_bytes(&r->results[k]);
    return n;
}

/* The token counts of a conversation's answers so far into *to. */
static void count_turns(const caption_row *r, sl_result *to)
{
    to->prompt_tokens = r->turn_tokens[0];
    to->generated_tokens = r->turn_tokens[1];
    to->cached_tokens = r->turn_tokens[2];
}

/* A failed conversation's row keeps the token counts of the answers it
 * got (in its conversation): its caption stays null. */
static void keep_spent_tokens(caption_row *r)
{
    if (r->turn_tokens[0] + r->turn_tokens[1] == 0)
        return;
    r->result = (sl_result){0};
    count_turns(r, &r->result);
    r->has_result = true;
}

/* --turns all: each answer goes into the row's conversation; one that is
 * not its last sends the row back to the engine with the next question.
 * True when the row is in the engine again. A failure after the first
 * question names the question, and the row's token counts are those of
 * every answer (the failed one's too, where the engine gives them). */
static bool ask_next(replica *rep, sl_row *row, caption_row *r, sl_completion *c)
{
    const sl_caption_params *p = rep->j->p;
    r->turn_tokens[0] += c->result.prompt_tokens;
    r->turn_tokens[1] += c->result.generated_tokens;
    r->turn_tokens[2] += c->result.cached_tokens;
    if (c->status != SL_OK) {
        char *said = r->turn > 0 && c->error ? sl_asprintf("%s (question %d of %d; the answers "
                                                           "before it are in the conversation)",
                                                           c->error, r->turn + 1, r->questions)
                                             : NULL;
        if (said) {
            sl_free(c->error);
            c->error = said;
        }
        count_turns(r, &c->result); /* an invalid answer's row is written with them */
        keep_spent_tokens(r);
        return false;
    }
    json_t *conversation = job_prompt_value(p, r->extra);
    sl_status st = turns_answer(conversation, r->turn, c->result.text ? c->result.text : "");
    if (st != SL_OK) {
        sl_row_fail_status(row, st, "%s: %s", r->rel, sl_last_error());
        keep_spent_tokens(r);
        return false;
    }
    /* The conversation holds one more answer until the row is written. */
    sl_row_set_bytes(row, sl_row_bytes(row) + (c->result.text ? strlen(c->result.text) : 0));
    if (r->turn + 1 >= r->questions) { /* the last: the row's counts are all its answers' */
        count_turns(r, &c->result);
        return false;
    }
    r->turn++;
    sl_completion_clear(c);
    st = engine_submit(rep, row);
    /* A broken engine fails this row alone, not the poll: the rows finished
     * beside it in this poll are kept (a failed poll would fail them all),
     * and the engine's own poll reports it broken once they are out. */
    if (st != SL_OK)
        fail_asking(row, r, st);
    if (sl_row_failed(row))
        keep_spent_tokens(r);
    return !sl_row_failed(row);
}

static sl_status engine_poll(void *state, sl_row **done, size_t max, int timeout_ms, size_t *n)
{
    replica *rep = state;
    const sl_caption_params *p = rep->j->p;
    size_t k = 0;
    if (max > sizeof rep->done / sizeof *rep->done)
        max = sizeof rep->done / sizeof *rep->done;
    sl_status st = sl_engine_poll(rep->engine, rep->done, max, timeout_ms, &k);
    replica_metrics_sync(rep->metrics, false);
    size_t n_done = 0;
    for (size_t i = 0; i < k; i++) {
        sl_completion *c = &rep->done[i];
        replica_metrics_observe(rep->metrics, c);
        sl_row *row = c->tag;
        caption_row *r = sl_row_data(row);
        if (c->status == SL_ERR_STOPPED)
            sl_row_defer(row); /* not sent: a stop (engine_stop), for the resume */
        else if (p->turns == SL_TURNS_ALL && r->questions > 0 && c->n_results == 0 &&
                 ask_next(rep, row, r, c))
            continue;
        job_answer_room(rep->j, row);
        if (sl_row_failed(row) || sl_row_deferred(row)) {
            /* Its answer could not go into the conversation. */
        } else if (c->status == SL_OK && c->n_results > 0) {
            take_results(rep->j, r, c, true);
            fill_answer_columns(rep->j, row, r);
        } else if (c->status == SL_OK) {
            r->result = c->result;
            c->result = (sl_result){0};
            r->has_result = true;
            /* The one-task case: its answer is the column `caption`. */
            caption_metrics_task_answer(rep->j->metrics, "caption", &r->result);
            fill_answer_columns(rep->j, row, r);
        } else if (c->status == SL_ERR_INVALID_OUTPUT) {
            /* Its tokens, finish reasons and timings are written and
             * counted (each task's or answer's, with tasks or samples); the
             * refused answer is in the error, and every answer stays null
             * as on any failure. */
            if (c->n_results > 0) {
                take_results(rep->j, r, c, false);
                for (int a = 0; a < r->n_results; a++) {
                    sl_free(r->results[a].text);
                    r->results[a].text = NULL;
                }
            } else {
                r->result = c->result;
                c->result = (sl_result){0};
                r->has_result = true;
            }
            sl_free(r->result.text);
            r->result.text = NULL;
            sl_row_fail_status(row, c->status, "%s",
                               c->error ? c->error : "out of memory (the error was lost)");
        } else {
            sl_row_fail_status(row, c->status, "%s",
                               c->error ? c->error : "out of memory (the error was lost)");
        }
        sl_completion_clear(c);
        /* The answers ride on to the writer: their bytes count against the
         * memory budget (log-probabilities run to hundreds of KB a row). */
        sl_row_set_bytes(row, sl_row_bytes(row) + answer_bytes(r));
        if (r->batch) { /* its images and body are not needed past the engine either */
            for (int m = 0; m < SL_MAX_IMAGES; m++) {
                sl_image_free(r->batch->images[m]);
                r->batch->images[m] = NULL;
            }
            json_decref(r->batch->send_body);
            r->batch->send_body = NULL;
            sl_row_set_bytes(row, sl_row_bytes(row) - r->batch->bytes);
            r->batch->bytes = 0;
        }
        /* The pixels are not needed past the engine: give their bytes back. */
        if (r->media)
            sl_row_set_bytes(row, sl_row_bytes(row) - media_row_drop_media(r->media));
        if (r->image) {
            size_t image_bytes = sl_image_bytes(r->image);
            sl_image_free(r->image);
            r->image = NULL;
            sl_row_set_bytes(row, sl_row_bytes(row) - image_bytes);
        }
        if (r->jpeg) {
            sl_image_buffer_free(r->jpeg);
            r->jpeg = NULL;
            sl_row_set_bytes(row, sl_row_bytes(row) - r->jpeg_len);
        }
        if (r->original_mime && !p->include_image_bytes) {
            sl_free(r->data);
            r->data = NULL;
            sl_row_set_bytes(row, sl_row_bytes(row) - r->len);
            r->len = 0;
        }
        done[n_done++] = row;
    }
    *n = n_done;
    return st;
}

sl_stage_def stage_engine(job *j)
{
    const sl_caption_params *p = j->p;
    /* Twice the sequences (or the endpoints' limits): a newcomer is queued
     * in the engine the moment a slot frees. */
    int slots = 1;
    if (!job_uses_openai(p))
        slots = sl_llama_default_parallel(&p->llama); /* --parallel 0 is auto */
    else
        slots = p->openai.n_endpoints *
                (p->openai.adaptive && p->openai.adaptive_max_in_flight > p->openai.max_in_flight
                     ? p->openai.adaptive_max_in_flight
                     : p->openai.max_in_flight);
    return (sl_stage_def){.name = "engine", .kind = SL_STAGE_ASYNC, .workers = p->replicas,
                          .batch_size = 4, .max_in_flight = 2 * slots, .config = j,
                          .init = engine_init, .close = engine_close, .submit = engine_submit,
                          .poll = engine_poll, .stop = engine_stop};
}
