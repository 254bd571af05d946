/* fuzz/fuzz_hub_listing.c — the hub client's reader of a repository listing
 * (llm/hub.c: GET /api/models/ORG/REPO/revision/REV) and its choice of model
 * and projector, on arbitrary bytes. What must hold: every name kept is a
 * .gguf file that stays under the cache (no "..", no absolute path, no
 * backslash), and what is chosen is one of them. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "llm/hub_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool listed(const hub_files *files, const char *name)
{
    for (size_t i = 0; i < files->n; i++)
        if (strcmp(files->names[i], name) == 0)
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hub_files files = {0};
    char why[256];
    if (!hub_listing_parse((const char *)data, size, &files, why, sizeof why)) {
        if (files.n != 0)
            abort();
        return 0;
    }
    if (files.n > HUB_MAX_FILES)
        abort();
    for (size_t i = 0; i < files.n; i++) {
        const char *name = files.names[i];
        size_t len = strlen(name);
        if (len < 6 || len >= HUB_MAX_NAME || name[0] == '/' || strchr(name, '\\') ||
            strstr(name, "//") || strcasecmp(name + len - 5, ".gguf") != 0)
            abort();
        for (const char *seg = name; *seg;) {
            size_t n = strcspn(seg, "/");
            if ((n == 2 && seg[0] == '.' && seg[1] == '.') || (n == 1 && seg[0] == '.'))
                abort();
            seg += n + (seg[n] == '/');
        }
    }
    char model[HUB_MAX_NAME] = "", mmproj[HUB_MAX_NAME] = "";
    if (hub_choose_files("hf://fuzz/repo", "fuzz", "repo", &files, model, sizeof model, mmproj,
                         sizeof mmproj) == SL_OK) {
        if (!listed(&files, model) || (mmproj[0] && !listed(&files, mmproj)))
            abort();
    }
    hub_files_clear(&files);
    return 0;
}
