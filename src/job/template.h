/* job/template.h — prompt templates: `{column}` in a prompt or system
 * prompt is replaced by the row's pass-through column of that name
 * (`{meta.author}`: the member `author` of the object in column `meta`,
 * when no column is named `meta.author`); `{{` and `}}` are literal braces.
 * A brace that does not open a field (`{"a": 1}`, `{ x }`) is kept as it is.
 * Pure functions of their arguments: any thread. */
#ifndef SL_JOB_TEMPLATE_H
#define SL_JOB_TEMPLATE_H

#include <stdbool.h>

#include <jansson.h>

#include "sluice/status.h"

/* Whether the text holds a field or a doubled brace (it must be filled). */
bool template_has_fields(const char *tmpl);

/* Calls fn with the column of each field of tmpl (n bytes, not
 * NUL-terminated), its whole dotted name ({meta.author}: "meta.author"). */
void template_each_column(const char *tmpl, void (*fn)(const char *name, size_t n, void *user),
                          void *user);

/* tmpl with its fields filled from `columns` (an object, or NULL: none)
 * into *out (sl_free). A string value goes in as it is; numbers, booleans,
 * arrays and objects as compact JSON. SL_ERR_INVALID_ARG when a field's
 * column is missing or null, the message naming it ("no column 'label'
 * for {label}"), and when the filled text would pass 16 MiB (a column
 * named many times); SL_ERR_NOMEM. */
sl_status template_fill(const char *tmpl, const json_t *columns, char **out);
/* template_fill naming where the template is in its message ("the system
 * prompt": a row that lacks a column of --system said "in the prompt",
 * where the user looked first). */
sl_status template_fill_in(const char *tmpl, const json_t *columns, const char *where,
                           char **out);

#endif
