/* llm/hub.c — hf:// references to cached GGUF files (see sluice/hub.h).
 * libcurl easy handles, one file at a time: model downloads are few and
 * large, so simplicity beats concurrency here. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <jansson.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/log.h"
#include "io/curl_conn.h"
#include "io/shard.h"
#include "llm/hub_impl.h"
#include "sluice/hub.h"

sl_hub_params sl_hub_default_params(void)
{
    return (sl_hub_params){.max_attempts = 5, .timeout_s = 60};
}

bool sl_hub_is_ref(const char *spec) { return spec && strncmp(spec, "hf://", 5) == 0; }

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void init_curl(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

/* ORG/REPO[/FILE]; FILE may hold folders. */
typedef struct hub_ref {
    char org[128], repo[128], file[1024];
} hub_ref;

bool hub_segment_ok(const char *s, size_t n)
{
    if (n == 0 || (n == 2 && s[0] == '.' && s[1] == '.') || (n == 1 && s[0] == '.'))
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] == '\\' || (unsigned char)s[i] < 0x20 || s[i] == '?' || s[i] == '#' ||
            s[i] == '%' || s[i] == ' ')
            return false;
    return true;
}

static sl_status parse_ref(const char *spec, hub_ref *ref)
{
    memset(ref, 0, sizeof *ref);
    const char *s = spec + 5;
    const char *slash1 = strchr(s, '/');
    const char *slash2 = slash1 ? strchr(slash1 + 1, '/') : NULL;
    size_t org_n = slash1 ? (size_t)(slash1 - s) : 0;
    size_t repo_n = slash1 ? (slash2 ? (size_t)(slash2 - slash1 - 1) : strlen(slash1 + 1)) : 0;
    if (!sl_hub_is_ref(spec) || !slash1 || !hub_segment_ok(s, org_n) ||
        !hub_segment_ok(slash1 + 1, repo_n) || org_n >= sizeof ref->org ||
        repo_n >= sizeof ref->repo)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "'%s' is not a hub reference: expected hf://ORG/REPO or "
                       "hf://ORG/REPO/FILE.gguf",
                       spec);
    memcpy(ref->org, s, org_n);
    memcpy(ref->repo, slash1 + 1, repo_n);
    if (slash2 && slash2[1]) {
        const char *f = slash2 + 1;
        if (strlen(f) >= sizeof ref->file)
            return sl_fail(SL_ERR_INVALID_ARG, "'%s': file name too long", spec);
        for (const char *seg = f; *seg;) {
            const char *end = strchr(seg, '/');
            size_t n = end ? (size_t)(end - seg) : strlen(seg);
            if (!hub_segment_ok(seg, n))
                return sl_fail(SL_ERR_INVALID_ARG, "'%s': bad file name in the reference", spec);
            seg += n + (end ? 1 : 0);
        }
        strcpy(ref->file, f);
    }
    return SL_OK;
}

/* --- where things are ---------------------------------------------------------- */

typedef struct hub_ctx {
    const sl_hub_params *p;
    const char *spec;     /* for messages */
    char endpoint[1024];
    char cache[2048];     /* CACHE/models--ORG--REPO */
    const char *revision;
    char auth[2048];      /* "Authorization: Bearer ..." or "" */
} hub_ctx;

static sl_status init_ctx(hub_ctx *c, const sl_hub_params *p, const char *spec, const hub_ref *ref)
{
    memset(c, 0, sizeof *c);
    c->p = p;
    c->spec = spec;
    const char *ep = p->endpoint ? p->endpoint : getenv("HF_ENDPOINT");
    snprintf(c->endpoint, sizeof c->endpoint, "%s", ep && *ep ? ep : "https://huggingface.co");
    size_t n = strlen(c->endpoint);
    while (n && c->endpoint[n - 1] == '/')
        c->endpoint[--n] = '\0';
    char base[2048];
    const char *env;
    if (p->cache_dir)
        snprintf(base, sizeof base, "%s", p->cache_dir);
    else if ((env = getenv("HF_HUB_CACHE")) && *env)
        snprintf(base, sizeof base, "%s", env);
    else if ((env = getenv("HF_HOME")) && *env)
        snprintf(base, sizeof base, "%s/hub", env);
    else
        snprintf(base, sizeof base, "%s/.cache/huggingface/hub",
                 getenv("HOME") ? getenv("HOME") : ".");
    int n_cache = snprintf(c->cache, sizeof c->cache, "%s/models--%s--%s", base, ref->org, ref->repo);
    if (n_cache < 0 || (size_t)n_cache >= sizeof c->cache)
        return sl_fail(SL_ERR_INVALID_ARG, "%s: the cache path under %s is too long", spec, base);
    c->revision = p->revision && *p->revision ? p->revision : "main";
    const char *token = getenv("HF_TOKEN");
    if (token && *token)
        snprintf(c->auth, sizeof c->auth, "Authorization: Bearer %.2000s", token);
    return SL_OK;
}

static bool offline(const hub_ctx *c)
{
    const char *env = getenv("HF_HUB_OFFLINE");
    return c->p->offline || (env && (strcmp(env, "1") == 0 || strcasecmp(env, "true") == 0));
}

static bool read_ref(const hub_ctx *c, char *commit, size_t cap)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/refs/%s", c->cache, c->revision);
    FILE *fp = fopen(path, "re");
    if (!fp)
        return false;
    bool ok = fgets(commit, (int)cap, fp) != NULL;
    fclose(fp);
    commit[strcspn(commit, "\r\n")] = '\0';
    return ok && hub_segment_ok(commit, strlen(commit)) && !strchr(commit, '/');
}

static sl_status write_ref(const hub_ctx *c, const char *commit)
{
    char dir[4096], path[4096 + 64];
    snprintf(dir, sizeof dir, "%s/refs", c->cache);
    snprintf(path, sizeof path, "%s/%s", dir, c->revision);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    sl_status st = sl_make_dirs(path);
    *slash = '/';
    if (st != SL_OK)
        return st;
    FILE *fp = fopen(path, "we");
    if (!fp || fputs(commit, fp) < 0 || fclose(fp) != 0)
        return sl_fail(SL_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
    return SL_OK;
}

/* --- HTTP ------------------------------------------------------------------------ */

typedef struct response {
    long code;
    curl_off_t linked_size;  /* X-Linked-Size: the LFS file behind a redirect */
    char commit[128];        /* X-Repo-Commit */
    sl_buf body;             /* GET into memory, up to max bytes */
    size_t max;
    FILE *fp;                /* GET into a file */
    curl_off_t resume_from;
    bool restarted;          /* the server ignored Range: start over */
    CURL *curl;
} response;

static size_t on_header(char *line, size_t size, size_t n, void *user)
{
    response *r = user;
    size_t len = size * n;
    char buf[512];
    size_t k = len < sizeof buf - 1 ? len : sizeof buf - 1;
    memcpy(buf, line, k);
    buf[k] = '\0';
    buf[strcspn(buf, "\r\n")] = '\0';
    if (strncasecmp(buf, "x-linked-size:", 14) == 0)
        r->linked_size = strtoll(buf + 14, NULL, 10);
    else if (strncasecmp(buf, "x-repo-commit:", 14) == 0) {
        const char *v = buf + 14;
        while (*v == ' ')
            v++;
        /* A path segment of the cache: a commit id, never "..". */
        size_t vn = strcspn(v, " \t");
        if (vn > 0 && vn < sizeof r->commit && hub_segment_ok(v, vn) && !memchr(v, '/', vn))
            snprintf(r->commit, sizeof r->commit, "%.*s", (int)vn, v);
    }
    return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *user)
{
    response *r = user;
    size_t len = size * n;
    if (r->fp) {
        if (r->resume_from > 0 && !r->restarted) {
            long code = 0;
            curl_easy_getinfo(r->curl, CURLINFO_RESPONSE_CODE, &code);
            if (code == 200) { /* whole file, not the asked-for range */
                if (fflush(r->fp) != 0 || ftruncate(fileno(r->fp), 0) != 0 ||
                    fseeko(r->fp, 0, SEEK_SET) != 0)
                    return 0;
            }
            r->restarted = true;
        }
        return fwrite(data, 1, len, r->fp);
    }
    return len <= r->max - r->body.len && sl_buf_append(&r->body, data, len) ? len : 0;
}

/* One request. `head`: no body; `fp`: the body goes there (resuming at
 * resume_from); else into r->body. Returns the curl result. */
static CURLcode http(const hub_ctx *c, const char *url, bool head, response *r, char *err,
                     size_t err_cap)
{
    pthread_once(&curl_once, init_curl);
    CURL *curl = curl_easy_init();
    if (!curl) {
        snprintf(err, err_cap, "cannot start libcurl");
        return CURLE_FAILED_INIT;
    }
    r->curl = curl;
    sl_curl_trust(curl);
    struct curl_slist *headers = NULL;
    if (c->auth[0])
        headers = curl_slist_append(headers, c->auth);
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, 30L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME, c->p->timeout_s > 0 ? c->p->timeout_s : 60L);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "sluice/0.1");
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    if (head)
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    if (r->fp && r->resume_from > 0)
        curl_easy_setopt(curl, CURLOPT_RESUME_FROM_LARGE, r->resume_from);
    CURLcode rc = curl_easy_perform(curl);
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->code);
    if (head && rc == CURLE_OK && r->linked_size <= 0) {
        curl_off_t len = -1;
        curl_easy_getinfo(curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &len);
        r->linked_size = len;
    }
    if (rc != CURLE_OK)
        snprintf(err, err_cap, "%s", sl_curl_why(rc, errbuf));
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    r->curl = NULL;
    return rc;
}

static sl_status http_failure(const hub_ctx *c, const char *url, const response *r,
                              const char *err)
{
    if (r->code == 401 || r->code == 403)
        return sl_fail(SL_ERR_NOT_FOUND,
                       "%s: %s answered HTTP %ld: the repository is gated or private; set "
                       "HF_TOKEN to a token that can read it",
                       c->spec, url, r->code);
    if (r->code == 404)
        return sl_fail(SL_ERR_NOT_FOUND,
                       "%s: %s answered HTTP 404: no such repository, revision or file",
                       c->spec, url);
    if (r->code == 0)
        return sl_fail(SL_ERR_IO,
                       "%s: %s: %s (no route to the hub? HF_ENDPOINT names a mirror; "
                       "HF_HUB_OFFLINE=1 uses the cache only)",
                       c->spec, url, err);
    return sl_fail(SL_ERR_IO, "%s: %s: %s", c->spec, url, err);
}

/* --- listing --------------------------------------------------------------------- */

static bool contains_nocase(const char *haystack, const char *needle)
{
    size_t n = strlen(needle);
    for (; *haystack; haystack++)
        if (strncasecmp(haystack, needle, n) == 0)
            return true;
    return false;
}

static bool is_gguf(const char *name)
{
    size_t n = strlen(name);
    return n > 5 && strcasecmp(name + n - 5, ".gguf") == 0;
}

static bool is_projector(const char *name)
{
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    return contains_nocase(base, "mmproj");
}

void hub_files_clear(hub_files *l)
{
    for (size_t i = 0; i < l->n; i++)
        sl_free(l->names[i]);
    sl_free(l->names);
    *l = (hub_files){0};
}

bool hub_files_add(hub_files *l, const char *name, char *why, size_t cap)
{
    size_t len = strlen(name);
    if (!is_gguf(name) || len >= HUB_MAX_NAME)
        return true;
    for (const char *seg = name; *seg;) {
        const char *end = strchr(seg, '/');
        size_t n = end ? (size_t)(end - seg) : strlen(seg);
        if (!hub_segment_ok(seg, n))
            return true; /* "/abs.gguf", "../x.gguf", "a//b.gguf": not a file of the repository */
        seg += n + (end ? 1 : 0);
    }
    if (l->n >= HUB_MAX_FILES) {
        snprintf(why, cap, "more than %d .gguf files", HUB_MAX_FILES);
        return false;
    }
    if (l->n == l->cap) {
        size_t grown = l->cap ? 2 * l->cap : 16;
        char **names = sl_realloc(l->names, grown * sizeof *names);
        if (!names) {
            snprintf(why, cap, "out of memory");
            return false;
        }
        l->names = names;
        l->cap = grown;
    }
    if (!(l->names[l->n] = sl_strdup(name))) {
        snprintf(why, cap, "out of memory");
        return false;
    }
    l->n++;
    return true;
}

bool hub_listing_parse(const char *body, size_t len, hub_files *out, char *why, size_t cap)
{
    json_error_t jerr;
    json_t *root = json_loadb(body ? body : "", body ? len : 0, 0, &jerr);
    json_t *siblings = json_object_get(root, "siblings");
    if (!json_is_array(siblings)) {
        snprintf(why, cap, "not a repository listing (%s)",
                 root ? "no 'siblings' array" : jerr.text);
        json_decref(root);
        return false;
    }
    size_t i;
    json_t *s;
    bool ok = true;
    json_array_foreach(siblings, i, s) {
        const char *name = json_string_value(json_object_get(s, "rfilename"));
        if (name && !(ok = hub_files_add(out, name, why, cap)))
            break;
    }
    json_decref(root);
    if (!ok)
        hub_files_clear(out);
    return ok;
}

static sl_status list_remote(const hub_ctx *c, const hub_ref *ref, hub_files *out)
{
    char url[4096], err[CURL_ERROR_SIZE + 64];
    snprintf(url, sizeof url, "%s/api/models/%s/%s/revision/%s", c->endpoint, ref->org, ref->repo,
             c->revision);
    response r = {.max = 16u << 20};
    CURLcode rc = http(c, url, false, &r, err, sizeof err);
    if (rc != CURLE_OK) {
        sl_status st = http_failure(c, url, &r, err);
        sl_buf_free(&r.body);
        return st;
    }
    char why[256];
    bool ok = hub_listing_parse((const char *)r.body.data, r.body.len, out, why, sizeof why);
    sl_buf_free(&r.body);
    return ok ? SL_OK : sl_fail(SL_ERR_IO, "%s: %s: %s", c->spec, url, why);
}

static sl_status list_cached(const hub_ctx *c, hub_files *out)
{
    char commit[128], dir[4096];
    if (!read_ref(c, commit, sizeof commit))
        return sl_fail(SL_ERR_NOT_FOUND,
                       "%s: not in the cache %s and downloads are off (HF_HUB_OFFLINE)", c->spec,
                       c->cache);
    snprintf(dir, sizeof dir, "%s/snapshots/%s", c->cache, commit);
    DIR *d = opendir(dir);
    if (!d)
        return sl_fail(SL_ERR_NOT_FOUND, "%s: cannot list the cached %s: %s", c->spec, dir,
                       strerror(errno));
    struct dirent *e;
    char why[256];
    bool ok = true;
    while (ok && (e = readdir(d)))
        ok = hub_files_add(out, e->d_name, why, sizeof why);
    closedir(d);
    return ok ? SL_OK : sl_fail(SL_ERR_IO, "%s: the cached %s: %s", c->spec, dir, why);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

sl_status hub_choose_files(const char *spec, const char *org, const char *repo, hub_files *files,
                           char *model, size_t model_cap, char *mmproj, size_t mmproj_cap)
{
    if (files->n)
        qsort(files->names, files->n, sizeof *files->names, by_name);
    size_t n_models = 0, n_projectors = 0;
    for (size_t i = 0; i < files->n; i++)
        n_projectors += is_projector(files->names[i]);
    n_models = files->n - n_projectors;
    if (!model[0]) {
        const char *only = NULL, *q8 = NULL;
        for (size_t i = 0; i < files->n; i++) {
            const char *name = files->names[i];
            if (is_projector(name))
                continue;
            only = only ? only : name;
            if (!q8 && contains_nocase(name, "q8_0"))
                q8 = name;
        }
        const char *pick = n_models == 1 ? only : q8;
        if (!pick && n_models == 0)
            return sl_fail(SL_ERR_NOT_FOUND, "%s: the repository has no .gguf model file", spec);
        if (!pick) {
            char list[1024] = "";
            size_t listed = 0;
            for (size_t i = 0; i < files->n && strlen(list) < sizeof list - 200; i++)
                if (!is_projector(files->names[i]))
                    snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s",
                             listed++ ? ", " : "", files->names[i]);
            return sl_fail(SL_ERR_INVALID_ARG,
                           "%s: the repository has %zu model files (%s%s): name one, as "
                           "hf://%s/%s/FILE.gguf",
                           spec, n_models, list, listed < n_models ? ", ..." : "", org, repo);
        }
        snprintf(model, model_cap, "%s", pick);
    }
    if (mmproj) {
        /* Several projectors: the one sharing the model's precision tag. */
        const char *pick = NULL;
        static const char *const tags[] = {"bf16", "f16", "f32", "q8_0"};
        for (size_t t = 0; n_projectors > 1 && !pick && t < sizeof tags / sizeof *tags; t++)
            for (size_t i = 0; contains_nocase(model, tags[t]) && !pick && i < files->n; i++)
                if (is_projector(files->names[i]) && contains_nocase(files->names[i], tags[t]))
                    pick = files->names[i];
        for (size_t i = 0; !pick && i < files->n; i++)
            if (is_projector(files->names[i]))
                pick = files->names[i];
        snprintf(mmproj, mmproj_cap, "%s", pick ? pick : "");
    }
    return SL_OK;
}

/* --- one file ---------------------------------------------------------------------- */

static int64_t file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 ? (int64_t)sb.st_size : -1;
}

static sl_status make_parent(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    return sl_make_dirs(dir);
}

static sl_status download(const hub_ctx *c, const char *url, const char *path, int64_t expected)
{
    char part[4096 + 16];
    snprintf(part, sizeof part, "%s.incomplete", path);
    sl_status st = make_parent(path);
    if (st != SL_OK)
        return st;
    int attempts = c->p->max_attempts > 0 ? c->p->max_attempts : 1;
    char err[CURL_ERROR_SIZE + 64] = "";
    response r = {0};
    for (int attempt = 1; attempt <= attempts; attempt++) {
        int64_t have = file_size(part);
        if (have < 0)
            have = 0;
        if (expected >= 0 && have > expected) {
            unlink(part); /* not a prefix of this file: start over */
            have = 0;
        }
        if (expected < 0 || have < expected) {
            if (attempt == 1)
                sl_log(SL_LOG_INFO, "%s: downloading %s (%.1f MB%s)", c->spec, url,
                       expected >= 0 ? (double)expected / 1e6 : 0.0,
                       have > 0 ? ", resuming a partial download" : "");
            else
                sl_log(SL_LOG_WARN, "%s: %s; resuming at byte %lld (attempt %d of %d)", c->spec,
                       err, (long long)have, attempt, attempts);
            FILE *fp = fopen(part, "abe");
            if (!fp)
                return sl_fail(SL_ERR_IO, "%s: cannot write %s: %s", c->spec, part,
                               strerror(errno));
            r = (response){.fp = fp, .resume_from = have};
            CURLcode rc = http(c, url, false, &r, err, sizeof err);
            if (fclose(fp) != 0 && rc == CURLE_OK)
                return sl_fail(SL_ERR_IO, "%s: cannot write %s: %s", c->spec, part,
                               strerror(errno));
            if (rc != CURLE_OK) {
                if (r.code == 404 || r.code == 401 || r.code == 403)
                    return http_failure(c, url, &r, err);
                if (r.code == 416 && expected >= 0 && file_size(part) == expected)
                    goto complete;
                if (attempt < attempts) {
                    struct timespec ts = {attempt < 5 ? attempt : 5, 0};
                    nanosleep(&ts, NULL);
                }
                continue;
            }
        }
        int64_t got = file_size(part);
        if (expected >= 0 && got != expected) {
            unlink(part);
            return sl_fail(SL_ERR_IO,
                           "%s: %s gave %lld bytes but the hub lists %lld: the download is "
                           "corrupt; removed it, run again to retry",
                           c->spec, url, (long long)got, (long long)expected);
        }
    complete:
        if (rename(part, path) != 0)
            return sl_fail(SL_ERR_IO, "%s: cannot rename %s: %s", c->spec, part, strerror(errno));
        return SL_OK;
    }
    return sl_fail(SL_ERR_IO, "%s: %s: %s after %d attempts; the partial file %s is kept and the "
                              "next run resumes it",
                   c->spec, url, err, attempts, part);
}

/* Holds the cache's lock on `file` of `commit` (an fd to close, or -1 when
 * the file system has no locks: then as before, unguarded). Several
 * processes fetching one model into one cache (the ranks of an MPI job, two
 * jobs on a node) appended to the same .incomplete file, and each failed
 * with "gave 7036640 bytes but the hub lists 3579616". Where huggingface_hub
 * keeps its locks (CACHE/.locks/models--ORG--REPO/): fcntl locks, which NFS
 * carries and which end with their process, so a killed download leaves
 * its partial file to the next one, unlocked. */
static int lock_file(const hub_ctx *c, const char *commit, const char *file)
{
    char lock[4096];
    const char *repo = strrchr(c->cache, '/');
    int n = snprintf(lock, sizeof lock, "%.*s/.locks%s/%s/%s.lock",
                     (int)(repo ? repo - c->cache : 0), c->cache, repo ? repo : "", commit, file);
    errno = ENAMETOOLONG;
    int fd = n < 0 || (size_t)n >= sizeof lock || make_parent(lock) != SL_OK
                 ? -1 : open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
    int rc = fd < 0 ? -1 : fcntl(fd, F_SETLK, &fl);
    if (rc != 0 && fd >= 0 && (errno == EACCES || errno == EAGAIN)) {
        sl_log(SL_LOG_WARN, "%s: another process (another rank of this job, or another job) is "
               "downloading %s into the same cache: waiting for it (%s)", c->spec, file, lock);
        while ((rc = fcntl(fd, F_SETLKW, &fl)) != 0 && errno == EINTR) {
        }
    }
    if (rc == 0)
        return fd;
    int err = errno;
    if (fd >= 0)
        close(fd);
    sl_log(SL_LOG_WARN, "%s: cannot lock %s (%s): downloading %s without it (two processes "
           "fetching it at once spoil it)", c->spec, lock, strerror(err), file);
    return -1;
}

/* FILE of the reference's repository, into the cache; *path set. */
static sl_status fetch_file(const hub_ctx *c, const hub_ref *ref, const char *file, char *path,
                            size_t path_cap)
{
    char commit[128] = "";
    if (offline(c)) {
        if (read_ref(c, commit, sizeof commit)) {
            snprintf(path, path_cap, "%s/snapshots/%s/%s", c->cache, commit, file);
            if (file_size(path) >= 0)
                return SL_OK;
        }
        return sl_fail(SL_ERR_NOT_FOUND,
                       "%s: %s is not in the cache %s and downloads are off (HF_HUB_OFFLINE)",
                       c->spec, file, c->cache);
    }
    char url[4096], err[CURL_ERROR_SIZE + 64];
    snprintf(url, sizeof url, "%s/%s/%s/resolve/%s/%s", c->endpoint, ref->org, ref->repo,
             c->revision, file);
    response head = {0};
    if (http(c, url, true, &head, err, sizeof err) != CURLE_OK) {
        /* The hub is unreachable but the file was fetched before: use it,
         * as huggingface_hub does. */
        if (head.code == 0 && read_ref(c, commit, sizeof commit)) {
            snprintf(path, path_cap, "%s/snapshots/%s/%s", c->cache, commit, file);
            if (file_size(path) >= 0) {
                sl_log(SL_LOG_WARN, "%s: %s (%s); using the cached %s", c->spec, url, err, path);
                return SL_OK;
            }
        }
        return http_failure(c, url, &head, err);
    }
    snprintf(commit, sizeof commit, "%s", head.commit[0] ? head.commit : c->revision);
    snprintf(path, path_cap, "%s/snapshots/%s/%s", c->cache, commit, file);
    int64_t expected = head.linked_size >= 0 ? (int64_t)head.linked_size : -1;
    int64_t have = file_size(path);
    sl_status st = SL_OK;
    if (have < 0 || (expected >= 0 && have != expected)) {
        int lock = lock_file(c, commit, file);
        have = file_size(path); /* (the process that held the lock may have fetched it) */
        if (have >= 0 && expected >= 0 && have != expected)
            sl_log(SL_LOG_WARN, "%s: cached %s has %lld bytes, the hub lists %lld: fetching again",
                   c->spec, path, (long long)have, (long long)expected);
        if (have < 0 || (expected >= 0 && have != expected))
            st = download(c, url, path, expected);
        if (lock >= 0)
            close(lock);
    }
    return st == SL_OK ? write_ref(c, commit) : st;
}

sl_status sl_hub_fetch(const char *model_ref, const char *mmproj_ref,
                       const sl_hub_params *params, sl_hub_files *out)
{
    memset(out, 0, sizeof *out);
    sl_hub_params defaults = sl_hub_default_params();
    if (!params)
        params = &defaults;
    hub_ref ref;
    sl_status st = parse_ref(model_ref, &ref);
    if (st != SL_OK)
        return st;
    hub_ctx c;
    if ((st = init_ctx(&c, params, model_ref, &ref)) != SL_OK)
        return st;

    char model_file[1024], mmproj_file[1024] = "";
    snprintf(model_file, sizeof model_file, "%s", ref.file);
    bool want_projector = !mmproj_ref;
    if (mmproj_ref && !*mmproj_ref)
        mmproj_ref = NULL;
    if (!ref.file[0] || want_projector) {
        hub_files files = {0};
        st = offline(&c) ? list_cached(&c, &files) : list_remote(&c, &ref, &files);
        if (st == SL_OK)
            st = hub_choose_files(model_ref, ref.org, ref.repo, &files, model_file,
                                  sizeof model_file, want_projector ? mmproj_file : NULL,
                                  sizeof mmproj_file);
        hub_files_clear(&files);
        if (st != SL_OK)
            return st;
    }
    if ((st = fetch_file(&c, &ref, model_file, out->model, sizeof out->model)) != SL_OK)
        return st;

    if (mmproj_ref) {
        hub_ref pref;
        if ((st = parse_ref(mmproj_ref, &pref)) != SL_OK)
            return st;
        if (!pref.file[0])
            return sl_fail(SL_ERR_INVALID_ARG, "--mmproj %s: name the projector file "
                                               "(hf://ORG/REPO/FILE.gguf)", mmproj_ref);
        hub_ctx pc;
        if ((st = init_ctx(&pc, params, mmproj_ref, &pref)) != SL_OK)
            return st;
        return fetch_file(&pc, &pref, pref.file, out->mmproj, sizeof out->mmproj);
    }
    if (mmproj_file[0])
        return fetch_file(&c, &ref, mmproj_file, out->mmproj, sizeof out->mmproj);
    return SL_OK;
}
