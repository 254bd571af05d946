/* llm/json_schema.h — a JSON schema, checked when read, and answers checked
 * against it: the structured-output check both engines run on every answer
 * of a request that has a schema (docs/output.md, "Structured output").
 * Hand-written over jansson for the subset sluice checks: type, enum,
 * const, properties, required, additionalProperties, items, prefixItems,
 * min/maxItems, min/maxLength, min/maxProperties, minimum, maximum,
 * exclusiveMinimum/Maximum, anyOf, oneOf, allOf, and the boolean schemas.
 * Other keywords ($ref, pattern, format, ...) are accepted and not checked.
 * A parsed schema is read-only: any thread may check answers against it. */
#ifndef SL_LLM_JSON_SCHEMA_H
#define SL_LLM_JSON_SCHEMA_H

#include <stddef.h>

#include <jansson.h>

#include "sluice/status.h"

typedef struct sl_json_schema sl_json_schema;

/* Parses and checks a schema's text. SL_ERR_INVALID_ARG naming `name` (how
 * messages call it, e.g. "--json-schema 'tags.json'"), where in the schema
 * and the cause: not JSON, not an object, a keyword of the wrong type, an
 * unknown type name. Freed with sl_json_schema_free. */
sl_status sl_json_schema_parse(const char *text, size_t len, const char *name,
                               sl_json_schema **out);
void sl_json_schema_free(sl_json_schema *schema);

/* The schema as parsed (owned by it). */
const json_t *sl_json_schema_json(const sl_json_schema *schema);

/* Checks a JSON value against the schema: true when it matches; else false
 * and why (the place, e.g. "$.tags[2]", and the cause) into why[size]. */
int sl_json_schema_match(const sl_json_schema *schema, const json_t *value, char *why,
                         size_t size);

/* Checks an answer's text: SL_OK when it is one JSON value (whitespace
 * around it allowed) that matches; else SL_ERR_INVALID_OUTPUT and *message
 * (sl_free; NULL when out of memory) naming id, the cause and the raw
 * answer, which the message keeps whole. An answer whose finish_reason
 * (may be NULL) is "length" was cut at the token limit, not misled: the
 * message says so and what to raise: the task's own limit when task names
 * one (NULL: the job's), which the job's --max-tokens does not reach when
 * the task sets its own. */
sl_status sl_json_schema_check_answer(const sl_json_schema *schema, const char *id,
                                      const char *task, const char *text,
                                      const char *finish_reason, char **message);

#endif
