/* llm/engines/llama_grammar.h — the grammars the llama engine samples
 * under: a JSON schema turned into GBNF by llama.cpp's converter
 * (json_schema_to_grammar() of its C++ common library, reached through the
 * shim llama_grammar.cpp; llama_grammar_none.c stands in where the build
 * has no common library), and a GBNF text checked without a model. Pure
 * functions of their arguments; any thread. */
#ifndef SL_LLM_LLAMA_GRAMMAR_H
#define SL_LLM_LLAMA_GRAMMAR_H

#include <stdbool.h>

#include "sluice/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* GBNF (its start rule "root") accepting the JSON values of the schema
 * `schema_json`: SL_OK and *gbnf (sl_free). SL_ERR_INVALID_ARG naming
 * `name` with the converter's reason (not JSON, a keyword or a $ref it
 * cannot convert), or that this build has no converter; SL_ERR_NOMEM. */
sl_status sl_llama_schema_to_grammar(const char *schema_json, const char *name, char **gbnf);

/* Parses a GBNF text as llama.cpp will (no model needed): SL_OK, or
 * SL_ERR_INVALID_ARG naming `name` (llama.cpp logs the parser's reason).
 * In llama.c, the file that includes llama.h. */
sl_status sl_llama_grammar_check(const char *gbnf, const char *name);

#ifdef __cplusplus
}
#endif
#endif
