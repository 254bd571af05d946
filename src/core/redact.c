/* core/redact.c — see redact.h. */
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "core/alloc.h"
#include "core/redact.h"

/* Query parameters whose value is a credential or a signature: S3 and GCS
 * presigned URLs (SigV4 and its v2 "Signature"), an Azure SAS ("sig"),
 * CloudFront's signed URLs ("Signature"), and the usual token and key
 * names of APIs that take them in the URL (Google's ?key=). */
static const char *const secret_params[] = {
    "x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-goog-signature",
    "x-goog-credential", "signature", "sig", "token", "access_token", "id_token", "api_key",
    "apikey", "key", "password", "secret", "client_secret",
};

static bool secret_param(const char *name, size_t len)
{
    for (size_t i = 0; i < sizeof secret_params / sizeof *secret_params; i++)
        if (strlen(secret_params[i]) == len && strncasecmp(name, secret_params[i], len) == 0)
            return true;
    return false;
}

/* Where a URL in a message ends: white space, a quote or an angle bracket
 * (messages quote names as 'URL'; HTML and JSON around them). */
static bool url_end(char c)
{
    return c == '\0' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\'' ||
           c == '"' || c == '<' || c == '>';
}

typedef struct out_buf {
    char *out;
    size_t cap, len;
} out_buf;

static void put(out_buf *o, const char *s, size_t n)
{
    if (o->len + 1 < o->cap) {
        size_t room = o->cap - 1 - o->len;
        memcpy(o->out + o->len, s, n < room ? n : room);
    }
    o->len += n;
}

static const char MASK[] = "***";

/* The URL at s (its scheme's "://" at s + sep, ending at end) into o with
 * its secrets masked; the number of secrets masked. */
static int put_url(out_buf *o, const char *s, const char *end, size_t sep)
{
    int masked = 0;
    const char *host = s + sep + 3, *p = host;
    while (p < end && *p != '/' && *p != '?' && *p != '#')
        p++;
    const char *at = NULL;
    for (const char *q = host; q < p; q++)
        if (*q == '@')
            at = q; /* the last: a password may hold an unencoded '@' */
    const char *colon = at ? memchr(host, ':', (size_t)(at - host)) : NULL;
    if (colon && colon + 1 < at) {
        put(o, s, (size_t)(colon + 1 - s));
        put(o, MASK, sizeof MASK - 1);
        put(o, at, (size_t)(p - at));
        masked++;
    } else {
        put(o, s, (size_t)(p - s));
    }
    const char *query = p;
    while (query < end && *query != '?' && *query != '#')
        query++;
    put(o, p, (size_t)(query - p));
    if (query == end || *query == '#') {
        put(o, query, (size_t)(end - query));
        return masked;
    }
    put(o, query, 1); /* the '?' */
    const char *q = query + 1;
    while (q < end && *q != '#') {
        const char *stop = q;
        while (stop < end && *stop != '&' && *stop != ';' && *stop != '#')
            stop++;
        const char *eq = memchr(q, '=', (size_t)(stop - q));
        if (eq && eq + 1 < stop && secret_param(q, (size_t)(eq - q))) {
            put(o, q, (size_t)(eq + 1 - q));
            put(o, MASK, sizeof MASK - 1);
            masked++;
        } else {
            put(o, q, (size_t)(stop - q));
        }
        q = stop;
        if (q < end && *q != '#') {
            put(o, q, 1);
            q++;
        }
    }
    put(o, q, (size_t)(end - q));
    return masked;
}

static int redact(const char *text, out_buf *o)
{
    int masked = 0;
    const char *s = text;
    for (;;) {
        const char *sep = strstr(s, "://");
        if (!sep) {
            put(o, s, strlen(s));
            break;
        }
        /* The URL's start: back over its scheme to the word's start. */
        const char *start = sep;
        while (start > s && !url_end(start[-1]))
            start--;
        const char *end = sep + 3;
        while (!url_end(*end))
            end++;
        put(o, s, (size_t)(start - s));
        masked += put_url(o, start, end, (size_t)(sep - start));
        s = end;
    }
    if (o->cap)
        o->out[o->len < o->cap ? o->len : o->cap - 1] = '\0';
    return masked;
}

size_t sl_redact_urls(const char *text, char *out, size_t cap)
{
    out_buf o = {.out = out, .cap = cap};
    redact(text ? text : "", &o);
    return o.len;
}

char *sl_redact_dup(const char *text)
{
    size_t n = sl_redact_urls(text, NULL, 0) + 1;
    char *shown = sl_malloc(n);
    if (shown)
        sl_redact_urls(text, shown, n);
    return shown;
}

bool sl_redact_needed(const char *text)
{
    if (!text || !strstr(text, "://"))
        return false;
    out_buf o = {0};
    return redact(text, &o) > 0;
}
