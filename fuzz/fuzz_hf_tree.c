/* fuzz/fuzz_hf_tree.c — io/hf.c's readers of what the hub says about a
 * dataset, on arbitrary bytes: line 1 a Link header, line 2 a reference's
 * tail (hf://datasets/o/ + it), the rest a tree page (GET
 * /api/datasets/ORG/NAME/tree/REV?recursive=true). What must hold: every
 * path kept is relative with only plain segments (no "..", ".", empty,
 * control character or DEL, backslash; space, '?', '#' and '%' are quoted
 * in URLs), so it cannot leave the repository; a revision has no control
 * character, backslash, space, '?', '#' or '%' (DEL is quoted); at most HF_MAX_FILES; a page refused keeps nothing;
 * the selection is a sorted subset, and for a glob without "**" or a
 * bracket every kept path matches it as fnmatch(FNM_PATHNAME) does; a
 * next page is the text between '<' and '>'; a reference parsed has safe
 * parts. */
#include <fnmatch.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/hf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* allow: space, '?', '#', '%' (a repository path, a pattern) or not (a
 * revision). */
static void check_path(const char *p, bool allow)
{
    if (!*p || p[0] == '/' || strlen(p) >= HF_MAX_PATH)
        abort();
    for (const char *seg = p;;) {
        size_t n = strcspn(seg, "/");
        if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            abort();
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)seg[i];
            if (c < 0x20 || c == '\\' || (allow ? c == 0x7f : strchr(" ?#%", c) != NULL))
                abort();
        }
        if (!seg[n])
            return;
        seg += n + 1;
    }
}

/* The next line of data[*at..size) as a NUL-terminated copy (NULs cut it). */
static char *line(const uint8_t *data, size_t size, size_t *at)
{
    size_t start = *at, end = start;
    while (end < size && data[end] != '\n')
        end++;
    *at = end < size ? end + 1 : end;
    char *s = malloc(end - start + 1);
    if (!s)
        abort();
    memcpy(s, data + start, end - start);
    s[end - start] = '\0';
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t at = 0;
    char *link = line(data, size, &at), *tail = line(data, size, &at);
    char next[512];
    if (hf_link_next(link, next, sizeof next)) {
        const char *lt = strchr(link, '<');
        if (!*next || strchr(next, '>') || !lt || !strstr(lt, next))
            abort();
    }
    char *ref = malloc(strlen(tail) + 32);
    if (!ref)
        abort();
    strcpy(ref, "hf://datasets/o/");
    strcat(ref, tail);
    hf_spec spec;
    bool parsed = hf_spec_parse(ref, &spec) == SL_OK;
    if (parsed) {
        check_path(spec.revision, false);
        if (*spec.pattern)
            check_path(spec.pattern, true);
        if (strchr(spec.name, '/') || strchr(spec.name, '@') || !*spec.name)
            abort();
    }
    hf_listing l = {0};
    char why[256];
    if (!hf_tree_parse((const char *)data + at, size - at, &l, why, sizeof why)) {
        if (l.n != 0)
            abort();
    } else {
        if (l.n > HF_MAX_FILES)
            abort();
        for (size_t i = 0; i < l.n; i++)
            check_path(l.files[i].path, true);
        /* The selection: sorted, each kept file one of the listing. */
        size_t before = l.n;
        const char *pattern = parsed ? spec.pattern : "";
        size_t kept = hf_select(&l, pattern);
        if (kept != l.n || kept > before)
            abort();
        for (size_t i = 0; i < l.n; i++) {
            check_path(l.files[i].path, true);
            if (i && strcmp(l.files[i - 1].path, l.files[i].path) > 0)
                abort();
            if (strpbrk(pattern, "*?") && !strstr(pattern, "**") && !strchr(pattern, '[') &&
                fnmatch(pattern, l.files[i].path, FNM_PATHNAME) != 0)
                abort();
        }
    }
    hf_listing_clear(&l);
    free(ref);
    free(link);
    free(tail);
    return 0;
}
