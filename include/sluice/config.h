/* sluice/config.h — a job's settings: a YAML job file, command-line flags
 * over it, and the effective settings printed back as a job file.
 *
 * One table names every setting once: its key in a job file
 * ("llama.parallel"), its flag ("--parallel"), its type and range. Job files,
 * sl_config_set() and the sluice command all go through it, so a flag
 * without a key cannot exist (docs/jobs.md). An sl_config owns every string
 * the caption parameters point to, until sl_config_free(). Not thread-safe:
 * one thread builds it; the parameters it hands out may then be read
 * anywhere while it lives.
 */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include "caption.h"
#include "status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sl_config sl_config;

/* A job file is at most this large: it holds settings, not data (a long list
 * of inputs goes in a manifest). */
#define SL_CONFIG_MAX_FILE_BYTES (1024 * 1024)
/* The job-file version this sluice reads and writes (key `version`). */
#define SL_CONFIG_VERSION 1

/* What the sluice command prints; a C program may ignore it. */
typedef struct sl_config_console {
    long show;               /* the first N captions printed (default 5) */
    bool quiet;              /* errors only */
    bool verbose;            /* llama.cpp's messages too */
    double progress_every_s; /* progress lines when not on a terminal (default 10) */
} sl_config_console;

/* One setting of the table. */
typedef struct sl_config_option {
    const char *key;   /* in a job file: "section.name" or "name" */
    const char *flag;  /* the sluice command's long flag without "--"; NULL for the keys
                          only a job file has (version, metrics.optional) and for
                          input.paths (the command's INPUT arguments) */
    int short_flag;    /* 'm' for -m; 0: none */
    bool is_switch;    /* true/false: the flag alone means true (--flag=false: false) */
    bool is_list;      /* a YAML sequence; each flag adds one item (a layer's first
                          replaces the list of the layers below) */
    const char *arg;   /* what the value looks like: "N", "PATH", "SIZE", ... */
    const char *help;  /* one line */
} sl_config_option;

/* The i-th setting, for i < sl_config_option_count(); false past the end. */
size_t sl_config_option_count(void);
bool sl_config_option_at(size_t i, sl_config_option *out);

/* Whether `name` (NUL-terminated) and `word` (`len` bytes) are one name
 * when '-' and '_' count as one letter: --top_p is --top-p, a job file's
 * max-tokens is max_tokens. */
bool sl_config_same_name(const char *name, const char *word, size_t len);

/* The setting another tool names `name` (`len` bytes; '-' read as '_'):
 * vLLM's n, max_model_len, guided_json, Ray Data LLM's batch_size,
 * concurrency, ... Its index for sl_config_option_at() and, in `whose`,
 * whose name it is ("vLLM's n"); -1 when none. For the messages of an
 * unknown key or flag: such a name is never taken as the setting. */
int sl_config_foreign_name(const char *name, size_t len, const char **whose);

/* What to do instead of a setting another tool has and sluice has not
 * (vLLM's min_tokens, presence_penalty, stop_token_ids, guided_regex,
 * ...; `len` bytes, '-' read as '_'): "vLLM's min_tokens: sluice has no
 * such setting; ...", or NULL. Said before any near spelling, which would
 * name another setting (min_tokens is an edit from max_tokens). */
const char *sl_config_foreign_missing(const char *name, size_t len);

/* Every setting at its default. Free with sl_config_free(). */
sl_status sl_config_new(sl_config **out);
void sl_config_free(sl_config *cfg);

/* Settings made after this replace those made before it, lists included
 * (a list set again in the same layer grows instead). The loaders begin a
 * layer of their own; the sluice command begins one for its flags, so
 * flags override the job file. */
void sl_config_begin_layer(sl_config *cfg);

/* Reads a YAML job file into cfg (a new layer). SL_ERR_INVALID_ARG with a
 * message "FILE:LINE:COLUMN: what is wrong, what is allowed" for a syntax
 * error, an unknown key, a value of the wrong type or out of range, a
 * repeated key; SL_ERR_NOT_FOUND / SL_ERR_IO when it cannot be read. A
 * failed load leaves cfg holding the settings read before the error: free
 * it. `name` names the text in messages. */
sl_status sl_config_load_file(sl_config *cfg, const char *path);
sl_status sl_config_load_text(sl_config *cfg, const char *text, size_t len, const char *name);

/* Sets one setting from text, as a job file's scalar would: `value` NULL
 * resets it to its default; a list gets one more item ("columns" and "gpus"
 * split on commas). set() names the key in its messages, set_flag() the
 * flag (given without "--"). SL_ERR_INVALID_ARG for an unknown key or a bad
 * value. */
sl_status sl_config_set(sl_config *cfg, const char *key, const char *value);
sl_status sl_config_set_flag(sl_config *cfg, const char *flag, const char *value);

/* Settles what depends on several settings (replicas from gpus, the metrics
 * address being optional unless set) and checks them together. Call once
 * after the last set; SL_ERR_INVALID_ARG names the settings to change. */
sl_status sl_config_resolve(sl_config *cfg);

/* The caption parameters (after sl_config_resolve); they and their strings
 * live until sl_config_free(). Callbacks and stop_requests are unset. */
const sl_caption_params *sl_config_params(const sl_config *cfg);
sl_config_console sl_config_console_settings(const sl_config *cfg);

/* True when the setting named by `key` was set (by a file or a flag), not
 * left at its default. */
bool sl_config_is_set(const sl_config *cfg, const char *key);

/* A message of the caption checks and run (sl_caption_check(),
 * sl_caption_run()), which name settings by their flags ("--choices: 1
 * given"), said in the terms the settings were given in: a setting a job
 * file set is named by its key, and the message begins with the file's
 * FILE:LINE:COLUMN of the first such setting it names; a setting at its
 * default takes the style of the first set one it names (its key in a job
 * file's terms where none is). A config built from flags alone gives the
 * message back as it is. Writes at most `size` bytes, '\0' included. */
void sl_config_explain(const sl_config *cfg, const char *msg, char *buf, size_t size);

/* Writes every setting, defaults included, as a job file that
 * sl_config_load_file() reads back to the same settings, one comment per
 * key. SL_ERR_INVALID_ARG when a string is not UTF-8 (YAML cannot hold it);
 * SL_ERR_IO when writing fails. */
sl_status sl_config_write_yaml(const sl_config *cfg, FILE *fp);

#ifdef __cplusplus
}
#endif
#endif
