/* config/config_impl.h — what the YAML loader (config_yaml.c) needs of the
 * settings table (config.c): finding a key or a section, and setting a value
 * with a message that names where it came from. Same rules as
 * sluice/config.h: one thread; strings are copied into the config. */
#ifndef SL_CONFIG_IMPL_H
#define SL_CONFIG_IMPL_H

#include <stdbool.h>
#include <stddef.h>

#include "sluice/config.h"

/* The setting with this key; -1 when none. */
int sl_config_find_key(const char *key, size_t len);
/* True when some key starts with "prefix." (prefix of `len` bytes). */
bool sl_config_is_section(const char *prefix, size_t len);
/* The names allowed right under `prefix` (NULL or "" for the top), comma
 * separated, into buf; and the allowed name closest to `name` (an edit or
 * two away) into near, or "" when none is. */
void sl_config_children(const char *prefix, const char *name, char *buf, size_t size,
                        char *near, size_t near_size);
/* Edit distance between two short names (99 past 40 bytes). */
int sl_config_distance(const char *a, size_t la, const char *b, size_t lb);
/* The keys that `name`, written under `prefix` ("" the top) and unknown
 * there, was likely meant as: a key of another section of that last name
 * or flag (`parallel` under image: llama.parallel), or for a dotted name
 * the key of its section an edit or two away, or the setting of another
 * tool's name for it (sl_config_foreign_name: "'sampling.samples' (samples
 * under sampling: vLLM's and OpenAI's n)"). Into buf as "'llama.parallel'
 * (parallel under llama)", "'a.x' or 'b.x'", or a key of this section by
 * its own name; "" when none. */
void sl_config_elsewhere(const char *prefix, const char *name, char *buf, size_t size);

/* Sets option i from `value` (NULL: its default). `where` prefixes messages
 * ("job.yaml:3:14: "), `name` names the setting in them. A list option gets
 * one item (split on commas when `split`); sl_config_touch_list() first
 * empties a list set by an earlier layer. */
sl_status sl_config_set_at(sl_config *cfg, int i, const char *value, bool split, const char *where,
                           const char *name);
sl_status sl_config_touch_list(sl_config *cfg, int i, const char *where, const char *name);
bool sl_config_option_is_list(int i);
/* Option i's names when it takes one of a few ("llama|openai"), else NULL:
 * what a message shows in place of its argument's placeholder (E). */
const char *sl_config_option_choices(int i);
/* True for a list whose items may be mappings (pipeline.stages): the loader
 * hands each mapping over as a JSON object's text. */
bool sl_config_option_takes_mappings(int i);

/* ", got VALUE" for a message about a JSON value: the value as written
 * (cut short), and for a number in quotes that it goes without them. */
struct json_t;
void sl_config_json_got(const struct json_t *v, char *buf, size_t size);

/* Off: the settings that read a file (openai.response_format,
 * openai.endpoints_file) fail instead, so a fuzzer's text names no file to
 * read (a FIFO or /dev/stdin would block it). On by default. */
void sl_config_allow_files(sl_config *cfg, bool allow);

/* Tasks (config_tasks.c). A task name names output columns: letters,
 * digits and _, not first a digit, at most SL_TASK_NAME_MAX bytes. */
#define SL_TASK_NAME_MAX 64
bool sl_config_task_name_ok(const char *name, size_t len);

/* One task of a tasks file; strings sl_malloc'd. */
typedef struct sl_task_spec {
    char *name, *prompt, *system, *json_schema;
    char **choices;
    int n_choices;
    sl_sampling sampling;
    bool max_tokens_set; /* its sampling holds max_tokens (a task of choices ignores it) */
} sl_task_spec;

/* Parses a tasks file's text (`file` names it in messages): an object
 * {"NAME": {"prompt", "system", "sampling": {...}, "json_schema",
 * "choices": [...]}, ...} or
 * a list of such objects with a "name" each, at most `max` tasks, in
 * order; each task's sampling is `base` with its own keys over it.
 * SL_ERR_INVALID_ARG naming the file, task and key; nothing is left in
 * out[] on failure. Free with sl_task_specs_free(). */
sl_status sl_config_parse_tasks(const char *text, size_t len, const char *file,
                                const sl_sampling *base, sl_task_spec *out, int max, int *n);
void sl_task_specs_free(sl_task_spec *t, int n);

#endif
