/* llm/hub_impl.h — what the hub client (hub.c) reads from a hub, apart from
 * any socket: a repository listing's .gguf files, and the choice of model
 * and projector among them. A listing is the hub's word, not ours: a name
 * that could leave the cache (.., an absolute path, a backslash) is
 * dropped. Pure: no I/O, no globals; the caller owns each hub_files. Used
 * by hub.c and by the fuzz target fuzz/fuzz_hub_listing.c. */
#ifndef SL_LLM_HUB_IMPL_H
#define SL_LLM_HUB_IMPL_H

#include <stdbool.h>
#include <stddef.h>

#include "sluice/status.h"

/* A repository of many split quantizations lists a few thousand .gguf
 * files; past HUB_MAX_FILES the listing is refused, not cut short, so a
 * model file is never missed without a word. */
enum { HUB_MAX_FILES = 65536, HUB_MAX_NAME = 1024 };

/* .gguf names (copies, in an array that grows), in listing order until
 * chosen from. Zero-initialised is empty; hub_files_clear frees it all. */
typedef struct hub_files {
    char **names;
    size_t n, cap;
} hub_files;

void hub_files_clear(hub_files *l);

/* Adds `name` when it is a .gguf file, a relative path whose every segment
 * is a plain name (see hub_segment_ok) and shorter than HUB_MAX_NAME; any
 * other name is skipped (true). False with *why when it would be the
 * (HUB_MAX_FILES + 1)th, or memory ran out. */
bool hub_files_add(hub_files *l, const char *name, char *why, size_t cap);

/* A path segment that is safe in a URL and under the cache: not empty, not
 * "." or "..", no backslash, control character, space, '?', '#' or '%'. */
bool hub_segment_ok(const char *s, size_t n);

/* The .gguf files of a listing (GET /api/models/ORG/REPO/revision/REV:
 * {"siblings": [{"rfilename": NAME}, ...]}) into *out; false with *why
 * when the body is not one. */
bool hub_listing_parse(const char *body, size_t len, hub_files *out, char *why, size_t cap);

/* Chooses the model (when *model is empty: the one model file, or the
 * Q8_0 one) and, when mmproj is non-NULL, the projector (a name holding
 * "mmproj"; of several, the one sharing the model's precision tag) from
 * files, which it sorts. SL_ERR_NOT_FOUND / SL_ERR_INVALID_ARG naming
 * `spec` (and hf://ORG/REPO/FILE.gguf to name one) when none or several. */
sl_status hub_choose_files(const char *spec, const char *org, const char *repo, hub_files *files,
                           char *model, size_t model_cap, char *mmproj, size_t mmproj_cap);

#endif
