/* core/data_url.c — see data_url.h. */
#include <stdio.h>
#include <string.h>

#include "core/alloc.h"
#include "core/data_url.h"

/* Writes data's base64 at o; returns the end. */
static char *base64(char *o, const uint8_t *data, size_t len)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)data[i] << 16 | (i + 1 < len ? (uint32_t)data[i + 1] << 8 : 0);
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < len ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    return o;
}

char *sl_data_url_parts(const uint8_t *const *data, const size_t *len, int n_parts,
                        const char *mime, size_t *out_len)
{
    char head[128];
    int h = snprintf(head, sizeof head, "data:%s;base64,", mime ? mime : "image/jpeg");
    if (h < 0 || (size_t)h >= sizeof head || n_parts < 1)
        return NULL;
    size_t n = (size_t)h + (size_t)(n_parts - 1); /* the commas */
    for (int k = 0; k < n_parts; k++) {
        if (len[k] > ((size_t)-1 - n) / 4 * 3 - 3)
            return NULL;
        n += (len[k] + 2) / 3 * 4;
    }
    char *out = sl_malloc(n + 1);
    if (!out)
        return NULL;
    memcpy(out, head, (size_t)h);
    char *o = out + h;
    for (int k = 0; k < n_parts; k++) {
        if (k)
            *o++ = ',';
        o = base64(o, data[k], len[k]);
    }
    *o = '\0';
    if (out_len)
        *out_len = n;
    return out;
}

char *sl_data_url(const uint8_t *data, size_t len, const char *mime, size_t *out_len)
{
    return sl_data_url_parts(&data, &len, 1, mime, out_len);
}
