/* llm/engines/llama_grammar_none.c — llama_grammar.h where the build found
 * no llama.cpp common library (a system llama.cpp without it, or the fuzz
 * build): no JSON schema converter. --grammar still works; --json-schema
 * works on the openai engine. */
#include <stddef.h>

#include "core/error.h"
#include "llm/engines/llama_grammar.h"

sl_status sl_llama_schema_to_grammar(const char *schema_json, const char *name, char **gbnf)
{
    (void)schema_json;
    *gbnf = NULL;
    return sl_fail(SL_ERR_INVALID_ARG,
                   "%s: this sluice was built without llama.cpp's common library "
                   "(libllama-common and its common/*.h sources), which turns a JSON schema into "
                   "a grammar for the llama engine: give a GBNF grammar (--grammar), or use the "
                   "openai engine", name);
}
