/* job/caption_report.c — see caption_report.h. The HTML is put together
 * here from escaped pieces; there is no template engine to pull in for one
 * page. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/file.h"
#include "core/json.h"
#include "core/log.h"
#include "core/utf8.h"
#include "job/batch.h"
#include "job/caption_report.h"
#include "job/job.h"
#include "sluice/sluice.h"

static json_t *text(const char *s) { return sl_json_text(s, s ? strlen(s) : 0); }

/* The decode stage's rows per second had it never waited: its rows over
 * its busy seconds (summed over workers), times the workers. Beside the
 * run's rows/s it says whether decoding is the bottleneck. 0: unknown. */
static double decode_capacity(const sl_exec *exec)
{
    for (size_t i = 0; i < sl_exec_stage_count(exec); i++) {
        sl_stage_stats ss;
        sl_exec_stage_stats(exec, i, &ss);
        if (strcmp(ss.name, "decode") == 0 && ss.busy_s > 0)
            return (double)ss.rows_in / ss.busy_s * ss.workers;
    }
    return 0.0;
}

/* "dry_run", and what a dry run measures: the inputs' bytes read (and the
 * JPEGs an HTTP engine would have been sent), their rate; the decode
 * stage's capacity (any run). */
static void add_dry_run(json_t *o, const caption_report *r)
{
    const sl_caption_summary *s = r->summary;
    bool dry = s->dry_run, jpeg = dry && job_uses_openai(r->params);
    json_object_set_new(o, "dry_run", json_boolean(dry));
    json_object_set_new(o, "input_bytes", dry ? json_integer((json_int_t)s->input_bytes)
                                              : json_null());
    json_object_set_new(o, "jpeg_bytes", jpeg ? json_integer((json_int_t)s->jpeg_bytes)
                                              : json_null());
    json_t *tp = json_object_get(o, "throughput");
    if (!tp)
        return;
    json_object_set_new(tp, "input_mb_per_s",
                        dry && s->seconds > 0 ? json_real((double)s->input_bytes / 1e6 /
                                                          s->seconds)
                                              : json_null());
    json_object_set_new(tp, "decode_capacity_rows_per_s", json_real(decode_capacity(r->exec)));
}

/* The GGUF files the llama engine ran, as given (a hub model's: its cached
 * snapshot, whose path holds the commit), each with its size: `model` is
 * the file's general.name, the same for every quantization of one model,
 * so the files are what names the weights a dataset came from. bytes is
 * null when the file cannot be stat'ed now. */
static json_t *model_files_json(const sl_llama_params *llama)
{
    json_t *a = json_array();
    const char *kinds[2] = {"model", "mmproj"};
    const char *paths[2] = {llama->model_path, llama->mmproj_path};
    for (int i = 0; a && i < 2; i++) {
        if (!paths[i] || !paths[i][0])
            continue;
        struct stat st;
        json_t *bytes = stat(paths[i], &st) == 0 ? json_integer((json_int_t)st.st_size)
                                                 : json_null();
        json_array_append_new(a, json_pack("{s:s, s:o, s:o}", "kind", kinds[i], "path",
                                           text(paths[i]), "bytes", bytes));
    }
    return a;
}

static json_t *summary_json(const caption_report *r)
{
    const sl_caption_summary *s = r->summary;
    const sl_caption_params *p = r->params;
    json_t *stages = json_array();
    size_t n = sl_exec_stage_count(r->exec);
    for (size_t i = 0; stages && i < n; i++) {
        sl_stage_stats ss;
        sl_exec_stage_stats(r->exec, i, &ss);
        json_array_append_new(
            stages, json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:f, s:f, s:f}", "name",
                              ss.name, "workers", ss.workers, "rows_in",
                              (json_int_t)ss.rows_in, "rows_out", (json_int_t)ss.rows_out,
                              "rows_failed", (json_int_t)ss.rows_failed, "rows_dropped",
                              (json_int_t)ss.rows_dropped, "busy_s", ss.busy_s, "idle_s",
                              ss.idle_s, "blocked_s", ss.blocked_s));
    }
    double secs = s->seconds > 0 ? s->seconds : 0;
    const gallery_item *sample;
    size_t n_sample = gallery_sample(r->gallery, &sample);
    /* A batch file's requests bring their own messages: the caption
     * prompt was never sent, and its sampling flags only fill keys a body
     * leaves out (docs/batch.md). */
    bool batch = job_is_batch(p);
    json_t *params = json_pack(
        "{s:o, s:o, s:i, s:f, s:f, s:i, s:f, s:f, s:I, s:i, s:I, s:i, s:i, s:i, s:b, s:o}",
        "prompt", text(batch ? NULL : p->prompt), "system_prompt",
        text(batch ? NULL : p->system_prompt), "max_tokens",
        p->sampling.max_tokens, "temperature", (double)p->sampling.temperature, "top_p",
        (double)p->sampling.top_p, "top_k", p->sampling.top_k, "min_p",
        (double)p->sampling.min_p, "repeat_penalty", (double)p->sampling.repeat_penalty, "seed",
        (json_int_t)(p->sampling.seed & INT64_MAX), "max_image_edge", p->image.max_edge,
        "max_image_pixels", (json_int_t)p->image.max_input_pixels, "parallel",
        p->llama.n_parallel, "replicas", p->replicas, "decode_workers", p->decode_workers,
        "ordered", p->ordered, "format", text(p->output_format ? p->output_format : "jsonl"));
    if (params)
        json_object_set_new(params, "samples", json_integer(p->sampling.n > 1 ? p->sampling.n : 1));
    if (params)
        json_object_set_new(params, "presence_penalty", json_real(p->sampling.presence_penalty));
    if (params)
        json_object_set_new(params, "frequency_penalty",
                            json_real(p->sampling.frequency_penalty));
    if (params)
        json_object_set_new(params, "video", json_pack("{s:i, s:f, s:o, s:s}", "frames",
                                                       p->video.max_frames, "fps", p->video.fps,
                                                       "frame_text", text(p->frame_text), "part",
                                                       p->video_part == SL_VIDEO_PART_VIDEO_URL
                                                           ? "video_url"
                                                           : "image_url"));
    if (params)
        json_object_set_new(params, "image_text", text(p->image_text));
    if (params)
        json_object_set_new(params, "image_placeholder", text(p->image_placeholder));
    if (params)
        json_object_set_new(params, "turns", json_string(p->turns == SL_TURNS_LAST ? "last"
                                                 : p->turns == SL_TURNS_ALL ? "all" : "first"));
    if (params) {
        json_t *choices = p->n_choices > 0 ? json_array() : json_null();
        for (int i = 0; i < p->n_choices; i++)
            json_array_append_new(choices, json_string(p->choices[i]));
        json_object_set_new(params, "choices", choices);
    }
    if (params)
        json_object_set_new(params, "logprobs", p->sampling.logprobs
                                                    ? json_integer(p->sampling.top_logprobs)
                                                    : json_null());
    /* The llama engine's own settings that change what it computes: the
     * adapters beside the model (an HTTP engine refuses them), the KV
     * cache's types among the parameters. */
    bool llama = !job_uses_openai(p);
    if (params && llama) {
        json_object_set_new(params, "cache_type_k",
                            json_string(sl_kv_type_name(p->llama.cache_type_k)));
        json_object_set_new(params, "cache_type_v",
                            json_string(sl_kv_type_name(p->llama.cache_type_v)));
    }
    json_t *columns = caption_schema_json(r->schema);
    json_t *o = json_pack(
        "{s:i, s:s, s:o, s:o, s:o, s:{s:I, s:I, s:I, s:o, s:I, s:I, s:I, s:I}, s:{s:f, s:f, s:f},"
        " s:{s:f, s:f},"
        " s:{s:I, s:I}, s:o, s:o, s:{s:I, s:I}, s:o, s:s, s:I, s:o}",
        "format_version", 1, "status", sl_status_name(r->run_status), "model",
        text(s->model_name), "output_file", text(s->output_file), "input_dir",
        text(p->input_dir), "rows", "total", (json_int_t)s->rows, "ok", (json_int_t)s->rows_ok,
        "failed", (json_int_t)s->rows_failed, "input",
        r->input_rows < 0 ? json_null() : json_integer(r->input_rows), "skipped",
        (json_int_t)s->rows_skipped, "dropped", (json_int_t)s->rows_dropped, "inputs_done",
        (json_int_t)s->inputs_done, "retried", (json_int_t)s->rows_retried, "seconds", "run",
        s->seconds, "model_load", s->load_seconds, "retry", s->retry_seconds, "throughput", "rows_per_s",
        secs > 0 ? (double)s->rows / secs : 0.0, "generated_tokens_per_s",
        secs > 0 ? (double)s->generated_tokens / secs : 0.0, "tokens", "prompt",
        (json_int_t)s->prompt_tokens, "generated", (json_int_t)s->generated_tokens, "stages",
        stages ? stages : json_array(), "failures",
        r->failures ? json_copy(r->failures) : json_array(), "memory",
        "peak_bytes_in_flight", (json_int_t)s->peak_bytes_in_flight, "budget_bytes",
        (json_int_t)s->memory_budget, "params", params ? params : json_object(), "report",
        "_report.html", "sample_rows", (json_int_t)n_sample, "columns",
        columns ? columns : json_array());
    if (o)
        add_dry_run(o, r);
    if (o) /* left by a stop for the resume (sl_caption_summary.rows_deferred) */
        json_object_set_new(json_object_get(o, "rows"), "deferred",
                            json_integer((json_int_t)s->rows_deferred));
    if (o) /* where the rows are: output_file names only the last part */
        json_object_set_new(o, "output_dir", text(p->output_dir));
    if (o)
        json_object_set_new(o, "output_files", r->parts ? json_copy(r->parts) : json_null());
    if (o && s->rows_without_prompt_column >= 0) /* --prompt-column's misses */
        json_object_set_new(json_object_get(o, "rows"), "without_prompt_column",
                            json_integer((json_int_t)s->rows_without_prompt_column));
    if (o && r->answers)
        json_object_set(o, "answers", r->answers);
    if (o && r->answers_dropped)
        json_object_set(o, "answers_dropped", r->answers_dropped);
    if (o) /* what the Parquet parts could not hold of the input's columns */
        json_object_set_new(o, "unfit_values", r->unfit ? json_copy(r->unfit) : json_object());
    if (o)
        json_object_set_new(o, "lora", llama ? job_lora_json(&p->llama) : json_array());
    /* params above are the common knobs; these are all that decide the rows
     * (what a resume compares), so a dataset's reader can run it again. */
    if (o)
        json_object_set_new(o, "settings", r->settings ? json_copy(r->settings) : json_null());
    /* What a dataset's reader needs to run it again: which sluice, which
     * engine and which files (a dry run opens no model). */
    if (o) {
        json_object_set_new(o, "sluice_version", json_string(SL_VERSION));
        json_object_set_new(o, "sluice_build", json_string(sl_build_id()));
        json_object_set_new(o, "engine", json_string(llama ? "llama" : "openai"));
        json_object_set_new(o, "llama_cpp", llama ? json_string(sl_llama_version()) : json_null());
        json_object_set_new(o, "model_files", llama && !s->dry_run ? model_files_json(&p->llama)
                                                                 : json_array());
    }
    /* The commit each hub dataset was read at: what to name (@COMMIT) to
     * go on after its branch moved (docs/inputs.md). */
    json_t *commits = r->src ? sl_source_dataset_commits(r->src) : NULL;
    if (o && commits)
        json_object_set_new(o, "dataset_commits", commits);
    else
        json_decref(commits);
    if (o)
        json_object_set_new(o, "chat_template", llama && p->llama.chat_template
                                                    ? text(p->llama.chat_template)
                                                    : json_null());
    return o;
}

/* --- _report.html ------------------------------------------------------------------- */

/* s as HTML text of a UTF-8 page: an error names its input as the bytes
 * it is (a Latin-1 file name), so each byte that is not UTF-8 is written
 * as U+FFFD, as the row's JSON has it. */
static void put_escaped(FILE *fp, const char *s)
{
    size_t len = s ? strlen(s) : 0;
    for (size_t i = 0; i < len;) {
        size_t valid = i + sl_utf8_valid_prefix(s + i, len - i);
        for (; i < valid; i++) {
            switch (s[i]) {
            case '<': fputs("&lt;", fp); break;
            case '>': fputs("&gt;", fp); break;
            case '&': fputs("&amp;", fp); break;
            case '"': fputs("&quot;", fp); break;
            case '\'': fputs("&#39;", fp); break;
            default: fputc(s[i], fp);
            }
        }
        if (i < len) {
            fputs("\xEF\xBF\xBD", fp);
            i++;
        }
    }
}

static void put_base64(FILE *fp, const uint8_t *b, size_t n)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)b[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)b[i + 1] << 8;
        if (i + 2 < n)
            v |= b[i + 2];
        char q[4] = {abc[(v >> 18) & 63], abc[(v >> 12) & 63],
                     i + 1 < n ? abc[(v >> 6) & 63] : '=', i + 2 < n ? abc[v & 63] : '='};
        fwrite(q, 1, 4, fp);
    }
}

/* The parts this run committed: each named (a run of 40 parts wrote 40
 * files, not its last), up to REPORT_PARTS_NAMED: a job of 10,000 parts
 * would bury the page under their names, which _summary.json lists;
 * `count` when their names were not kept. */
enum { REPORT_PARTS_NAMED = 20 };

static void put_parts(FILE *fp, const json_t *parts, long count)
{
    size_t n = parts ? json_array_size(parts) : 0;
    if (!parts) {
        fprintf(fp, ", %ld part file%s", count, count == 1 ? "" : "s");
        return;
    }
    fprintf(fp, ", <span id=\"parts\">%zu part file%s", n, n == 1 ? "" : "s");
    for (size_t i = 0; i < n && i < REPORT_PARTS_NAMED; i++) {
        fputs(i ? ", <code>" : ": <code>", fp);
        put_escaped(fp, json_string_value(json_array_get(parts, i)));
        fputs("</code>", fp);
    }
    if (n > REPORT_PARTS_NAMED)
        fprintf(fp, " and %zu more (all in _summary.json's <code>output_files</code>)",
                n - REPORT_PARTS_NAMED);
    fputs("</span>", fp);
}

static void put_html(FILE *fp, const caption_report *r)
{
    const sl_caption_summary *s = r->summary;
    const gallery_item *items;
    size_t n = gallery_sample(r->gallery, &items);
    fputs("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
          "<title>sluice report</title>\n<style>\n"
          "body{font:14px/1.4 system-ui,sans-serif;margin:1.2em;color:#222;background:#fafafa}\n"
          "#gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));"
          "gap:.6em}\n"
          "figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:.4em}\n"
          "figure img{max-width:160px;max-height:160px;display:block;margin:0 auto .3em}\n"
          "figcaption{font-size:.85em}.id{color:#666;font-size:.8em;word-break:break-all}\n"
          ".caption{white-space:pre-line}\n"
          ".error{color:#b91c1c}\n</style>\n</head>\n<body>\n<h1>sluice report</h1>\n<p>",
          fp);
    if (s->dry_run) {
        fprintf(fp, "<b id=\"dry-run\">Dry run</b> (no model: inputs read and decoded, no "
                    "answers): %ld rows, <span id=\"rows-ok\">%ld</span> read, "
                    "<span id=\"rows-failed\">%ld</span> failed in %.1f s (%.2f rows/s, "
                    "%.1f MB/s). ",
                s->rows, s->rows_ok, s->rows_failed, s->seconds,
                s->seconds > 0 ? (double)s->rows / s->seconds : 0.0,
                s->seconds > 0 ? (double)s->input_bytes / 1e6 / s->seconds : 0.0);
    } else {
        fputs("Model <b>", fp);
        put_escaped(fp, s->model_name);
        fprintf(fp, "</b>: %ld rows, <span id=\"rows-ok\">%ld</span> captioned, "
                    "<span id=\"rows-failed\">%ld</span> failed in %.1f s (%.2f rows/s). ",
                s->rows, s->rows_ok, s->rows_failed, s->seconds,
                s->seconds > 0 ? (double)s->rows / s->seconds : 0.0);
    }
    fputs("Output: <code id=\"output-dir\">", fp);
    put_escaped(fp, r->params->output_dir);
    fputs("</code>", fp);
    put_parts(fp, r->parts, s->shards);
    fputs("; figures in <a href=\"_summary.json\">_summary.json</a>.</p>\n", fp);
    /* A run stopped (--max-failed, Ctrl-C, a failed write) left a report
     * that read as a finished job's: say how it ended and what is left. */
    if (r->run_status != SL_OK) {
        long done = s->inputs_done + s->inputs_done_before;
        fprintf(fp, "<p id=\"status\" class=\"error\">The run ended early: <b>%s</b> "
                    "(_summary.json's <code>status</code>); %ld",
                sl_status_name(r->run_status), done);
        if (r->input_rows >= 0)
            fprintf(fp, " of %lld", (long long)r->input_rows);
        fputs(s->inputs_all_done ? " inputs done, every one read (--retry-failed captions "
                                   "the failed ones again)"
                                 : " inputs done (the same command again goes on from there)",
              fp);
        fputs(".</p>\n", fp);
    }
    fprintf(fp, "<p>A uniform sample of %zu rows:</p>\n<div id=\"gallery\">\n", n);
    for (size_t i = 0; i < n; i++) {
        const gallery_item *it = &items[i];
        fprintf(fp, "<figure data-index=\"%llu\">", (unsigned long long)it->index);
        if (it->thumb) {
            fputs("<img alt=\"", fp);
            put_escaped(fp, it->id);
            fputs("\" src=\"data:image/jpeg;base64,", fp);
            put_base64(fp, it->thumb, it->thumb_len);
            fputs("\">", fp);
        }
        fputs(it->error ? "<figcaption><div class=\"caption error\">"
                        : "<figcaption><div class=\"caption\">",
              fp);
        if (it->error) {
            put_escaped(fp, it->error_stage);
            fprintf(fp, " (%s): ", it->error_class);
            put_escaped(fp, it->error);
        } else {
            put_escaped(fp, it->caption);
        }
        fputs("</div><div class=\"id\">", fp);
        put_escaped(fp, it->id);
        fputs("</div></figcaption></figure>\n", fp);
    }
    fputs("</div>\n</body>\n</html>\n", fp);
}

/* --- files -------------------------------------------------------------------------- */

/* Writes `what` to fp; false when it could not be written whole (out of
 * memory), which ferror() does not see. */
typedef bool (*writer_fn)(FILE *fp, const void *what);

static int to_file(const char *data, size_t len, void *fp) { return fwrite(data, 1, len, fp) == len ? 0 : -1; }

/* A dump that stopped midway (its keys could not be listed: out of memory)
 * left a cut summary renamed into place as if whole. */
static bool put_json(FILE *fp, const void *what)
{
    if (sl_json_dump_callback(what, JSON_INDENT(2) | JSON_ENSURE_ASCII, to_file, fp) != 0)
        return false;
    fputc('\n', fp);
    return true;
}

static bool put_report(FILE *fp, const void *what)
{
    put_html(fp, what);
    return true;
}

static sl_status write_file(const char *dir, const char *name, writer_fn fn, const void *what)
{
    char *path = sl_asprintf("%s/%s", dir, name);
    char *tmp = sl_asprintf("%s/.%s.tmp", dir, name);
    sl_status st = SL_OK;
    int fd = path && tmp ? sl_file_create_temp(tmp, 0666) : -1;
    FILE *fp = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (fd >= 0 && !fp)
        close(fd);
    if (!path || !tmp)
        st = sl_fail(SL_ERR_NOMEM, "out of memory writing %s", name);
    else if (!fp)
        st = sl_fail(SL_ERR_IO, "cannot write '%s': %s", tmp, sl_file_temp_error(errno));
    if (fp) {
        bool whole = fn(fp, what);
        bool bad = ferror(fp) != 0;
        if (fclose(fp) != 0 || bad)
            st = sl_fail(SL_ERR_IO, "cannot write '%s': %s", tmp, strerror(errno));
        else if (!whole)
            st = sl_fail(SL_ERR_NOMEM, "out of memory writing '%s'", tmp);
        else if (rename(tmp, path) != 0)
            st = sl_fail(SL_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path,
                         strerror(errno));
        if (st != SL_OK)
            remove(tmp);
    }
    sl_free(path);
    sl_free(tmp);
    return st;
}

sl_status caption_report_running(const sl_caption_params *p, const char *dir)
{
    json_t *summary = json_pack("{s:i, s:s, s:o, s:o}", "format_version", 1, "status", "running",
                                "output_dir", text(p->output_dir), "input_dir",
                                text(p->input_dir));
    if (!summary)
        return sl_fail(SL_ERR_NOMEM, "out of memory building _summary.json");
    sl_status st = write_file(dir, "_summary.json", put_json, summary);
    json_decref(summary);
    return st;
}

/* Whether the file at path holds `mark`: what an older sluice wrote under
 * its name held it. Unreadable, or past 64 MiB (no summary was): no. */
static bool older_sluices(const char *path, const char *mark)
{
    uint8_t *data;
    size_t len, mark_len = strlen(mark);
    if (sl_read_file(path, (uint64_t)64 << 20, &data, &len) != SL_OK)
        return false;
    bool found = false;
    for (size_t at = 0; !found && at + mark_len <= len; at++)
        found = data[at] == (uint8_t)mark[0] && memcmp(data + at, mark, mark_len) == 0;
    sl_free(data);
    return found;
}

sl_status caption_report_write(const caption_report *r)
{
    json_t *summary = summary_json(r);
    if (!summary)
        return sl_fail(SL_ERR_NOMEM, "out of memory building _summary.json");
    sl_status st = write_file(r->dir, "_summary.json", put_json, summary);
    json_decref(summary);
    if (st == SL_OK)
        st = write_file(r->dir, "_report.html", put_report, r);
    /* Until 2026-12 the three were named without the '_': a rerun over such
     * a folder would leave them stale beside the new ones, and readers given
     * the folder (pandas.read_parquet) fail on them. sluice wrote those names
     * and replaced them at the end of every run; now it removes them, when
     * they hold what every older sluice wrote there: a file of the user's
     * by one of those names is not ours to remove. */
    static const char *const old_names[][2] = {{"summary.json", "\"report.html\""},
                                               {"report.html", "<title>sluice report</title>"},
                                               {"metrics.prom", "sluice_"}};
    for (size_t i = 0; st == SL_OK && i < sizeof old_names / sizeof *old_names; i++) {
        char *old = sl_asprintf("%s/%s", r->dir, old_names[i][0]);
        if (old && older_sluices(old, old_names[i][1]) && remove(old) != 0 && errno != ENOENT)
            sl_log(SL_LOG_WARN, "cannot remove '%s', an older sluice's name for _%s: %s", old,
                   old_names[i][0], strerror(errno));
        sl_free(old);
    }
    return st;
}
