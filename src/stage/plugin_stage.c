/* stage/plugin_stage.c — see stage.h and sluice/plugin.h: a C plugin loaded
 * with dlopen, its ABI version checked, run as a map stage whose process()
 * and close() are the plugin's own (no call of ours between the executor
 * and the plugin's batch); init() is ours, to hand the plugin the host
 * table and its config text. */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "core/alloc.h"
#include "core/error.h"
#include "sluice/plugin.h"
#include "stage/stage.h"

struct sl_plugin_stage {
    void *handle;
    const sl_plugin *plugin;
    char *config; /* a JSON object's text */
};

/* --- the host table ---------------------------------------------------------------- */

static sl_status host_fail(sl_status status, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sl_fail(status, "%s", msg);
}

/* The whole message, however long, as sl_row_fail keeps every other
 * stage's: a 1 KiB buffer here cut a plugin's longer one, mid-character
 * too (a U+FFFD then ended the row's error). */
static void host_row_fail(sl_row *row, const char *fmt, ...)
{
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    char *msg = n >= 0 ? sl_malloc((size_t)n + 1) : NULL;
    if (msg)
        vsnprintf(msg, (size_t)n + 1, fmt, again);
    va_end(again);
    va_end(ap);
    sl_row_fail(row, "%s", msg ? msg : "out of memory recording the plugin's error");
    sl_free(msg);
}

static json_t *config_member(const char *config_json, const char *key)
{
    json_t *o = json_loads(config_json ? config_json : "{}", 0, NULL);
    json_t *v = o && key ? json_incref(json_object_get(o, key)) : NULL;
    json_decref(o);
    return v;
}

static char *host_config_string(const char *config_json, const char *key)
{
    json_t *v = config_member(config_json, key);
    char *s = json_is_string(v) ? sl_strndup(json_string_value(v), json_string_length(v)) : NULL;
    json_decref(v);
    return s;
}

static sl_status host_config_number(const char *config_json, const char *key, double *value)
{
    json_t *v = config_member(config_json, key);
    sl_status st = !v ? SL_ERR_NOT_FOUND : json_is_number(v) ? SL_OK : SL_ERR_INVALID_ARG;
    if (st == SL_OK)
        *value = json_number_value(v);
    json_decref(v);
    return st;
}

static void host_text_free(char *text) { sl_free(text); }

static const sl_plugin_host host = {
    .abi_version = SL_PLUGIN_ABI_VERSION,
    .size = sizeof(sl_plugin_host),
    .fail = host_fail,
    .config_string = host_config_string,
    .config_number = host_config_number,
    .text_free = host_text_free,
    .row_seq = sl_row_seq,
    .row_fail = host_row_fail,
    .row_drop = sl_row_drop,
    .row_failed = sl_row_failed,
    .row_dropped = sl_row_dropped,
    .row_id = sl_pipeline_row_id,
    .row_path = sl_pipeline_row_path,
    .row_prompt = sl_pipeline_row_prompt,
    .row_set_prompt = sl_pipeline_row_set_prompt,
    .row_width = sl_pipeline_row_width,
    .row_height = sl_pipeline_row_height,
    .row_answer = sl_pipeline_row_answer,
    .row_set_answer = sl_pipeline_row_set_answer,
    .row_image_format = sl_pipeline_row_image_format,
    .row_image_bytes = sl_pipeline_row_image_bytes,
    .row_gray = sl_pipeline_row_gray,
    .row_columns_json = sl_pipeline_row_columns_json,
    .row_column_json = sl_pipeline_row_column_json,
    .row_column_string = sl_pipeline_row_column_string,
    .row_set_column_json = sl_pipeline_row_set_column_json,
    .row_set_column_string = sl_pipeline_row_set_column_string,
    .row_emit = sl_pipeline_row_emit,
    .row_task_answer = sl_pipeline_row_task_answer,
    .row_set_task_answer = sl_pipeline_row_set_task_answer,
    .row_answer_count = sl_pipeline_row_answer_count,
    .row_answer_at = sl_pipeline_row_answer_at,
    .row_logprobs = sl_pipeline_row_logprobs,
    .row_video = sl_pipeline_row_video,
    .row_image_count = sl_pipeline_row_image_count,
    .row_scores = sl_pipeline_row_scores,
};

/* --- loading ------------------------------------------------------------------------ */

static sl_status stage_init(void *config, int worker, void **state)
{
    const sl_plugin_stage *ps = config;
    *state = NULL;
    if (!ps->plugin->init)
        return SL_OK;
    sl_clear_error();
    sl_status st = ps->plugin->init(&host, ps->config, worker, state);
    if (st != SL_OK && !*sl_last_error())
        sl_fail(st, "the plugin's init() returned %s", sl_status_name(st));
    return st;
}

sl_status sl_plugin_stage_open(const char *path, const char *config_json, sl_plugin_stage **out)
{
    *out = NULL;
    if (!path || !*path)
        return sl_fail(SL_ERR_INVALID_ARG, "a plugin needs the path of its shared object");
    json_error_t jerr;
    json_t *cfg = json_loads(config_json ? config_json : "{}", 0, &jerr);
    bool is_object = json_is_object(cfg);
    json_decref(cfg);
    if (!is_object)
        return sl_fail(SL_ERR_INVALID_ARG, "plugin '%s': its config must be a JSON object%s%s",
                       path, cfg ? "" : ": ", cfg ? "" : jerr.text);
    /* A name without a slash is looked up by the loader in its search path,
     * not in the folder sluice runs in: the user meant the file. */
    char *file = strchr(path, '/') ? sl_strdup(path) : sl_asprintf("./%s", path);
    if (!file)
        return sl_fail(SL_ERR_NOMEM, "out of memory loading plugin '%s'", path);
    dlerror();
    void *handle = dlopen(file, RTLD_NOW | RTLD_LOCAL);
    sl_free(file);
    if (!handle) {
        const char *why = dlerror();
        return sl_fail(SL_ERR_INVALID_ARG, "plugin '%s' does not load: %s", path,
                       why ? why : "(no reason given)");
    }
    dlerror();
    void *sym = dlsym(handle, SL_PLUGIN_ENTRY);
    const char *why = dlerror();
    sl_status st = SL_OK;
    const sl_plugin *plugin = NULL;
    if (why || !sym) {
        st = sl_fail(SL_ERR_INVALID_ARG, "plugin '%s' has no function %s(): %s; a plugin defines "
                                         "it (sluice/plugin.h)",
                     path, SL_PLUGIN_ENTRY, why ? why : "the symbol is NULL");
    } else {
        /* A function returned as an object pointer: POSIX dlsym's way. */
        sl_plugin_entry_fn entry;
        memcpy(&entry, &sym, sizeof entry);
        plugin = entry();
        if (!plugin)
            st = sl_fail(SL_ERR_INVALID_ARG, "plugin '%s': %s() returned NULL", path,
                         SL_PLUGIN_ENTRY);
        else if (plugin->abi_version != SL_PLUGIN_ABI_VERSION)
            st = sl_fail(SL_ERR_INVALID_ARG, "plugin '%s' was built for plugin ABI version %u, "
                                             "this sluice's is %u: rebuild the plugin against "
                                             "this sluice's sluice/plugin.h",
                         path, (unsigned)plugin->abi_version, (unsigned)SL_PLUGIN_ABI_VERSION);
        else if (!plugin->process)
            st = sl_fail(SL_ERR_INVALID_ARG, "plugin '%s' has no process() (the second function "
                                             "of its sl_plugin)", path);
    }
    sl_plugin_stage *ps = st == SL_OK ? sl_calloc(1, sizeof *ps) : NULL;
    if (st == SL_OK && (!ps || !(ps->config = sl_strdup(config_json ? config_json : "{}")))) {
        sl_free(ps);
        ps = NULL;
        st = sl_fail(SL_ERR_NOMEM, "out of memory loading plugin '%s'", path);
    }
    if (st != SL_OK) {
        dlclose(handle);
        return st;
    }
    ps->handle = handle;
    ps->plugin = plugin;
    *out = ps;
    return SL_OK;
}

void sl_plugin_stage_params(const sl_plugin_stage *ps, sl_pipeline_stage_params *params)
{
    params->config = (void *)ps;
    params->init = stage_init;
    params->process = ps->plugin->process;
    params->close = ps->plugin->close;
}

const char *sl_plugin_stage_name(const sl_plugin_stage *ps) { return ps->plugin->name; }

void sl_plugin_stage_free(sl_plugin_stage *ps)
{
    if (!ps)
        return;
    dlclose(ps->handle);
    sl_free(ps->config);
    sl_free(ps);
}

/* --- the job's plugin stages (stage.h) ---------------------------------------------- */

sl_status plugin_stage_open(const sl_stage_spec *spec, const char *name,
                            sl_pipeline_stage_params *params, void **impl)
{
    *impl = NULL;
    sl_plugin_stage *ps;
    sl_status st = sl_plugin_stage_open(spec->plugin, spec->config, &ps);
    if (st != SL_OK) {
        char why[1024];
        snprintf(why, sizeof why, "%s", sl_last_error());
        return sl_fail(st, "stage '%s': %s", name, why);
    }
    sl_plugin_stage_params(ps, params);
    *impl = ps;
    return SL_OK;
}

void plugin_stage_free(void *impl) { sl_plugin_stage_free(impl); }
