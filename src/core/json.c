/* core/json.c — see json.h. */
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "core/alloc.h"
#include "core/json.h"
#include "core/utf8.h"

char *sl_json_dump(const json_t *v, size_t flags, size_t *len)
{
    char *dumped = json_dumps(v, flags); /* malloc's: copied into ours */
    size_t n = dumped ? strlen(dumped) : 0;
    char *text = dumped ? sl_strndup(dumped, n) : NULL;
    free(dumped);
    if (text && len)
        *len = n;
    return text;
}

json_t *sl_json_text(const char *s, size_t n)
{
    if (!s)
        return json_null();
    if (sl_utf8_valid(s, n))
        return json_stringn(s, n);
    char *fixed = sl_utf8_sanitize(s, n);
    json_t *j = fixed ? json_string(fixed) : NULL;
    sl_free(fixed);
    return j;
}

json_t *sl_json_column(const json_t *row, const char *name, size_t n)
{
    char small[256];
    char *key = n < sizeof small ? small : sl_malloc(n + 1);
    if (!key)
        return NULL;
    memcpy(key, name, n);
    key[n] = '\0';
    json_t *v = json_object_get(row, key);
    if (!v && n && memchr(key, '.', n)) { /* a path: every part named */
        v = (json_t *)row;
        for (char *part = key; v;) {
            char *dot = strchr(part, '.');
            if (dot)
                *dot = '\0';
            v = *part && json_is_object(v) ? json_object_get(v, part) : NULL;
            if (!dot)
                break;
            part = dot + 1;
        }
    }
    if (key != small)
        sl_free(key);
    return v;
}

json_t *sl_json_real(double d)
{
    return isfinite(d) ? json_real(d) : json_null();
}
