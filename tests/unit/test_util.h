/* Helpers shared by unit tests: temporary folders and files, and a caption
 * job over the tiny model. */
#ifndef SL_TEST_UTIL_H
#define SL_TEST_UTIL_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sluice/caption.h"

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

static inline int tu_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
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

/* A caption job's folders and model files; the parameters point into it. */
typedef struct tu_job {
    char base[256], in[300], out[300], model[1024], mmproj[1024];
} tu_job;

/* A job over the tiny model (SLUICE_TINY_MODEL, default models/tiny) from
 * BASE/in to BASE/out in a new temporary BASE, one token on 64 px images,
 * with tu_copy_sample(in, copies) as its inputs. */
static inline sl_caption_params tu_tiny_job(tu_job *t, int copies)
{
    const char *dir = getenv("SLUICE_TINY_MODEL");
    snprintf(t->model, sizeof t->model, "%s/model.gguf", dir ? dir : "models/tiny");
    snprintf(t->mmproj, sizeof t->mmproj, "%s/mmproj.gguf", dir ? dir : "models/tiny");
    snprintf(t->base, sizeof t->base, "%s", tu_tmpdir());
    snprintf(t->in, sizeof t->in, "%s/in", t->base);
    snprintf(t->out, sizeof t->out, "%s/out", t->base);
    mkdir(t->in, 0777);
    tu_copy_sample(t->in, copies);
    sl_caption_params p = sl_caption_default_params();
    p.input_dir = t->in;
    p.output_dir = t->out;
    p.llama.model_path = t->model;
    p.llama.mmproj_path = t->mmproj;
    p.sampling.max_tokens = 1;
    p.image.max_edge = 64;
    return p;
}

/* The engine parameters of the tiny model (SLUICE_TINY_MODEL, default
 * models/tiny; its paths in static buffers): n_parallel sequences of
 * n_ctx_per_seq positions (0: sized by the engine), two threads. */
static inline sl_llama_params tu_tiny_params(int n_parallel, int n_ctx_per_seq)
{
    static char model[1024], mmproj[1024];
    const char *dir = getenv("SLUICE_TINY_MODEL");
    snprintf(model, sizeof model, "%s/model.gguf", dir ? dir : "models/tiny");
    snprintf(mmproj, sizeof mmproj, "%s/mmproj.gguf", dir ? dir : "models/tiny");
    sl_llama_params p = sl_llama_default_params();
    p.model_path = model;
    p.mmproj_path = mmproj;
    p.n_parallel = n_parallel;
    p.n_ctx_per_seq = n_ctx_per_seq;
    p.n_threads = 2;
    return p;
}

#endif
