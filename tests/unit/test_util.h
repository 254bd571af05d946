/* Helpers shared by unit tests: temporary folders and files, the tiny
 * model's files and a llama engine or a caption job over it. Include after
 * cmocka.h (tu_open_llama fails the test with its fail_msg). */
#ifndef SL_TEST_UTIL_H
#define SL_TEST_UTIL_H

#include <dirent.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "ledger/idset.h"
#include "sluice/caption.h"
#include "sluice/engine.h"
#include "sluice/status.h"

static inline char *tu_tmpdir(void)
{
    static char path[256];
    snprintf(path, sizeof path, "/tmp/sluice-test-XXXXXX");
    return mkdtemp(path);
}

static inline void tu_write(const char *dir, const char *rel, const void *data, size_t len)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    for (char *s = path + strlen(dir) + 1; *s; s++)
        if (*s == '/') {
            *s = '\0';
            mkdir(path, 0777);
            *s = '/';
        }
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        perror(path);
        abort();
    }
    fwrite(data, 1, len, fp);
    fclose(fp);
}

/* Runs fn(arg) on `n` threads at once (at most 16) and waits for them all. */
static inline void tu_run_threads(int n, void *(*fn)(void *), void *arg)
{
    pthread_t threads[16];
    if (n > 16)
        abort();
    for (int t = 0; t < n; t++)
        if (pthread_create(&threads[t], NULL, fn, arg) != 0)
            abort();
    for (int t = 0; t < n; t++)
        pthread_join(threads[t], NULL);
}

static inline int tu_exists(const char *path) { return access(path, F_OK) == 0; }

/* Writes the Parquet files with list columns of
 * tests/unit/gen_parquet_lists.py (run with SLUICE_PYTHON, the script from
 * SLUICE_GEN_PARQUET_LISTS) into a new temporary folder, its path into dir,
 * and returns its expected.json (json_decref); NULL when that fails. */
static inline json_t *tu_parquet_lists(char *dir, size_t size)
{
    const char *py = getenv("SLUICE_PYTHON"), *gen = getenv("SLUICE_GEN_PARQUET_LISTS");
    const char *tmp = tu_tmpdir();
    if (!tmp)
        return NULL;
    snprintf(dir, size, "%s", tmp);
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "'%s' '%s' '%s'", py ? py : ".venv/bin/python",
             gen ? gen : "tests/unit/gen_parquet_lists.py", dir);
    if (system(cmd) != 0)
        return NULL;
    snprintf(cmd, sizeof cmd, "%s/expected.json", dir);
    return json_load_file(cmd, 0, NULL);
}

/* The entries of dir but . and .. (-1 when it cannot be read). */
static inline int tu_count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static inline int tu_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

/* A set of the n ids (ledger/idset.h), freed by the caller with
 * sl_idset_free(). */
static inline sl_idset *tu_idset_of(const char *const *ids, size_t n)
{
    sl_idset *set;
    assert_int_equal(sl_idset_open(&set), SL_OK);
    for (size_t i = 0; i < n; i++) {
        bool seen;
        int64_t first_input, first_at;
        assert_int_equal(sl_idset_add(set, ids[i], 0, (int64_t)i, &seen, &first_input, &first_at),
                         SL_OK);
    }
    return set;
}

static inline void tu_rmtree(const char *dir)
{
    nftw(dir, tu_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* `copies` copies of SLUICE_SAMPLES/astronaut.jpg in dir, as img00.jpg,
 * img01.jpg, ... (ids that sort as their seq). */
static inline void tu_copy_sample(const char *dir, int copies)
{
    const char *samples = getenv("SLUICE_SAMPLES");
    char src[1024];
    snprintf(src, sizeof src, "%s/astronaut.jpg", samples ? samples : "samples");
    FILE *fp = fopen(src, "rb");
    if (!fp) {
        perror(src);
        abort();
    }
    static unsigned char buf[1 << 20];
    size_t len = fread(buf, 1, sizeof buf, fp);
    fclose(fp);
    for (int i = 0; i < copies; i++) {
        char name[32];
        snprintf(name, sizeof name, "img%02d.jpg", i);
        tu_write(dir, name, buf, len);
    }
}

/* The tiny model's files: in SLUICE_TINY_MODEL (ctest sets it), else in
 * models/tiny (a test run from the repository root). */
typedef struct tu_tiny {
    char model[1024], mmproj[1024];
} tu_tiny;

static inline tu_tiny tu_model_files(const char *env, const char *fallback)
{
    const char *dir = getenv(env);
    tu_tiny t;
    snprintf(t.model, sizeof t.model, "%s/model.gguf", dir ? dir : fallback);
    snprintf(t.mmproj, sizeof t.mmproj, "%s/mmproj.gguf", dir ? dir : fallback);
    return t;
}

static inline tu_tiny tu_tiny_files(void)
{
    return tu_model_files("SLUICE_TINY_MODEL", "models/tiny");
}

/* The same at Qwen2.5-VL's architecture (M-RoPE positions, its own vision
 * tower): in SLUICE_TINY_QWEN_MODEL, else models/tiny-qwen. */
static inline tu_tiny tu_tiny_qwen_files(void)
{
    return tu_model_files("SLUICE_TINY_QWEN_MODEL", "models/tiny-qwen");
}

/* The llama engine's parameters for the tiny model: t's files (borrowed:
 * t outlives the open), n_parallel sequences on 2 threads, the rest the
 * defaults. */
static inline sl_llama_params tu_tiny_llama(const tu_tiny *t, int n_parallel)
{
    sl_llama_params p = sl_llama_default_params();
    p.model_path = t->model;
    p.mmproj_path = t->mmproj;
    p.n_parallel = n_parallel;
    p.n_threads = 2;
    /* Every image encoded: the tests count encodes (test_engine's
     * an_image_seen_again_is_not_encoded_again turns the cache on). */
    p.image_cache_bytes = 0;
    return p;
}

/* The engine of p (free with sl_engine_free), or the test fails saying why. */
static inline sl_engine *tu_open_llama(const sl_llama_params *p)
{
    sl_engine *e = NULL;
    if (sl_engine_open_llama(p, &e) != SL_OK)
        fail_msg("cannot open the tiny model: %s", sl_last_error());
    return e;
}

/* A caption job's folders and model files; the parameters point into it. */
typedef struct tu_job {
    char base[256], in[300], out[300];
    tu_tiny tiny;
} tu_job;

/* A job over the tiny model (tu_tiny_files) from BASE/in to BASE/out in a
 * new temporary BASE, one token on 64 px images, with
 * tu_copy_sample(in, copies) as its inputs. */
static inline sl_caption_params tu_tiny_job(tu_job *t, int copies)
{
    t->tiny = tu_tiny_files();
    snprintf(t->base, sizeof t->base, "%s", tu_tmpdir());
    snprintf(t->in, sizeof t->in, "%s/in", t->base);
    snprintf(t->out, sizeof t->out, "%s/out", t->base);
    mkdir(t->in, 0777);
    tu_copy_sample(t->in, copies);
    sl_caption_params p = sl_caption_default_params();
    p.input_dir = t->in;
    p.output_dir = t->out;
    p.llama.model_path = t->tiny.model;
    p.llama.mmproj_path = t->tiny.mmproj;
    p.sampling.max_tokens = 1;
    p.image.max_edge = 64;
    return p;
}

#endif
