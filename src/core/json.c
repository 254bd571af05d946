/* core/json.c — see json.h. */
#include "core/alloc.h"
#include "core/json.h"
#include "core/utf8.h"

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
