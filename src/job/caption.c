/* job/caption.c — the first end-to-end job: folder → decode → engine →
 * JSONL, one row at a time. The streaming executor (bounded queues, worker
 * pools) replaces this loop; the row format stays. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/utf8.h"
#include "io/dir_source.h"
#include "io/jsonl_sink.h"
#include "sluice/caption.h"

sl_caption_params sl_caption_default_params(void)
{
    return (sl_caption_params){
        .prompt = "Describe this image in one sentence.",
        .sampling = sl_sampling_default(),
        .image = sl_image_default_params(),
        .llama = sl_llama_default_params(),
    };
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Bytes from file names or models may not be UTF-8; JSON must be. */
static json_t *json_text(const char *s)
{
    if (!s)
        return json_null();
    size_t n = strlen(s);
    if (sl_utf8_valid(s, n))
        return json_stringn(s, n);
    char *fixed = sl_utf8_sanitize(s, n);
    json_t *j = fixed ? json_string(fixed) : NULL;
    sl_free(fixed);
    return j;
}

typedef struct row_outcome {
    const sl_dir_entry *entry;
    const sl_image *image;
    const sl_result *result;  /* NULL unless the engine succeeded */
    const char *error_stage;  /* NULL on success */
    const char *error;
    double decode_ms, total_ms;
    uint64_t seed;
} row_outcome;

static json_t *row_json(const row_outcome *r, const char *model_name)
{
    json_t *row = json_object();
    json_t *timings = json_object();
    if (!row || !timings) {
        json_decref(row);
        json_decref(timings);
        return NULL;
    }
    const sl_result *res = r->result;
    json_object_set_new(row, "id", json_text(r->entry->rel));
    json_object_set_new(row, "path", json_text(r->entry->path));
    json_object_set_new(row, "caption", res ? json_text(res->text) : json_null());
    json_object_set_new(row, "finish_reason", res ? json_string(res->finish_reason) : json_null());
    json_object_set_new(row, "prompt_tokens", json_integer(res ? res->prompt_tokens : 0));
    json_object_set_new(row, "generated_tokens", json_integer(res ? res->generated_tokens : 0));
    if (r->image) {
        json_object_set_new(row, "width", json_integer(sl_image_width(r->image)));
        json_object_set_new(row, "height", json_integer(sl_image_height(r->image)));
        json_object_set_new(row, "source_width", json_integer(sl_image_source_width(r->image)));
        json_object_set_new(row, "source_height", json_integer(sl_image_source_height(r->image)));
    }
    json_object_set_new(row, "model", json_text(model_name));
    json_object_set_new(row, "seed", json_integer((json_int_t)(r->seed & INT64_MAX)));
    json_object_set_new(timings, "decode_ms", json_real(r->decode_ms));
    json_object_set_new(timings, "prefill_ms", json_real(res ? res->prefill_ms : 0.0));
    json_object_set_new(timings, "generate_ms", json_real(res ? res->generate_ms : 0.0));
    json_object_set_new(timings, "total_ms", json_real(r->total_ms));
    json_object_set_new(row, "timings", timings);
    json_object_set_new(row, "error_stage", r->error_stage ? json_string(r->error_stage) : json_null());
    json_object_set_new(row, "error", json_text(r->error));
    return row;
}

static sl_status check_params(const sl_caption_params *p)
{
    if (!p->input_dir || !*p->input_dir)
        return sl_fail(SL_ERR_INVALID_ARG, "no input folder given");
    if (!p->output_dir || !*p->output_dir)
        return sl_fail(SL_ERR_INVALID_ARG, "no output folder given (-o)");
    if (!p->prompt || !*p->prompt)
        return sl_fail(SL_ERR_INVALID_ARG, "the prompt is empty (--prompt)");
    if (p->sampling.max_tokens <= 0)
        return sl_fail(SL_ERR_INVALID_ARG, "--max-tokens must be positive, got %d",
                       p->sampling.max_tokens);
    if (p->sampling.temperature < 0.0f)
        return sl_fail(SL_ERR_INVALID_ARG, "--temperature must be >= 0, got %g",
                       (double)p->sampling.temperature);
    if (p->image.max_edge < 0)
        return sl_fail(SL_ERR_INVALID_ARG, "--max-image-edge must be >= 0, got %d",
                       p->image.max_edge);
    return SL_OK;
}

sl_status sl_caption_run(const sl_caption_params *p, sl_caption_summary *sum)
{
    memset(sum, 0, sizeof *sum);
    sl_status st = check_params(p);
    if (st != SL_OK)
        return st;

    sl_dir_source *src = NULL;
    sl_jsonl_sink *sink = NULL;
    sl_engine *engine = NULL;
    /* Cheap checks first: a wrong input or output fails before the model
     * loads. */
    if ((st = sl_dir_source_open(p->input_dir, &src)) != SL_OK ||
        (st = sl_jsonl_sink_open(p->output_dir, "part-00000.jsonl", p->overwrite, &sink)) != SL_OK)
        goto done;

    double t_load = now_s();
    if ((st = sl_engine_open_llama(&p->llama, &engine)) != SL_OK)
        goto done;
    sum->load_seconds = now_s() - t_load;
    snprintf(sum->model_name, sizeof sum->model_name, "%s", sl_engine_model_name(engine));

    double t_start = now_s();
    for (;;) {
        const sl_dir_entry *entry = NULL;
        if ((st = sl_dir_source_next(src, &entry)) != SL_OK)
            goto done;
        if (!entry)
            break;
        double t_row = now_s();
        row_outcome r = {.entry = entry, .seed = sl_sampling_row_seed(p->sampling.seed, entry->rel)};
        sl_image *image = NULL;
        sl_result result = {0};
        if (entry->error) {
            r.error_stage = "read";
            r.error = entry->error;
        } else if (sl_image_load_file(entry->path, &p->image, &image) != SL_OK) {
            r.error_stage = "decode";
            r.error = sl_last_error();
        } else {
            r.image = image;
            r.decode_ms = (now_s() - t_row) * 1e3;
            sl_request req = {
                .id = entry->path,
                .system_prompt = p->system_prompt,
                .prompt = p->prompt,
                .image = image,
                .sampling = p->sampling,
            };
            req.sampling.seed = r.seed;
            if (sl_engine_generate(engine, &req, &result) == SL_OK) {
                r.result = &result;
            } else {
                r.error_stage = "engine";
                r.error = sl_last_error();
            }
        }
        r.total_ms = (now_s() - t_row) * 1e3;

        json_t *row = row_json(&r, sum->model_name);
        st = row ? sl_jsonl_sink_write(sink, row)
                 : sl_fail(SL_ERR_NOMEM, "out of memory writing the row for '%s'", entry->path);
        json_decref(row);
        if (st == SL_OK && p->on_row) {
            sl_row_view view = {entry->rel, r.result ? result.text : NULL, r.error, sum->rows};
            p->on_row(&view, p->on_row_user);
        }
        sum->rows++;
        if (r.error)
            sum->rows_failed++;
        else
            sum->rows_ok++;
        sum->prompt_tokens += result.prompt_tokens;
        sum->generated_tokens += result.generated_tokens;
        sl_result_clear(&result);
        sl_image_free(image);
        if (st != SL_OK)
            goto done;
    }
    if ((st = sl_jsonl_sink_commit(sink)) != SL_OK)
        goto done;
    snprintf(sum->output_file, sizeof sum->output_file, "%s", sl_jsonl_sink_path(sink));
    sum->seconds = now_s() - t_start;

done:
    sl_engine_free(engine);
    sl_jsonl_sink_free(sink);
    sl_dir_source_free(src);
    return st;
}
