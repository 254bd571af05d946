/* stage/stage.h — the user's stages of a job (sl_stage_spec): a Lua script
 * (stage/lua_stage.c) or a C plugin (stage/plugin_stage.c) turned into a
 * map stage of the pipeline (sluice/pipeline.h).
 *
 * user_stage_open() checks the stage before anything runs (the script
 * compiles, the plugin loads and speaks our ABI, the config is a JSON
 * object): a failure is SL_ERR_INVALID_ARG naming the file (and line) and
 * the cause, which the command reports with exit 2. The user_stage owns
 * what the pipeline stage's functions and config point to (the script's
 * path, the plugin's handle, the parsed config, the name and columns) and
 * must outlive the pipeline it was added to: free it after
 * sl_pipeline_free(). Per-worker state (a lua_State, a plugin instance) is
 * made by init() on the worker's thread and ended by close(). */
#ifndef SL_STAGE_STAGE_H
#define SL_STAGE_STAGE_H

#include "sluice/caption.h"
#include "sluice/pipeline.h"

typedef struct user_stage user_stage;

/* Opens the stage `spec` describes; *params is its stage for
 * sl_pipeline_add_stage() (valid while *out lives), *after the built-in
 * stage it follows. */
sl_status user_stage_open(const sl_stage_spec *spec, user_stage **out,
                          sl_pipeline_stage_params *params, sl_pipeline_builtin *after);
void user_stage_free(user_stage *us);

/* The kinds, behind user_stage_open(): each fills *params (name, workers,
 * batch size and columns already set from the spec: it sets config, init,
 * process and close) and returns its own object to free with its free
 * function. `name` is the stage's name for messages. */
sl_status lua_stage_open(const sl_stage_spec *spec, const char *name,
                         sl_pipeline_stage_params *params, void **impl);
void lua_stage_free(void *impl);
/* The conversion a column or config goes through to Lua and back (for
 * fuzz/fuzz_lua_json.c): `json` (len bytes) parsed, pushed as a Lua value,
 * converted back; *out its compact JSON text (sl_free), NULL when `json` is
 * not JSON. SL_ERR_INVALID_ARG (the Lua error in the message) for a value
 * the conversion refuses (nested deeper than 64), SL_ERR_NOMEM. */
sl_status lua_stage_json_roundtrip(const char *json, size_t len, char **out);
sl_status plugin_stage_open(const sl_stage_spec *spec, const char *name,
                            sl_pipeline_stage_params *params, void **impl);
void plugin_stage_free(void *impl);

#endif
