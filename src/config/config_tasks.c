/* config/config_tasks.c — a tasks file (`--tasks tasks.json`, key
 * tasks.file): several prompts to ask of each image, each with its own
 * system prompt, sampling and JSON schema (config_impl.h). The file is
 * untrusted text: bounded (SL_CONFIG_MAX_FILE_BYTES), parsed by jansson with
 * duplicate keys refused, and every value checked for its type and range
 * with a message naming the file, the task and the key. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "config/config_impl.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/utf8.h"
#include "llm/json_schema.h"
#include "sluice/engine.h"

bool sl_config_task_name_ok(const char *name, size_t len)
{
    if (len == 0 || len > SL_TASK_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9'))
            return false;
    }
    return true;
}

void sl_task_specs_free(sl_task_spec *t, int n)
{
    for (int i = 0; t && i < n; i++) {
        sl_free(t[i].name);
        sl_free(t[i].prompt);
        sl_free(t[i].system);
        sl_free(t[i].json_schema);
        for (int k = 0; k < t[i].n_choices; k++)
            sl_free(t[i].choices[k]);
        sl_free(t[i].choices);
        t[i] = (sl_task_spec){0};
    }
}

static sl_status bad(const char *file, const char *task, const char *what)
{
    return sl_fail(SL_ERR_INVALID_ARG, "%s: task '%s': %s", file, task, what);
}

static sl_status text_of(const char *file, const char *task, const char *key, json_t *v,
                         char **out)
{
    char what[160];
    if (!json_is_string(v)) {
        snprintf(what, sizeof what, "%s must be a string", key);
        return bad(file, task, what);
    }
    size_t n = json_string_length(v);
    if (strlen(json_string_value(v)) != n) {
        snprintf(what, sizeof what, "%s holds a NUL character", key);
        return bad(file, task, what);
    }
    if (!(*out = sl_strndup(json_string_value(v), n)))
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory reading it", file);
    return SL_OK;
}

void sl_config_json_got(const json_t *v, char *buf, size_t size)
{
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    snprintf(buf, size, ", got %.40s%s%s", text ? text : "?", text && strlen(text) > 40 ? "..." : "",
             json_is_string(v) && json_string_length(v) > 0 &&
             strspn(json_string_value(v), "0123456789.-+eE") == json_string_length(v)
                 ? " (a string: write the number without quotes)" : "");
    free(text);
}

/* A number in [lo, hi] (an integer when `integer`). */
static sl_status number_of(const char *file, const char *task, const char *key, json_t *v,
                           double lo, double hi, bool integer, double *out)
{
    double d = json_is_integer(v) ? (double)json_integer_value(v)
                                  : json_is_real(v) ? json_real_value(v) : NAN;
    if (!(d >= lo && d <= hi) || (integer && !json_is_integer(v))) {
        char what[300], value[120];
        sl_config_json_got(v, value, sizeof value);
        snprintf(what, sizeof what, "sampling.%s expects %s from %.15g to %.15g%s", key,
                 integer ? "an integer" : "a number", lo, hi, value);
        return bad(file, task, what);
    }
    *out = d;
    return SL_OK;
}

static const char *const sampling_keys[] = {"max_tokens", "temperature", "top_p", "top_k",
                                            "min_p", "repeat_penalty", "presence_penalty",
                                            "frequency_penalty", "seed", "logprobs"};
static const char *const task_keys[] = {"prompt", "system", "sampling", "json_schema",
                                        "choices"};

#define N_NAMES(a) (sizeof a / sizeof *a)

static bool one_of(const char *key, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(key, names[i]) == 0)
            return true;
    return false;
}

/* names as "a, b, c", for the messages that list what is allowed */
static const char *names_text(const char *const *names, size_t n, char *buf, size_t size)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "", names[i]);
    return buf;
}

/* What an unknown key inside a task's "sampling" was likely meant as, for
 * its message: a task's own key, a sampling key spelt with '-' or an edit
 * or two off (top-p, temprature), or another tool's name for one (vLLM's
 * n, Hugging Face's max_new_tokens). Ends in ';' or '?' for the list of
 * keys allowed that follows. */
static const char *sampling_key_meant(const char *key, char *buf, size_t size)
{
    size_t len = strlen(key);
    snprintf(buf, size, ";");
    if (one_of(key, task_keys, N_NAMES(task_keys))) {
        snprintf(buf, size, " (a key of the task itself: write it beside \"sampling\");");
        return buf;
    }
    const char *instead = sl_config_foreign_missing(key, len);
    if (instead) { /* min_tokens is no max_tokens misspelt */
        snprintf(buf, size, "; %s;", instead);
        return buf;
    }
    /* top-p is an edit from top_p: each key holds one '_' */
    for (size_t i = 0; i < N_NAMES(sampling_keys); i++)
        if (sl_config_distance(key, len, sampling_keys[i], strlen(sampling_keys[i])) <= 2) {
            snprintf(buf, size, "; did you mean sampling.%s?", sampling_keys[i]);
            return buf;
        }
    const char *whose;
    sl_config_option o;
    int at = sl_config_foreign_name(key, len, &whose);
    if (at < 0 || !sl_config_option_at((size_t)at, &o) || strncmp(o.key, "sampling.", 9) != 0)
        return buf;
    const char *ours = o.key + 9;
    if (one_of(ours, sampling_keys, N_NAMES(sampling_keys)))
        snprintf(buf, size, "; did you mean sampling.%s (%s)?", ours, whose);
    else if (one_of(ours, task_keys, N_NAMES(task_keys)))
        snprintf(buf, size, " (%s: a task's is \"%s\", written beside \"sampling\");", whose, ours);
    else
        snprintf(buf, size, " (%s: sluice's is the job's %s, for every task);", whose, o.key);
    return buf;
}

static sl_status sampling_of(const char *file, const char *task, json_t *o, sl_sampling *s)
{
    if (!json_is_object(o))
    {
        char names[160], what[200];
        snprintf(what, sizeof what, "sampling must be an object (%s)",
                 names_text(sampling_keys, N_NAMES(sampling_keys), names, sizeof names));
        return bad(file, task, what);
    }
    const char *key;
    json_t *v;
    json_object_foreach(o, key, v) {
        double d = 0; /* gcc -O3 cannot see number_of set it on SL_OK */
        sl_status st;
        if (!strcmp(key, "max_tokens")) {
            if ((st = number_of(file, task, key, v, 1, 1 << 20, true, &d)) != SL_OK)
                return st;
            s->max_tokens = (int)d;
        } else if (!strcmp(key, "temperature")) {
            if ((st = number_of(file, task, key, v, 0, 100, false, &d)) != SL_OK)
                return st;
            s->temperature = (float)d;
        } else if (!strcmp(key, "top_p")) {
            if ((st = number_of(file, task, key, v, 0, 1, false, &d)) != SL_OK)
                return st;
            s->top_p = (float)d;
        } else if (!strcmp(key, "min_p")) {
            if ((st = number_of(file, task, key, v, 0, 1, false, &d)) != SL_OK)
                return st;
            s->min_p = (float)d;
        } else if (!strcmp(key, "repeat_penalty")) {
            if ((st = number_of(file, task, key, v, 0.01, 100, false, &d)) != SL_OK)
                return st;
            s->repeat_penalty = (float)d;
        } else if (!strcmp(key, "presence_penalty") || !strcmp(key, "frequency_penalty")) {
            if ((st = number_of(file, task, key, v, -2, 2, false, &d)) != SL_OK)
                return st;
            *(key[0] == 'p' ? &s->presence_penalty : &s->frequency_penalty) = (float)d;
        } else if (!strcmp(key, "top_k")) {
            if ((st = number_of(file, task, key, v, 0, 1 << 20, true, &d)) != SL_OK)
                return st;
            s->top_k = (int)d;
        } else if (!strcmp(key, "logprobs")) {
            if ((st = number_of(file, task, key, v, 0, SL_MAX_TOP_LOGPROBS, true, &d)) != SL_OK)
                return st;
            s->logprobs = d > 0;
            s->top_logprobs = (int)d;
        } else if (!strcmp(key, "seed")) {
            /* jansson's integers are 64-bit signed: the job seed's range. */
            if (!json_is_integer(v) || json_integer_value(v) < 0) {
                char what[200], value[120];
                sl_config_json_got(v, value, sizeof value);
                snprintf(what, sizeof what, "sampling.seed expects an integer from 0 to "
                         "9223372036854775807%s", value);
                return bad(file, task, what);
            }
            s->seed = (uint64_t)json_integer_value(v);
        } else {
            char what[400], names[160], meant[200];
            snprintf(what, sizeof what, "unknown key sampling.%.60s%s allowed: %s", key,
                     sampling_key_meant(key, meant, sizeof meant),
                     names_text(sampling_keys, N_NAMES(sampling_keys), names, sizeof names));
            return bad(file, task, what);
        }
    }
    return SL_OK;
}

/* "choices": [2 to SL_MAX_CHOICES strings] into t (their checks beyond
 * the shape are the job's, job/caption.c). */
static sl_status choices_of(const char *file, const char *task, json_t *v, sl_task_spec *t)
{
    size_t n = json_is_array(v) ? json_array_size(v) : 0;
    if (n < 2 || n > SL_MAX_CHOICES) {
        char what[120];
        snprintf(what, sizeof what, "choices must be a list of 2 to %d strings", SL_MAX_CHOICES);
        return bad(file, task, what);
    }
    if (!(t->choices = sl_calloc(n, sizeof *t->choices)))
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory reading it", file);
    for (size_t i = 0; i < n; i++, t->n_choices++) {
        sl_status st = text_of(file, task, "each of choices", json_array_get(v, i),
                               &t->choices[i]);
        if (st != SL_OK)
            return st;
    }
    /* Checked here too, where the message can name the file. */
    char who[320];
    snprintf(who, sizeof who, "%s: task '%s': choices", file, task);
    return sl_choices_check(who, (const char *const *)t->choices, t->n_choices);
}

/* One task object into *t (its name already set). */
static sl_status task_of(const char *file, json_t *o, const sl_sampling *base, sl_task_spec *t)
{
    const char *task = t->name;
    if (!json_is_object(o))
        return bad(file, task, "a task is an object: {\"prompt\": ..., \"system\": ..., "
                               "\"sampling\": {...}, \"json_schema\": {...}, \"choices\": "
                               "[...]}");
    t->sampling = *base;
    const char *key;
    json_t *v;
    sl_status st = SL_OK;
    bool own_logprobs = false;
    json_object_foreach(o, key, v) {
        if (!strcmp(key, "prompt"))
            st = text_of(file, task, key, v, &t->prompt);
        else if (!strcmp(key, "system"))
            st = text_of(file, task, key, v, &t->system);
        else if (!strcmp(key, "sampling")) {
            st = sampling_of(file, task, v, &t->sampling);
            t->max_tokens_set = json_object_get(v, "max_tokens") != NULL;
            own_logprobs = json_integer_value(json_object_get(v, "logprobs")) > 0;
        }
        else if (!strcmp(key, "json_schema")) {
            if (!json_is_object(v) && !json_is_boolean(v))
                return bad(file, task, "json_schema must be a JSON schema (an object)");
            char *dumped = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
            t->json_schema = dumped ? sl_strdup(dumped) : NULL;
            free(dumped);
            if (!t->json_schema)
                return sl_fail(SL_ERR_NOMEM, "%s: out of memory reading it", file);
            /* Checked now, as --json-schema is when read: every row would
             * fail on it. */
            char name[320];
            snprintf(name, sizeof name, "%s: task '%s': json_schema", file, task);
            sl_json_schema *schema;
            st = sl_json_schema_parse(t->json_schema, strlen(t->json_schema), name, &schema);
            sl_json_schema_free(schema);
        } else if (!strcmp(key, "choices")) {
            st = choices_of(file, task, v, t);
        } else if (strcmp(key, "name") != 0) {
            char what[300], where[160] = ";";
            if (one_of(key, sampling_keys, N_NAMES(sampling_keys)))
                snprintf(where, sizeof where, "; did you mean sampling.%s (\"sampling\": "
                         "{\"%s\": ...})?", key, key);
            char names[160];
            snprintf(what, sizeof what, "unknown key '%.60s'%s allowed: %s", key, where,
                     names_text(task_keys, N_NAMES(task_keys), names, sizeof names));
            return bad(file, task, what);
        }
        if (st != SL_OK)
            return st;
    }
    if (!t->prompt || !*t->prompt)
        return bad(file, task, "no prompt (\"prompt\": \"...\")");
    /* Each answers another way; said here, naming the file (the job's
     * check of the same names only the task). */
    if (t->n_choices > 0 && (t->json_schema || own_logprobs))
        return bad(file, task, t->json_schema
                   ? "choices and json_schema: not together: the answer is one of the choices, "
                     "with each one's score (column scores); keep one"
                   : "choices and sampling.logprobs: not together: the answer is one of the "
                     "choices, with each one's score (column scores); keep one");
    /* As --system '' is: "" can only be a mistake (an unset "$VAR"), and
     * was sent as an empty system message in silence. */
    if (t->system && !*t->system)
        return bad(file, task, "system is empty: give TEXT, or leave it out for the job's "
                               "system prompt");
    if (!sl_utf8_valid(t->prompt, strlen(t->prompt)) ||
        (t->system && !sl_utf8_valid(t->system, strlen(t->system))))
        return bad(file, task, "the prompt or system prompt is not valid UTF-8");
    return SL_OK;
}

static sl_status name_of(const char *file, const char *name, size_t len, sl_task_spec *all,
                         int n, sl_task_spec *t)
{
    if (!sl_config_task_name_ok(name, len))
        return sl_fail(SL_ERR_INVALID_ARG,
                       "%s: task name '%.*s' must be letters, digits and _ (not first a digit), "
                       "at most %d bytes: it names output columns", file,
                       (int)(len > 80 ? 80 : len), name, SL_TASK_NAME_MAX);
    for (int i = 0; i < n; i++)
        if (strlen(all[i].name) == len && memcmp(all[i].name, name, len) == 0)
            return sl_fail(SL_ERR_INVALID_ARG, "%s: task '%s' is given twice", file, all[i].name);
    if (!(t->name = sl_strndup(name, len)))
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory reading it", file);
    return SL_OK;
}

sl_status sl_config_parse_tasks(const char *text, size_t len, const char *file,
                                const sl_sampling *base, sl_task_spec *out, int max, int *n)
{
    *n = 0;
    memset(out, 0, (size_t)max * sizeof *out);
    if (len > SL_CONFIG_MAX_FILE_BYTES)
        return sl_fail(SL_ERR_INVALID_ARG, "%s is larger than %d bytes", file,
                       SL_CONFIG_MAX_FILE_BYTES);
    json_error_t err;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return sl_fail(SL_ERR_INVALID_ARG, "%s:%d:%d: not JSON: %s", file, err.line, err.column,
                       err.text);
    sl_status st = SL_OK;
    size_t count = json_is_object(root) ? json_object_size(root)
                   : json_is_array(root) ? json_array_size(root) : 0;
    if (!json_is_object(root) && !json_is_array(root))
        st = sl_fail(SL_ERR_INVALID_ARG, "%s: a tasks file is an object {\"NAME\": {\"prompt\": "
                     "...}, ...} or a list [{\"name\": ..., \"prompt\": ...}, ...]", file);
    else if (count == 0 || count > (size_t)max)
        st = sl_fail(SL_ERR_INVALID_ARG, "%s: %zu tasks; a job takes 1 to %d", file, count, max);
    if (st == SL_OK && json_is_object(root)) {
        const char *key;
        json_t *v;
        json_object_foreach(root, key, v) {
            sl_task_spec *t = &out[*n];
            if ((st = name_of(file, key, strlen(key), out, *n, t)) != SL_OK)
                break;
            (*n)++;
            if ((st = task_of(file, v, base, t)) != SL_OK)
                break;
        }
    } else if (st == SL_OK) {
        size_t i;
        json_t *v;
        json_array_foreach(root, i, v) {
            json_t *name = json_is_object(v) ? json_object_get(v, "name") : NULL;
            if (!json_is_string(name)) {
                st = sl_fail(SL_ERR_INVALID_ARG, "%s: task %zu has no \"name\" (a string)", file,
                             i + 1);
                break;
            }
            sl_task_spec *t = &out[*n];
            if ((st = name_of(file, json_string_value(name), json_string_length(name), out, *n,
                              t)) != SL_OK)
                break;
            (*n)++;
            if ((st = task_of(file, v, base, t)) != SL_OK)
                break;
        }
    }
    json_decref(root);
    if (st != SL_OK) {
        sl_task_specs_free(out, *n);
        *n = 0;
    }
    return st;
}
