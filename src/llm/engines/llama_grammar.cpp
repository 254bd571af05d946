// llm/engines/llama_grammar.cpp — the C++ shim over llama.cpp's JSON
// schema converter (common/json-schema-to-grammar.h in its sources,
// libllama-common in its prefix): C in, C out, no exception crosses it.
// The only C++ in sluice; see llama_grammar.h.
#include <cstring>
#include <exception>
#include <new>
#include <string>

#include "json-schema-to-grammar.h"

extern "C" {
#include "core/alloc.h"
#include "core/error.h"
}
#include "llm/engines/llama_grammar.h"

// Where (a path, "$.properties.box.properties") an object of properties
// holds one named "": llama.cpp names a property's rule after its object's
// and the property's name, so an empty one's rule takes the object's place
// and the grammar asks for the property's value instead (a bare integer
// for {"properties": {"": {"type": "integer"}}}). False when none does.
static bool empty_property(const common_json &j, const std::string &at, std::string &where)
{
    if (j.is_array()) {
        for (size_t i = 0; i < j.size(); i++)
            if (empty_property(j[i], at + "[" + std::to_string(i) + "]", where))
                return true;
        return false;
    }
    if (!j.is_object())
        return false;
    for (const auto &kv : j.items()) {
        std::string here = at + "." + kv.key();
        if (kv.key() == "properties" && kv.value().is_object() && kv.value().contains("")) {
            where = here;
            return true;
        }
        if (empty_property(kv.value(), here, where))
            return true;
    }
    return false;
}

extern "C" sl_status sl_llama_schema_to_grammar(const char *schema_json, const char *name,
                                                 char **gbnf)
{
    *gbnf = nullptr;
    std::string grammar;
    try {
        common_json schema = common_json::parse(schema_json);
        std::string where;
        if (empty_property(schema, "$", where))
            return sl_fail(SL_ERR_INVALID_ARG, "%s: %s has a property named \"\", of which "
                           "llama.cpp makes a wrong grammar: rename it", name, where.c_str());
        // force_gbnf: GBNF even where llama.cpp was built with llguidance.
        grammar = json_schema_to_grammar(schema, true);
        // Its number's exponent takes up to 16 digits ("2e6316"), which
        // no double holds: the answer, though sampled under the schema,
        // then fails to parse as JSON. Two digits keep every such number a
        // finite double (16 digits before the point: below 1e116).
        const std::string wide = "[eE] [-+]? integral-part", narrow = "[eE] [-+]? [0-9]{1,2}";
        for (size_t at = grammar.find(wide); at != std::string::npos; at = grammar.find(wide, at + narrow.size()))
            grammar.replace(at, wide.size(), narrow);
    } catch (const std::bad_alloc &) {
        return sl_fail(SL_ERR_NOMEM, "out of memory turning %s into a grammar", name);
    } catch (const std::exception &e) {
        return sl_fail(SL_ERR_INVALID_ARG, "%s: llama.cpp cannot turn it into a grammar: %s",
                       name, e.what());
    } catch (...) {
        return sl_fail(SL_ERR_INVALID_ARG, "%s: llama.cpp cannot turn it into a grammar", name);
    }
    char *copy = sl_strndup(grammar.data(), grammar.size());
    if (!copy)
        return sl_fail(SL_ERR_NOMEM, "out of memory turning %s into a grammar", name);
    *gbnf = copy;
    return SL_OK;
}
