/* stage/stage.c — see stage.h: what every kind of user stage shares (its
 * name, place, sizes and columns), then the kind's own opening. */
#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "stage/stage.h"

struct user_stage {
    char *name;
    bool lua;
    void *impl;
};

/* "dir/dedup.lua" -> "dedup". */
static char *name_of_file(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    return sl_strndup(base, n);
}

static sl_status place_of(const sl_stage_spec *spec, const char *name, sl_pipeline_builtin *after)
{
    static const struct {
        const char *name;
        sl_pipeline_builtin which;
    } places[] = {{"read", SL_PIPELINE_READ}, {"decode", SL_PIPELINE_DECODE},
                  {"engine", SL_PIPELINE_ENGINE}};
    const char *want = spec->after ? spec->after : "decode";
    for (size_t i = 0; i < sizeof places / sizeof *places; i++)
        if (strcmp(places[i].name, want) == 0) {
            *after = places[i].which;
            return SL_OK;
        }
    return sl_fail(SL_ERR_INVALID_ARG, "stage '%s': after must be read, decode or engine, got '%s'",
                   name, want);
}

sl_status user_stage_open(const sl_stage_spec *spec, user_stage **out,
                          sl_pipeline_stage_params *params, sl_pipeline_builtin *after)
{
    *out = NULL;
    bool lua = spec->lua && *spec->lua, plugin = spec->plugin && *spec->plugin;
    if (lua == plugin)
        return sl_fail(SL_ERR_INVALID_ARG, "stage '%s': give exactly one of lua (a script) and "
                                           "plugin (a shared object)",
                       spec->name ? spec->name : "(unnamed)");
    if (spec->workers < 0 || spec->batch_size < 0 || spec->n_columns < 0)
        return sl_fail(SL_ERR_INVALID_ARG, "stage '%s': workers and batch_size must be >= 1",
                       spec->name ? spec->name : (lua ? spec->lua : spec->plugin));
    if (plugin && spec->time_limit_s != 0)
        return sl_fail(SL_ERR_INVALID_ARG, "stage '%s': time_limit is for Lua stages (a plugin's "
                       "C code cannot be stopped safely)",
                       spec->name ? spec->name : spec->plugin);
    user_stage *us = sl_calloc(1, sizeof *us);
    if (!us || !(us->name = spec->name && *spec->name ? sl_strdup(spec->name)
                                                      : name_of_file(lua ? spec->lua : spec->plugin))) {
        sl_free(us);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening a stage");
    }
    us->lua = lua;
    sl_status st = place_of(spec, us->name, after);
    *params = sl_pipeline_stage_default_params();
    params->name = us->name;
    if (spec->workers > 0)
        params->workers = spec->workers;
    if (spec->batch_size > 0)
        params->batch_size = spec->batch_size;
    params->columns = spec->columns;
    params->n_columns = (size_t)spec->n_columns;
    if (st == SL_OK)
        st = lua ? lua_stage_open(spec, us->name, params, &us->impl)
                 : plugin_stage_open(spec, us->name, params, &us->impl);
    if (st != SL_OK) {
        user_stage_free(us);
        return st;
    }
    *out = us;
    return SL_OK;
}

void user_stage_free(user_stage *us)
{
    if (!us)
        return;
    if (us->impl)
        (us->lua ? lua_stage_free : plugin_stage_free)(us->impl);
    sl_free(us->name);
    sl_free(us);
}
