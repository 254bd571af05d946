/* fuzz/fuzz_partitions.c — Hive partition columns of a dataset folder's
 * rows (io/source.c open_partitions, add_partitions, below the folders
 * expand_inputs walks). The input is up to eight paths, one a line, each
 * made as a JSONL file of one row under a fresh dataset folder "ds.jsonl";
 * the first byte says whether the row has a column of its own named "k"
 * and whether the folder is given with a trailing '/'; a file whose name
 * starts with 'u' opens with a UTF-16 byte order mark, which fails it at
 * open (one failed row). The promises
 * checked: every row read, error or not, carries each of its file's
 * partition folders (sl_hive_partitions below the dataset folder) as a
 * column, the deeper folder's value for a key named twice, a row's own
 * column kept over a folder's; nothing leaks (ASan). */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "core/utf8.h"
#include "fuzz_source.h"
#include "io/source_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Makes every folder above path (which lies below fuzz_tmpdir()); false
 * when one of them is a file already. */
static bool make_parents(char *path)
{
    for (char *s = path + strlen(fuzz_tmpdir()) + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            int rc = mkdir(path, 0777);
            *s = '/';
            if (rc != 0 && errno != EEXIST)
                return false;
        }
    return true;
}

/* A path the fuzzer may make below the dataset folder: relative, its
 * components neither empty, "." nor "..", no byte a file name cannot hold,
 * and a name that says JSONL so the walk takes it. */
static bool usable(const char *rel)
{
    size_t n = strlen(rel);
    if (n == 0 || n > 200 || rel[0] == '/' || rel[n - 1] == '/' || strstr(rel, "//") ||
        n < 6 || strcmp(rel + n - 6, ".jsonl") != 0)
        return false;
    for (const char *seg = rel; seg; seg = strchr(seg, '/') ? strchr(seg, '/') + 1 : NULL) {
        size_t len = strcspn(seg, "/");
        if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.') ||
            seg[0] == '.' || seg[0] == '_') /* hidden and _-folders the walk leaves out */
            return false;
    }
    return true;
}

/* The partition column `key` as the row holds it: escaped when its bytes
 * are not UTF-8, as open_partitions writes it. */
static json_t *column(json_t *extra, const char *key)
{
    if (!sl_utf8_needs_escape(key, strlen(key)))
        return json_object_get(extra, key);
    char *escaped = sl_utf8_escape(key, strlen(key));
    json_t *v = escaped ? json_object_get(extra, escaped) : NULL;
    sl_free(escaped);
    return v;
}

static bool same_text(const json_t *v, const char *want)
{
    if (!want)
        return json_is_null(v);
    if (!json_is_string(v))
        return false;
    if (!sl_utf8_needs_escape(want, strlen(want)))
        return strcmp(json_string_value(v), want) == 0;
    char *escaped = sl_utf8_escape(want, strlen(want));
    bool same = escaped && strcmp(json_string_value(v), escaped) == 0;
    sl_free(escaped);
    return same;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 2048)
        return 0;
    bool own_column = data[0] & 1, slash = data[0] & 2;
    char *text = sl_strndup((const char *)data + 1, size - 1);
    if (!text)
        abort();
    char *lines[8], *save = NULL;
    size_t n = 0;
    for (char *tok = strtok_r(text, "\n", &save); tok && n < 8; tok = strtok_r(NULL, "\n", &save))
        if (usable(tok))
            lines[n++] = tok;
    char root[128];
    snprintf(root, sizeof root, "%s/ds.jsonl", fuzz_tmpdir());
    nftw(root, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
    if (mkdir(root, 0777) != 0)
        abort();
    size_t made = 0;
    for (size_t i = 0; i < n; i++) {
        char *path = sl_asprintf("%s/%s", root, lines[i]);
        if (!path)
            abort();
        if (make_parents(path)) {
            FILE *f = fopen(path, "wb");
            if (f) {
                if (strrchr(path, '/')[1] == 'u')
                    fputs("\xff\xfe", f);
                fprintf(f, own_column ? "{\"image\": \"x.jpg\", \"k\": \"own\"}\n"
                                      : "{\"image\": \"x.jpg\"}\n");
                fclose(f);
                made++;
            }
        }
        sl_free(path);
    }
    if (made > 0) {
        char input[160];
        snprintf(input, sizeof input, "%s%s", root, slash ? "/" : "");
        const char *inputs[1] = {input};
        sl_source_params p = sl_source_default_params();
        sl_source *src;
        if (sl_source_open(inputs, 1, &p, &src) != SL_OK)
            abort(); /* a folder of JSONL files opens */
        sl_source_item it = {0};
        long rows = 0;
        for (;;) {
            bool done = false;
            if (sl_source_next(src, &it, &done) != SL_OK)
                abort();
            if (done)
                break;
            rows++;
            const char *name, *file = sl_source_file(src, it.input, &name);
            if (!file || strncmp(file, root, strlen(root)) != 0)
                abort();
            char **keys, **values;
            size_t np;
            if (sl_hive_partitions(file + strlen(root) + 1, &keys, &values, &np) != 0)
                abort();
            for (size_t k = 0; k < np; k++) {
                json_t *v = column(it.extra, keys[k]);
                bool own = own_column && !it.error && strcmp(keys[k], "k") == 0;
                if (!v || !(own ? same_text(v, "own") : same_text(v, values[k]))) {
                    fprintf(stderr, "'%s': partition %s=%s not in the row\n", file, keys[k],
                            values[k] ? values[k] : "(null)");
                    abort();
                }
            }
            sl_hive_partitions_free(keys, values, np);
        }
        if (rows < 1)
            abort();
        sl_source_item_clear(&it);
        sl_source_free(src);
    }
    sl_free(text);
    return 0;
}
