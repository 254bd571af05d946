/* core/utf8.c — UTF-8 validation (RFC 3629) and repair. */
#include <string.h>

#include "core/alloc.h"
#include "core/utf8.h"

/* Length of the valid sequence starting at s, or 0 when invalid. */
static size_t seq_len(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else
        return 0;
    if (avail < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return n;
}

size_t sl_utf8_valid_prefix(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    for (size_t n; i < len && (n = seq_len(p + i, len - i)) != 0;)
        i += n;
    return i;
}

bool sl_utf8_valid(const char *s, size_t len)
{
    return sl_utf8_valid_prefix(s, len) == len;
}

/* U+FFFD, the escape: a name that held one must not read as an escape. */
static bool is_fffd(const unsigned char *p, size_t n)
{
    return n == 3 && p[0] == 0xEF && p[1] == 0xBF && p[2] == 0xBD;
}

/* sl_utf8_sanitize (escape false: each bad byte and NUL becomes U+FFFD) or
 * sl_utf8_escape (escape true: U+FFFD and the byte's hex digits). */
static char *rewrite(const char *s, size_t len, bool escape)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)s;
    char *out = sl_malloc(len * (escape ? 5 : 3) + 1); /* each bad byte grows to 5 or 3 */
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        size_t n = seq_len(p + i, len - i);
        if (n && (escape ? !is_fffd(p + i, n) : !(n == 1 && p[i] == 0))) {
            memcpy(out + o, p + i, n);
            o += n;
            i += n;
            continue;
        }
        for (size_t k = 0; k < (escape && n ? n : 1); k++, i++) {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            if (escape) {
                out[o++] = hex[p[i] >> 4];
                out[o++] = hex[p[i] & 15];
            }
        }
    }
    out[o] = '\0';
    return out;
}

char *sl_utf8_sanitize(const char *s, size_t len)
{
    return rewrite(s, len, false);
}

char *sl_utf8_escape(const char *s, size_t len)
{
    return rewrite(s, len, true);
}

bool sl_utf8_needs_escape(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0, n; i < len; i += n)
        if (!(n = seq_len(p + i, len - i)) || is_fffd(p + i, n))
            return true;
    return false;
}
