/* io/hf.c — see hf.h. The listing requests go over this thread's curl
 * handle (io/curl_conn.h) and follow io/fetch.h's policy: http(s) only,
 * 5 redirects, transport errors, 5xx and 429 retried with a growing pause. */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/error.h"
#include "core/log.h"
#include "io/curl_conn.h"
#include "io/fetch.h"
#include "io/hf.h"
#include "io/source_parse.h"
#include "llm/hub_impl.h"

static const char prefix[] = "hf://datasets/";

bool hf_is_dataset_ref(const char *s) { return s && strncmp(s, prefix, sizeof prefix - 1) == 0; }

/* --- the reference ------------------------------------------------------------- */

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Percent-decodes s[0..n) into out; false when malformed or too long. */
static bool decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            if (i + 2 >= n || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0)
                return false;
            c = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
            if (c == '\0')
                return false; /* the text would end there: "main%00x" read as "main" */
        }
        if (k + 1 >= cap)
            return false;
        out[k++] = c;
    }
    out[k] = '\0';
    return true;
}

/* Every '/'-separated segment of p is a plain name (hub_segment_ok): a
 * repository path, or a revision (refs/convert/parquet) that goes into a
 * URL (quoted) and can climb out of nothing. */
static bool segments_ok(const char *p)
{
    for (const char *seg = p;;) {
        size_t n = strcspn(seg, "/");
        if (!hub_segment_ok(seg, n))
            return false;
        if (!seg[n])
            return true;
        seg += n + 1;
    }
}

/* A pattern's segments (and a listed path's: path_ok): not empty, not "."
 * or "..", no control character, DEL or backslash; glob characters are its
 * business. */
static bool pattern_ok(const char *p)
{
    for (const char *seg = p;;) {
        size_t n = strcspn(seg, "/");
        if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.'))
            return false;
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)seg[i] < 0x20 || seg[i] == 0x7f || seg[i] == '\\')
                return false;
        if (!seg[n])
            return true;
        seg += n + 1;
    }
}

sl_status hf_spec_parse(const char *ref, hf_spec *out)
{
    memset(out, 0, sizeof *out);
    const char *usage = "expected hf://datasets/ORG/NAME[@REVISION][/PATTERN]";
    if (!hf_is_dataset_ref(ref))
        return sl_fail(SL_ERR_INVALID_ARG, "input '%s' is not a dataset reference: %s", ref,
                       usage);
    const char *org = ref + sizeof prefix - 1;
    const char *slash = strchr(org, '/');
    if (!slash)
        return sl_fail(SL_ERR_INVALID_ARG, "input '%s': no dataset name: %s", ref, usage);
    const char *name = slash + 1;
    size_t org_n = (size_t)(slash - org);
    size_t name_all = strcspn(name, "/");
    const char *at = memchr(name, '@', name_all);
    size_t name_n = at ? (size_t)(at - name) : name_all;
    if (!hub_segment_ok(org, org_n) || memchr(org, '@', org_n) || org_n >= sizeof out->org ||
        !hub_segment_ok(name, name_n) || name_n >= sizeof out->name)
        return sl_fail(SL_ERR_INVALID_ARG, "input '%s': ORG and NAME must be plain names: %s",
                       ref, usage);
    memcpy(out->org, org, org_n);
    memcpy(out->name, name, name_n);
    if (at) {
        /* HfFileSystem's form: a revision holding '/' is written %2F. */
        const char *rev = at + 1;
        size_t rev_n = (size_t)(name + name_all - rev);
        if (!decode(rev, rev_n, out->revision, sizeof out->revision) ||
            !segments_ok(out->revision))
            return sl_fail(SL_ERR_INVALID_ARG, "input '%s': the revision after '@' must be a "
                                               "branch, tag or commit (a '/' in it written "
                                               "%%2F)", ref);
    } else {
        strcpy(out->revision, "main");
    }
    const char *rest = name + name_all;
    if (*rest == '/')
        rest++;
    size_t rest_n = strlen(rest);
    while (rest_n && rest[rest_n - 1] == '/')
        rest_n--; /* "data/" is the folder data */
    if (rest_n >= sizeof out->pattern)
        return sl_fail(SL_ERR_INVALID_ARG, "input '%s': the pattern is too long", ref);
    memcpy(out->pattern, rest, rest_n);
    if (rest_n && !pattern_ok(out->pattern))
        return sl_fail(SL_ERR_INVALID_ARG, "input '%s': the pattern '%s' is not a relative path "
                                           "in the repository (no '..', '.', empty or control "
                                           "characters)", ref, out->pattern);
    return SL_OK;
}

/* --- a tree page ------------------------------------------------------------------ */

void hf_listing_clear(hf_listing *l)
{
    for (size_t i = 0; i < l->n; i++)
        sl_free(l->files[i].path);
    sl_free(l->files);
    *l = (hf_listing){0};
}

/* A repository path from the listing: segments as a pattern's (not empty,
 * "." or "..", no backslash or control character). Space, '%', '?' and '#'
 * are a file's own business (train 00.parquet, 50%.tar): the URL quotes
 * them. */
static bool path_ok(const char *p, size_t len)
{
    /* strlen: a NUL inside the JSON string */
    return len > 0 && len < HF_MAX_PATH && strlen(p) == len && pattern_ok(p);
}

/* Sizes are the hub's word: a total past 2^64 stays at the most, not
 * wrapped round to a small figure in the log. */
static uint64_t add_bytes(uint64_t total, uint64_t size)
{
    return size > UINT64_MAX - total ? UINT64_MAX : total + size;
}

bool hf_tree_parse(const char *body, size_t len, hf_listing *out, char *why, size_t cap)
{
    json_error_t jerr;
    /* JSON_ALLOW_NUL: an entry whose name holds a NUL is dropped alone
     * (path_ok), not the page. */
    json_t *root = json_loadb(body ? body : "", body ? len : 0, JSON_ALLOW_NUL, &jerr);
    if (!json_is_array(root)) {
        snprintf(why, cap, "not a tree listing (%s)", root ? "not a JSON array" : jerr.text);
        json_decref(root);
        return false;
    }
    size_t i, files = 0;
    json_t *e;
    json_array_foreach(root, i, e) {
        const char *type = json_string_value(json_object_get(e, "type"));
        files += type && strcmp(type, "file") == 0;
    }
    if (files > HF_MAX_FILES - out->n) {
        snprintf(why, cap, "the listing holds more than %d files: name fewer with a pattern",
                 HF_MAX_FILES);
        json_decref(root);
        return false;
    }
    if (out->n + files > out->cap) {
        size_t ncap = out->cap ? out->cap : 64;
        while (ncap < out->n + files)
            ncap *= 2;
        hf_file *grown = sl_realloc(out->files, ncap * sizeof *grown);
        if (!grown) {
            snprintf(why, cap, "out of memory");
            json_decref(root);
            return false;
        }
        out->files = grown;
        out->cap = ncap;
    }
    bool ok = true;
    json_array_foreach(root, i, e) {
        const char *type = json_string_value(json_object_get(e, "type"));
        json_t *path = json_object_get(e, "path");
        if (!type || strcmp(type, "file") != 0 || !json_is_string(path) ||
            !path_ok(json_string_value(path), json_string_length(path)))
            continue; /* a folder, or a name that could escape the repository */
        json_int_t size = json_integer_value(json_object_get(e, "size"));
        char *copy = sl_strdup(json_string_value(path));
        if (!copy) {
            snprintf(why, cap, "out of memory");
            ok = false;
            break;
        }
        out->files[out->n++] = (hf_file){copy, size > 0 ? (uint64_t)size : 0};
        out->bytes = add_bytes(out->bytes, size > 0 ? (uint64_t)size : 0);
    }
    json_decref(root);
    return ok;
}

bool hf_link_next(const char *value, char *out, size_t cap)
{
    const char *s = value;
    while (s && *s) {
        const char *lt = strchr(s, '<');
        const char *gt = lt ? strchr(lt, '>') : NULL;
        if (!gt)
            return false;
        const char *params = gt + 1;
        const char *end = strchr(params, '<'); /* the next link-value, if any */
        size_t plen = end ? (size_t)(end - params) : strlen(params);
        /* rel="next", rel=next, rel="next last": a space-separated list */
        for (const char *r = params; r < params + plen; r++) {
            if (strncasecmp(r, "rel=", 4) != 0)
                continue;
            const char *v = r + 4;
            bool quoted = *v == '"';
            v += quoted;
            while (v < params + plen && *v != '"' && *v != ';' && *v != ',') {
                size_t w = strcspn(v, quoted ? " \"" : " ;,");
                if (w == 4 && strncasecmp(v, "next", 4) == 0) {
                    size_t n = (size_t)(gt - lt - 1);
                    if (n == 0 || n >= cap)
                        return false;
                    memcpy(out, lt + 1, n);
                    out[n] = '\0';
                    return true;
                }
                v += w;
                while (*v == ' ')
                    v++;
                if (!quoted)
                    break;
            }
        }
        s = end;
    }
    return false;
}

/* --- choosing the files ----------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

static int by_path(const void *a, const void *b)
{
    return strcmp(((const hf_file *)a)->path, ((const hf_file *)b)->path);
}

/* Keeps the files for which keep() holds, in order; the count. */
static size_t keep_if(hf_listing *l, bool (*keep)(const hf_file *, const void *), const void *arg)
{
    size_t m = 0;
    l->bytes = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (keep(&l->files[i], arg)) {
            l->bytes = add_bytes(l->bytes, l->files[i].size);
            l->files[m++] = l->files[i];
        } else {
            sl_free(l->files[i].path);
        }
    }
    l->n = m;
    return m;
}

/* Whether the '/'-separated segment at pattern matches the one at path
 * (fnmatch); *last_pattern, *last_path: each is its string's last. */
static bool segment_matches(const char *pattern, const char *path, bool *last_pattern,
                            bool *last_path)
{
    size_t pn = strcspn(pattern, "/"), sn = strcspn(path, "/");
    *last_pattern = !pattern[pn];
    *last_path = !path[sn];
    char seg_pattern[HF_MAX_PATH], seg[HF_MAX_PATH];
    if (pn >= sizeof seg_pattern || sn >= sizeof seg)
        return false;
    memcpy(seg_pattern, pattern, pn);
    seg_pattern[pn] = '\0';
    memcpy(seg, path, sn);
    seg[sn] = '\0';
    return fnmatch(seg_pattern, seg, 0) == 0;
}

/* pattern against path, '/'-separated segment by segment with fnmatch: a
 * segment "**" matches any number of whole segments, none included
 * (data then ** is every file under data; ** then x.parquet, every x.parquet),
 * as HfFileSystem's and git's globs do; '*' and the others stay within
 * their segment. On a mismatch only the last "**" takes one more segment:
 * trying every split of the path between every "**" (a recursion) took
 * (segments)^("**"s) steps, and 12 "**" against a 200-folder path never
 * ended; this is at most (pattern segments x path segments). */
static bool glob_path(const char *pattern, const char *path)
{
    const char *p = pattern, *s = path;
    const char *after_star = NULL, *star_from = NULL; /* the last "**": what follows, where it ends */
    for (;;) {
        if (p[0] == '*' && p[1] == '*' && (p[2] == '/' || !p[2])) {
            const char *rest = p[2] ? p + 3 : p + 2;
            if (!*rest)
                return true;
            after_star = p = rest;
            star_from = s; /* none of the path yet */
            continue;
        }
        bool last_p, last_s;
        if (segment_matches(p, s, &last_p, &last_s)) {
            if (last_p && last_s)
                return true;
            if (!last_p && !last_s) {
                p += strcspn(p, "/") + 1;
                s += strcspn(s, "/") + 1;
                continue;
            }
        }
        const char *slash = after_star ? strchr(star_from, '/') : NULL;
        if (!slash)
            return false;
        p = after_star;
        s = star_from = slash + 1;
    }
}

static bool glob_match(const hf_file *f, const void *pattern)
{
    return glob_path(pattern, f->path);
}

static bool under(const hf_file *f, const void *folder)
{
    size_t n = strlen(folder);
    return strncmp(f->path, folder, n) == 0 && f->path[n] == '/';
}

static bool named(const hf_file *f, const void *path) { return strcmp(f->path, path) == 0; }

static bool has_suffix(const hf_file *f, const void *suffix) { return ends_with(f->path, suffix); }

/* A WebDataset shard, plain or compressed as the tar reader takes it. */
static bool tar_shard(const hf_file *f, const void *unused)
{
    (void)unused;
    return sl_tar_name(f->path); /* what the WebDataset source reads */
}

size_t hf_select(hf_listing *l, const char *pattern)
{
    if (*pattern && strpbrk(pattern, "*?[")) {
        keep_if(l, glob_match, pattern);
    } else if (*pattern) {
        bool file = false;
        for (size_t i = 0; i < l->n && !file; i++)
            file = strcmp(l->files[i].path, pattern) == 0;
        keep_if(l, file ? named : under, pattern);
    }
    if (!*pattern || !strpbrk(pattern, "*?[")) {
        /* The default rule (also within a folder): the Parquet files, or
         * without any, the Arrow files (a dataset saved with save_to_disk
         * and uploaded), or without those, the tar shards. A named file is
         * kept as it is. */
        bool one_file = l->n == 1 && *pattern && strcmp(l->files[0].path, pattern) == 0;
        bool parquet = false, arrow = false;
        for (size_t i = 0; i < l->n; i++) {
            parquet = parquet || ends_with(l->files[i].path, ".parquet");
            arrow = arrow || ends_with(l->files[i].path, ".arrow");
        }
        if (!one_file && parquet)
            keep_if(l, has_suffix, ".parquet");
        else if (!one_file && arrow)
            keep_if(l, has_suffix, ".arrow");
        else if (!one_file)
            keep_if(l, tar_shard, NULL);
    }
    if (l->n > 1)
        qsort(l->files, l->n, sizeof *l->files, by_path);
    return l->n;
}

/* --- the hub's address and token ----------------------------------------------- */

static void endpoint(char *out, size_t cap)
{
    const char *ep = getenv("HF_ENDPOINT");
    snprintf(out, cap, "%s", ep && *ep ? ep : "https://huggingface.co");
    size_t n = strlen(out);
    while (n && out[n - 1] == '/')
        out[--n] = '\0';
}

/* url starts with the origin ep (scheme://host[:port]) followed by '/' or
 * its end, so https://huggingface.co.example and userinfo tricks
 * (https://huggingface.co@example) do not pass. */
static bool on_origin(const char *url, const char *ep)
{
    const char *scheme_end = strstr(ep, "://");
    if (!scheme_end)
        return false;
    const char *path = strchr(scheme_end + 3, '/');
    size_t n = path ? (size_t)(path - ep) : strlen(ep);
    return strncasecmp(url, ep, n) == 0 && (url[n] == '/' || url[n] == '\0');
}

bool hf_bearer(const char *url, char *token, size_t cap)
{
    const char *t = getenv("HF_TOKEN");
    char ep[1024];
    if (!t || !*t || strlen(t) >= cap)
        return false;
    endpoint(ep, sizeof ep);
    if (!on_origin(url, ep))
        return false;
    snprintf(token, cap, "%s", t);
    return true;
}

/* --- requests --------------------------------------------------------------------- */

typedef struct answer {
    long code;
    sl_capped body;
    char next[4096]; /* the Link header's rel="next" */
} answer;

static size_t on_header(char *line, size_t size, size_t n, void *user)
{
    answer *a = user;
    size_t len = size * n;
    if (len > 5 && strncmp(line, "HTTP/", 5) == 0) {
        a->next[0] = '\0'; /* a new answer (after a redirect): its own headers */
    } else if (len > 5 && strncasecmp(line, "link:", 5) == 0) {
        char v[8192];
        size_t k = len - 5 < sizeof v - 1 ? len - 5 : sizeof v - 1;
        memcpy(v, line + 5, k);
        v[k] = '\0';
        v[strcspn(v, "\r\n")] = '\0';
        if (!hf_link_next(v, a->next, sizeof a->next))
            a->next[0] = '\0';
    }
    return len;
}

/* GET url into *a (body capped at HF_MAX_PAGE_BYTES): SL_OK with a->code
 * whatever the status; SL_ERR_IO with *why for a transport failure after
 * the retries (5xx and 429 are retried too; a redirect loop is not), or a
 * body past the cap. */
static sl_status get(const char *url, const hf_fetch *f, answer *a, char *why, size_t cap)
{
    CURL *h = sl_curl_take(false);
    if (!h)
        return sl_fail(SL_ERR_NOMEM, "out of memory asking '%s'", url);
    char cerr[CURL_ERROR_SIZE];
    sl_status st = SL_ERR_IO;
    for (int attempt = 0; attempt <= f->retries; attempt++) {
        if (attempt)
            sl_fetch_pause(attempt);
        sl_buf_free(&a->body.buf);
        *a = (answer){.body = {.max = HF_MAX_PAGE_BYTES}};
        sl_fetch_policy(h, url, f->timeout_ms, cerr);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, a);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, sl_capped_write);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &a->body);
        CURLcode rc = curl_easy_perform(h);
        sl_curl_count(h);
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &a->code);
        if (a->body.nomem) {
            st = SL_ERR_NOMEM;
            snprintf(why, cap, "out of memory");
            break;
        }
        if (a->body.too_big) {
            snprintf(why, cap, "an answer larger than %u bytes", HF_MAX_PAGE_BYTES);
            break;
        }
        if (rc == CURLE_OK && a->code < 500 && a->code != 429) {
            st = SL_OK;
            break;
        }
        bool again = sl_fetch_failed_try(rc, a->code, cerr, why, cap);
        if (rc != CURLE_OK)
            a->code = 0;
        if (!again)
            break;
    }
    sl_curl_give(h, false);
    return st;
}

/* s with every byte but unreserved ones (and '/' when keep_slash)
 * percent-encoded, into out. */
static void quote(const char *s, bool keep_slash, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t k = 0;
    for (; *s && k + 4 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~' || (keep_slash && c == '/')) {
            out[k++] = (char)c;
        } else {
            out[k++] = '%';
            out[k++] = hex[c >> 4];
            out[k++] = hex[c & 15];
        }
    }
    out[k] = '\0';
}

typedef struct ctx {
    const char *ref;
    const hf_spec *spec;
    const hf_fetch *fetch;
    char ep[1024];
    char repo[512]; /* ORG/NAME */
} ctx;

/* The status and message for an answer that is not a 200. */
static sl_status refused(const ctx *c, const char *url, long code, const char *what)
{
    bool token = getenv("HF_TOKEN") && *getenv("HF_TOKEN");
    if (code == 401 || code == 403)
        return sl_fail(SL_ERR_NOT_FOUND, "input '%s': %s answered HTTP %ld: the dataset does not "
                                         "exist, or it is private or gated: %s", c->ref, url, code,
                       token ? "the token in HF_TOKEN cannot read it"
                             : "set HF_TOKEN to a token that can read it");
    if (code == 404)
        return sl_fail(SL_ERR_NOT_FOUND, "input '%s': %s answered HTTP 404: %s", c->ref, url,
                       what);
    return sl_fail(SL_ERR_IO, "input '%s': %s answered HTTP %ld", c->ref, url, code);
}

static sl_status unreachable(const ctx *c, const char *url, const char *why)
{
    return sl_fail(SL_ERR_IO, "input '%s': cannot reach the hub at %s: %s (HF_ENDPOINT names "
                              "another hub or a mirror)", c->ref, url, why);
}

/* get(), its failure the reference's: the hub unreachable, or out of
 * memory. SL_OK whatever the HTTP status; else a->body is freed. */
static sl_status ask(const ctx *c, const char *url, answer *a)
{
    char why[CURL_ERROR_SIZE + 64];
    sl_status st = get(url, c->fetch, a, why, sizeof why);
    if (st == SL_OK)
        return SL_OK;
    sl_buf_free(&a->body.buf);
    return st == SL_ERR_NOMEM ? sl_fail(st, "out of memory asking '%s'", url)
                              : unreachable(c, url, why);
}

/* REVISION's commit into sha. */
static sl_status resolve(const ctx *c, char *sha, size_t cap)
{
    char rev[1024], url[4096], why[CURL_ERROR_SIZE + 64];
    quote(c->spec->revision, false, rev, sizeof rev);
    snprintf(url, sizeof url, "%s/api/datasets/%s/revision/%s", c->ep, c->repo, rev);
    answer a = {0};
    sl_status st = ask(c, url, &a);
    if (st != SL_OK)
        return st;
    if (a.code == 404) {
        /* No such repository, or no such revision in it: the repository's
         * own page tells which. */
        char repo_url[2048];
        snprintf(repo_url, sizeof repo_url, "%s/api/datasets/%s", c->ep, c->repo);
        answer r = {0};
        bool repo_there = get(repo_url, c->fetch, &r, why, sizeof why) == SL_OK && r.code == 200;
        sl_buf_free(&r.body.buf);
        sl_buf_free(&a.body.buf);
        if (repo_there)
            return sl_fail(SL_ERR_NOT_FOUND, "input '%s': the dataset has no revision '%s' (a "
                                             "branch, tag or commit; %s answered HTTP 404)",
                           c->ref, c->spec->revision, url);
        return refused(c, url, 404, "no such dataset repository on the hub (HF_ENDPOINT)");
    }
    if (a.code != 200) {
        sl_buf_free(&a.body.buf);
        return refused(c, url, a.code, "");
    }
    json_t *root = json_loadb((const char *)a.body.buf.data, a.body.buf.len, 0, NULL);
    sl_buf_free(&a.body.buf);
    const char *s = json_string_value(json_object_get(root, "sha"));
    /* A commit id goes into every URL: letters and digits only. */
    size_t n = s ? strlen(s) : 0;
    bool ok = n > 0 && n < cap && n <= 64;
    for (size_t i = 0; ok && i < n; i++)
        ok = (s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'z') ||
             (s[i] >= 'A' && s[i] <= 'Z');
    if (ok)
        memcpy(sha, s, n + 1);
    json_decref(root);
    return ok ? SL_OK
              : sl_fail(SL_ERR_IO, "input '%s': %s answered without a commit id ('sha')", c->ref,
                        url);
}

/* The folder to list: the pattern's leading segments without glob
 * characters, less the last one (which may be a file), or "". */
static void list_root(const char *pattern, char *out, size_t cap)
{
    size_t glob_at = strcspn(pattern, "*?[");
    size_t n = 0;
    for (size_t i = 0; i < glob_at; i++)
        if (pattern[i] == '/')
            n = i;
    if (!pattern[glob_at]) { /* a plain path: a file, or a folder */
        const char *slash = strrchr(pattern, '/');
        n = slash ? (size_t)(slash - pattern) : 0;
    }
    snprintf(out, cap, "%.*s", (int)n, pattern);
}

static sl_status list(const ctx *c, const char *sha, hf_listing *l)
{
    char root[HF_MAX_PATH], qroot[3 * HF_MAX_PATH], url[4096 + 3 * HF_MAX_PATH];
    char why[CURL_ERROR_SIZE + 64];
    list_root(c->spec->pattern, root, sizeof root);
    quote(root, true, qroot, sizeof qroot);
    snprintf(url, sizeof url, "%s/api/datasets/%s/tree/%s%s%s?recursive=true", c->ep, c->repo,
             sha, *root ? "/" : "", qroot);
    uint64_t total = 0;
    for (int page = 0;; page++) {
        if (page == HF_MAX_PAGES)
            return sl_fail(SL_ERR_INVALID_ARG, "input '%s': the listing runs past %d pages: "
                                               "name fewer files with a pattern", c->ref,
                           HF_MAX_PAGES);
        answer a = {0};
        sl_status st = ask(c, url, &a);
        if (st != SL_OK)
            return st;
        if (a.code == 404 && *root && page == 0) {
            sl_buf_free(&a.body.buf);
            return sl_fail(SL_ERR_NOT_FOUND, "input '%s' matches no file: the dataset has no "
                                             "folder '%s' at %s (commit %s)", c->ref, root,
                           c->spec->revision, sha);
        }
        if (a.code != 200) {
            sl_buf_free(&a.body.buf);
            return refused(c, url, a.code, "the listing is gone");
        }
        total += a.body.buf.len;
        bool ok = total <= HF_MAX_LISTING_BYTES &&
                  hf_tree_parse((const char *)a.body.buf.data, a.body.buf.len, l, why,
                                sizeof why);
        sl_buf_free(&a.body.buf);
        if (total > HF_MAX_LISTING_BYTES)
            return sl_fail(SL_ERR_INVALID_ARG, "input '%s': the listing passes %u bytes: name "
                                               "fewer files with a pattern", c->ref,
                           HF_MAX_LISTING_BYTES);
        if (!ok)
            return sl_fail(strstr(why, "memory") ? SL_ERR_NOMEM
                           : strstr(why, "pattern") ? SL_ERR_INVALID_ARG
                                                   : SL_ERR_IO,
                           "input '%s': %s: %s", c->ref, url, why);
        if (!a.next[0])
            return SL_OK;
        /* The next page, on the hub itself (the token goes there). */
        char next[4096 + 1024];
        if (a.next[0] == '/')
            snprintf(next, sizeof next, "%s%s", c->ep, a.next);
        else
            snprintf(next, sizeof next, "%s", a.next);
        if (!on_origin(next, c->ep))
            return sl_fail(SL_ERR_IO, "input '%s': the hub's next page of the listing is "
                                      "elsewhere (%s)", c->ref, next);
        snprintf(url, sizeof url, "%s", next);
    }
}

static bool offline(void)
{
    const char *env = getenv("HF_HUB_OFFLINE");
    return env && (strcmp(env, "1") == 0 || strcasecmp(env, "true") == 0);
}

sl_status hf_expand(const char *ref, const hf_fetch *fetch, char ***urls, char ***names,
                    size_t *n)
{
    *urls = *names = NULL;
    *n = 0;
    hf_spec spec;
    sl_status st = hf_spec_parse(ref, &spec);
    if (st != SL_OK)
        return st;
    if (offline())
        return sl_fail(SL_ERR_INVALID_ARG, "input '%s': HF_HUB_OFFLINE is set, and datasets are "
                                           "read from the hub, never cached by sluice: unset it, "
                                           "or download the files and name them", ref);
    ctx c = {.ref = ref, .spec = &spec, .fetch = fetch};
    endpoint(c.ep, sizeof c.ep);
    snprintf(c.repo, sizeof c.repo, "%s/%s", spec.org, spec.name);
    char sha[128];
    hf_listing l = {0};
    if ((st = resolve(&c, sha, sizeof sha)) == SL_OK)
        st = list(&c, sha, &l);
    if (st == SL_OK && hf_select(&l, spec.pattern) == 0)
        st = sl_fail(SL_ERR_NOT_FOUND, "input '%s' matches no file%s at %s (commit %s)", ref,
                     *spec.pattern ? "" : ": the dataset has no .parquet, .arrow or .tar file",
                     spec.revision, sha);
    if (st == SL_OK && (!(*urls = sl_calloc(l.n, sizeof **urls)) ||
                        !(*names = sl_calloc(l.n, sizeof **names))))
        st = sl_fail(SL_ERR_NOMEM, "out of memory expanding '%s'", ref);
    for (size_t i = 0; st == SL_OK && i < l.n; i++) {
        char q[3 * HF_MAX_PATH];
        quote(l.files[i].path, true, q, sizeof q);
        /* Pinned to the commit: every read of the run, and a resumed run
         * of the same listing, reads the same bytes. */
        (*urls)[i] = sl_asprintf("%s/datasets/%s/resolve/%s/%s", c.ep, c.repo, sha, q);
        (*names)[i] = l.files[i].path;
        l.files[i].path = NULL;
        if (!(*urls)[i])
            st = sl_fail(SL_ERR_NOMEM, "out of memory expanding '%s'", ref);
    }
    if (st == SL_OK) {
        *n = l.n;
        sl_log(SL_LOG_INFO, "%s: %zu files, %.1f MB, at %s (commit %s)", ref, l.n,
               (double)l.bytes / 1e6, spec.revision, sha);
    } else {
        if (*urls)
            sl_strings_free(*urls, l.n);
        if (*names)
            sl_strings_free(*names, l.n);
        *urls = *names = NULL;
    }
    hf_listing_clear(&l);
    return st;
}

char *hf_ref_unpinned(const char *ref)
{
    hf_spec spec;
    if (hf_spec_parse(ref, &spec) != SL_OK)
        return NULL;
    return sl_asprintf("hf://datasets/%s/%s%s%s", spec.org, spec.name, spec.pattern[0] ? "/" : "",
                       spec.pattern);
}
