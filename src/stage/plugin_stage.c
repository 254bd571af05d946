/* stage/plugin_stage.c — see stage.h. */
#include "core/error.h"
#include "stage/stage.h"

sl_status plugin_stage_open(const sl_stage_spec *spec, const char *name,
                         sl_pipeline_stage_params *params, void **impl)
{
    (void)spec;
    (void)params;
    *impl = NULL;
    return sl_fail(SL_ERR_INVALID_ARG, "stage '%s': plugin stages are not in this sluice yet", name);
}

void plugin_stage_free(void *impl) { (void)impl; }
