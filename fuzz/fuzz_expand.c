/* fuzz/fuzz_expand.c — the naming of inputs: brace expansion, globbing,
 * the one-file-once check and the ids' names from the common folder
 * (io/source.c, io/source_parse.c). The input is up to four patterns, one a
 * line, each taken below a small fixed tree (files side by side, nested,
 * one name in several folders, a symlink and a hard link); the first byte
 * chooses folders or files. Patterns whose expansion could climb out of the
 * tree ("..", ".*") are left to the pure functions, so a run never globs the
 * whole disk. The
 * promises checked: distinct files get distinct names, each name a tail of
 * its path; the pure functions say the same of any text, and its Hive
 * partition folders (sl_hive_partitions) are distinct keys. */
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "fuzz_source.h"
#include "io/source_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char tree[128];

static void make_tree(void)
{
    const char *files[] = {"a.tar", "b.tar", "sub/a.tar", "sub/deep/a.tar", "sub2/a.tar",
                           "pics/x.jpg", "pics/in/y.jpg", "pics2/z.jpg"};
    snprintf(tree, sizeof tree, "%s/tree", fuzz_tmpdir());
    char path[256];
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", tree, files[i]);
        for (char *s = path + strlen(fuzz_tmpdir()) + 1; *s; s++)
            if (*s == '/') {
                *s = '\0';
                mkdir(path, 0777);
                *s = '/';
            }
        fuzz_file(path + strlen(fuzz_tmpdir()) + 1, (const uint8_t *)"x", 1);
    }
    snprintf(path, sizeof path, "%s/link", tree);
    if (symlink("sub", path) != 0)
        abort();
    char a[256];
    snprintf(a, sizeof a, "%s/a.tar", tree);
    snprintf(path, sizeof path, "%s/hard.tar", tree);
    if (link(a, path) != 0)
        abort();
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Distinct paths must get distinct names, each the tail of its path. */
static void check_names(const char *const *paths, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t lp = strlen(paths[i]), ln = strlen(names[i]);
        if (ln > lp || strcmp(paths[i] + lp - ln, names[i]) != 0 || names[i][0] == '/')
            abort();
        for (size_t k = 0; k < i; k++)
            if (strcmp(paths[i], paths[k]) != 0 && strcmp(names[i], names[k]) == 0)
                abort();
    }
}

/* The pure functions on the raw lines, as paths from a working folder. */
static void pure(char **lines, size_t n)
{
    char *abs[4];
    for (size_t i = 0; i < n; i++)
        if (!(abs[i] = sl_path_lexical("/work/dir", lines[i])) || abs[i][0] != '/' ||
            strstr(abs[i], "//") || strstr(abs[i], "/./") || strstr(abs[i], "/../"))
            abort();
    for (int folders = 0; folders < 2; folders++) {
        const char **names;
        if (sl_input_names((const char *const *)abs, n, folders, &names) != 0)
            abort();
        check_names((const char *const *)abs, names, n);
        sl_free(names);
    }
    for (size_t i = 0; i < n; i++)
        sl_free(abs[i]);
    /* Hive partition folders: one a folder at most, each key once and not
     * empty. */
    for (size_t i = 0; i < n; i++) {
        char **keys, **values;
        size_t np, folders = 0;
        for (const char *c = lines[i]; (c = strchr(c, '/')); c++)
            folders++;
        if (sl_hive_partitions(lines[i], &keys, &values, &np) != 0 || np > folders)
            abort();
        for (size_t k = 0; k < np; k++) {
            if (!keys[k][0])
                abort();
            for (size_t j = 0; j < k; j++)
                if (strcmp(keys[j], keys[k]) == 0)
                    abort();
        }
        sl_hive_partitions_free(keys, values, np);
    }
}

/* Whether glob(3) could take `name` out of the tree: a ".." component, or
 * one that glob matches to ".." (a leading '.' then a pattern: ".*", or an
 * escaped "\\.\\."). */
static bool leaves_tree(const char *name)
{
    if (strstr(name, "..") || strchr(name, '\\'))
        return true;
    for (const char *c = name; (c = strchr(c, '.')); c++)
        if ((c == name || c[-1] == '/') && strcspn(c, "/") > strcspn(c, "*?["))
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!tree[0])
        make_tree();
    /* Brace expansion alone, on the whole input as one pattern. */
    char *whole = sl_strndup((const char *)data, size);
    char **names, err[256];
    size_t nn;
    if (!whole)
        abort();
    if (sl_brace_expand(whole, 1000, &names, &nn, err, sizeof err) == 0)
        sl_strings_free(names, nn);
    sl_free(whole);
    if (size < 1 || size > 2048)
        return 0;
    bool folders = data[0] & 1;
    char *text = sl_strndup((const char *)data + 1, size - 1);
    if (!text)
        abort();
    char *lines[4], *save = NULL;
    size_t n = 0;
    for (char *tok = strtok_r(text, "\n", &save); tok && n < 4; tok = strtok_r(NULL, "\n", &save))
        lines[n++] = tok;
    pure(lines, n);

    /* Each pattern below the tree, unless its expansion climbs out. */
    char *inputs[4];
    size_t n_in = 0;
    bool climbs = false;
    for (size_t i = 0; i < n && !climbs; i++) {
        if (sl_brace_expand(lines[i], 64, &names, &nn, err, sizeof err) != 0) {
            climbs = true; /* too many, or unbalanced: sl_source_open says so too */
            break;
        }
        for (size_t k = 0; k < nn; k++)
            climbs = climbs || leaves_tree(names[k]);
        sl_strings_free(names, nn);
        if (!(inputs[n_in++] = sl_asprintf("%s/%s", tree, lines[i])))
            abort();
    }
    if (!climbs && n_in > 0) {
        sl_source_params p = sl_source_default_params();
        p.format = folders ? "folder" : "webdataset";
        sl_source *src;
        if (sl_source_open((const char *const *)inputs, n_in, &p, &src) == SL_OK) {
            size_t nf = sl_source_num_files(src);
            const char **paths = sl_calloc(nf, sizeof *paths), **fnames = sl_calloc(nf, sizeof *fnames);
            char **abs = sl_calloc(nf, sizeof *abs);
            if (!paths || !fnames || !abs)
                abort();
            for (size_t i = 0; i < nf; i++) {
                paths[i] = sl_source_file(src, i, &fnames[i]);
                abs[i] = sl_path_lexical("/", paths[i]);
            }
            /* One file once: the lexical paths are distinct, and so the names. */
            char **sorted = sl_calloc(nf, sizeof *sorted);
            memcpy(sorted, abs, nf * sizeof *abs);
            qsort(sorted, nf, sizeof *sorted, cmp_str);
            for (size_t i = 1; i < nf; i++)
                if (strcmp(sorted[i], sorted[i - 1]) == 0)
                    abort();
            check_names((const char *const *)abs, fnames, nf);
            sl_free(sorted);
            for (size_t i = 0; i < nf; i++)
                sl_free(abs[i]);
            sl_free(abs);
            sl_free(paths);
            sl_free(fnames);
            sl_source_free(src);
        }
    }
    for (size_t i = 0; i < n_in; i++)
        sl_free(inputs[i]);
    sl_free(text);
    return 0;
}
