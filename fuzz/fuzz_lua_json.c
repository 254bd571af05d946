/* fuzz/fuzz_lua_json.c — the conversion of JSON values to Lua and back
 * (stage/lua_stage.c: an input's pass-through columns and a stage's config
 * reach a script this way, a script's columns come back this way) on
 * arbitrary bytes. What must hold: what jansson reads comes back equal,
 * except that an empty object comes back as an empty array (Lua has one
 * empty table; docs/stages.md) and a value nested deeper than the limit is
 * refused with a message, not a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/alloc.h"
#include "core/error.h"
#include "stage/stage.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* a equals b, an empty object matching an empty array. */
static bool same(const json_t *a, const json_t *b)
{
    bool a_empty = (json_is_object(a) && !json_object_size(a)) ||
                   (json_is_array(a) && !json_array_size(a));
    bool b_empty = (json_is_object(b) && !json_object_size(b)) ||
                   (json_is_array(b) && !json_array_size(b));
    if (a_empty || b_empty)
        return a_empty && b_empty;
    if (json_typeof(a) != json_typeof(b))
        return false;
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!same(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    }
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b))
            return false;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)a, k, v) {
            json_t *w = json_object_get(b, k);
            if (!w || !same(v, w))
                return false;
        }
        return true;
    }
    return json_equal((json_t *)a, (json_t *)b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *out = NULL;
    sl_status st = lua_stage_json_roundtrip((const char *)data, size, &out);
    json_t *in = json_loadb((const char *)data, size, JSON_DECODE_ANY, NULL);
    if (st == SL_OK && !!in != !!out)
        abort(); /* read by one and not the other */
    if (st == SL_ERR_INVALID_ARG && (!in || !strstr(sl_last_error(), "deeper than")))
        abort(); /* refused for another reason than depth */
    if (out) {
        json_t *back = json_loads(out, JSON_DECODE_ANY, NULL);
        if (!back || !same(in, back))
            abort();
        json_decref(back);
    }
    json_decref(in);
    sl_free(out);
    return 0;
}
