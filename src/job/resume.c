/* job/resume.c — the job's side of resume: the fingerprint of the settings
 * that determine the rows' content (a rerun with other settings is refused
 * rather than mixed in), and opening the output folder's ledger
 * (ledger/ledger.h) to settle what an earlier run left and find where this
 * one goes on. */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "io/shard.h"
#include "job/job.h"

static bool parquet_output(const sl_caption_params *p)
{
    return p->output_format && strcmp(p->output_format, "parquet") == 0;
}

static void fp_add(char **text, const char *key, json_t *value)
{
    if (!*text)
        goto out;
    char *v = value ? json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS) : NULL;
    char *next = v ? sl_asprintf("%s%s\t%s\n", *text, key, v) : NULL;
    free(v);
    sl_free(*text);
    *text = next;
out:
    json_decref(value);
}

static json_t *fp_strings(const char *const *list, int n)
{
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        json_array_append_new(a, job_json_text(list[i]));
    return a;
}

static json_t *fp_real(double v)
{
    char buf[64];
    snprintf(buf, sizeof buf, "%.9g", v);
    return json_string(buf);
}

/* What determines the rows' content, as "key\tJSON" lines; not how fast, how
 * the progress shows, or where parts are cut. NULL when out of memory. */
static char *fingerprint(const job *j)
{
    const sl_caption_params *p = j->p;
    char *t = sl_strdup("");
    fp_add(&t, "inputs", fp_strings(j->inputs, (int)j->n_inputs));
    fp_add(&t, "input_format", job_json_text(p->input_format));
    fp_add(&t, "include", fp_strings(p->include, p->n_include));
    fp_add(&t, "exclude", fp_strings(p->exclude, p->n_exclude));
    fp_add(&t, "image_column", job_json_text(p->image_column));
    fp_add(&t, "prompt_column", job_json_text(p->prompt_column));
    fp_add(&t, "allow_file_urls", json_boolean(p->allow_file_urls));
    fp_add(&t, "input_shard", json_pack("[I,I,I]", (json_int_t)p->input_shard_index,
                                        (json_int_t)p->input_shard_count,
                                        (json_int_t)p->input_shard_size));
    /* Inputs in several folders had base-name ids before ids named folders:
     * such a ledger holds other ids for the same rows, so it must not match.
     * Other jobs' ids did not change, and their fingerprint neither. */
    if (sl_source_ids_have_folders(j->src))
        fp_add(&t, "ids", job_json_text("paths from the inputs' common folder"));
    fp_add(&t, "engine", job_json_text(job_uses_openai(p) ? "openai" : "llama"));
    if (job_uses_openai(p)) { /* not the endpoints: a fleet may change between runs */
        fp_add(&t, "served_model", job_json_text(p->openai.served_model));
        fp_add(&t, "response_format", job_json_text(p->openai.response_format));
        fp_add(&t, "jpeg", json_pack("[i,i,b]", p->jpeg_edge, p->jpeg_quality, p->send_original));
    } else {
        fp_add(&t, "model", job_json_text(p->llama.model_path));
        fp_add(&t, "mmproj", job_json_text(p->llama.mmproj_path));
        fp_add(&t, "ctx", json_integer(p->llama.n_ctx_per_seq));
    }
    fp_add(&t, "prompt", job_json_text(p->prompt));
    fp_add(&t, "system_prompt", job_json_text(p->system_prompt));
    fp_add(&t, "stop", fp_strings(p->stop, p->n_stop));
    fp_add(&t, "max_tokens", json_integer(p->sampling.max_tokens));
    fp_add(&t, "temperature", fp_real(p->sampling.temperature));
    fp_add(&t, "top_p", fp_real(p->sampling.top_p));
    fp_add(&t, "top_k", json_integer(p->sampling.top_k));
    fp_add(&t, "min_p", fp_real(p->sampling.min_p));
    fp_add(&t, "repeat_penalty", fp_real(p->sampling.repeat_penalty));
    fp_add(&t, "seed", json_integer((json_int_t)(p->sampling.seed & INT64_MAX)));
    fp_add(&t, "max_image_edge", json_integer(p->image.max_edge));
    fp_add(&t, "max_image_pixels", json_integer((json_int_t)p->image.max_input_pixels));
    fp_add(&t, "background", json_pack("[i,i,i]", p->image.background[0], p->image.background[1],
                                       p->image.background[2]));
    fp_add(&t, "format", job_json_text(parquet_output(p) ? "parquet" : "jsonl"));
    fp_add(&t, "columns", p->columns ? fp_strings(p->columns, p->n_columns) : json_null());
    fp_add(&t, "include_image_bytes", json_boolean(p->include_image_bytes));
    /* Tasks: as written (templates, not the text filled in per row). Only
     * when there are some, so a job without tasks keeps its fingerprint. */
    if (p->n_tasks > 0) {
        json_t *tasks = json_array();
        for (int i = 0; tasks && i < p->n_tasks; i++) {
            const sl_caption_task *k = &p->tasks[i];
            const sl_sampling *s = &k->sampling;
            json_array_append_new(
                tasks, json_pack("{s:o, s:o, s:o, s:o, s:i, s:o, s:o, s:i, s:o, s:o, s:I}",
                                 "name", job_json_text(k->name), "prompt",
                                 job_json_text(k->prompt), "system",
                                 job_json_text(k->system_prompt), "json_schema",
                                 job_json_text(k->json_schema), "max_tokens", s->max_tokens,
                                 "temperature", fp_real(s->temperature), "top_p",
                                 fp_real(s->top_p), "top_k", s->top_k, "min_p", fp_real(s->min_p),
                                 "repeat_penalty", fp_real(s->repeat_penalty), "seed",
                                 (json_int_t)(s->seed & INT64_MAX)));
        }
        fp_add(&t, "tasks", tasks);
        fp_add(&t, "rows_per_task", json_boolean(p->rows_per_task));
    }
    return t;
}

/* Opens the output folder's ledger: starts over (--overwrite), or settles
 * what an earlier run left and finds where this one goes on. */
sl_status job_open_ledger(job *j)
{
    const sl_caption_params *p = j->p;
    const char *dir = p->output_dir;
    sl_part_scan scan;
    sl_status st;
    if (!sl_ledger_exists(dir) && !p->overwrite) {
        /* Parts without a ledger: another tool's, or an older sluice's. */
        if ((st = sl_shard_scan_parts(dir, &scan)) != SL_OK)
            return st;
        if (scan.count > 0)
            return sl_fail(SL_ERR_EXISTS,
                           "output folder '%s' already holds %ld part file%s and no resume "
                           "ledger: pass --overwrite to replace them or choose another output "
                           "folder", dir, scan.count, scan.count == 1 ? "" : "s");
    }
    char *fp = fingerprint(j);
    if (!fp)
        return sl_fail(SL_ERR_NOMEM, "out of memory opening output '%s'", dir);
    if ((st = sl_ledger_open(dir, p->overwrite, &j->ledger)) == SL_OK && p->overwrite)
        st = sl_shard_remove_parts(dir); /* under the ledger's lock, before it forgets them */
    if (st == SL_OK)
        st = sl_ledger_bind(j->ledger, fp, p->overwrite);
    sl_free(fp);
    sl_ledger_info info;
    if (st == SL_OK)
        st = sl_ledger_reconcile(j->ledger, &info);
    if (st == SL_OK)
        st = sl_shard_scan_parts(dir, &scan);
    if (st != SL_OK)
        return st;
    long temps = sl_shard_remove_temps(dir);
    if (temps > 0 || info.parts_promoted || info.parts_dropped)
        sl_log(SL_LOG_INFO, "%s: removed %ld temporary file%s; %ld pending part%s committed, "
                            "%ld dropped", dir, temps, temps == 1 ? "" : "s", info.parts_promoted,
               info.parts_promoted == 1 ? "" : "s", info.parts_dropped);
    /* Never reuse a number: parts continue after the highest one seen. */
    j->shard = (info.max_part > scan.max_number ? info.max_part : scan.max_number) + 1;
    j->first_shard = j->shard;
    j->done_before = info.rows;
    j->sum->rows_done_before = info.rows;
    j->sum->resumed = info.parts > 0;
    return SL_OK;
}

