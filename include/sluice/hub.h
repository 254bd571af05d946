/* sluice/hub.h — models from the Hugging Face hub: `hf://ORG/REPO[/FILE]`.
 *
 * sl_hub_fetch() turns a reference into local GGUF paths, downloading what
 * the cache lacks. The cache follows huggingface_hub's layout, so files
 * fetched by either tool are found by the other:
 *   CACHE/models--ORG--REPO/refs/REVISION        the commit the revision named
 *   CACHE/models--ORG--REPO/snapshots/COMMIT/FILE
 * CACHE is $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub.
 * The server is $HF_ENDPOINT (default https://huggingface.co); $HF_TOKEN is
 * sent as a bearer token; $HF_HUB_OFFLINE=1 uses the cache only.
 *
 * A download goes to FILE.incomplete and resumes from its length (HTTP
 * Range) after a dropped connection or on the next run; the file gets its
 * name only once its size equals the size the hub reports. Without FILE,
 * the repository listing picks the model (the one .gguf that is not a
 * projector, or the Q8_0 one) and the projector (a .gguf named *mmproj*).
 */
#ifndef SLUICE_HUB_H
#define SLUICE_HUB_H

#include <stdbool.h>
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_hub_params {
    const char *endpoint;  /* NULL: $HF_ENDPOINT or https://huggingface.co */
    const char *cache_dir; /* NULL: from the environment, as above */
    const char *revision;  /* NULL: "main" */
    int max_attempts;      /* per file, resuming each time (default 5) */
    long timeout_s;        /* no bytes for this long fails an attempt (default 60) */
    bool offline;          /* cache only (also $HF_HUB_OFFLINE=1) */
} sl_hub_params;

sl_hub_params sl_hub_default_params(void);

/* True when `spec` is an hf:// reference. */
bool sl_hub_is_ref(const char *spec);

/* Local paths of a fetched model; fixed buffers, nothing to free. */
typedef struct sl_hub_files {
    char model[4096];
    char mmproj[4096]; /* "" when the repository has no projector */
} sl_hub_files;

/* Resolve `model_ref` (hf://ORG/REPO or hf://ORG/REPO/FILE.gguf) and
 * download what is missing. `mmproj_ref`: NULL finds the projector in the
 * model's repository, "" fetches none, else another hf:// reference whose
 * path goes to out->mmproj. Errors name the reference, the URL and the
 * cause: SL_ERR_INVALID_ARG / SL_ERR_NOT_FOUND for a reference to change,
 * SL_ERR_IO when the transfer failed (a partial download is kept). */
sl_status sl_hub_fetch(const char *model_ref, const char *mmproj_ref,
                       const sl_hub_params *params, sl_hub_files *out);

#ifdef __cplusplus
}
#endif
#endif
