/* config/config_yaml.c — reading a YAML job file into an sl_config (libyaml).
 *
 * The file is walked as libyaml's event stream against the settings table
 * (config.c): a mapping of sections, each a mapping of keys, each a scalar
 * or a sequence of scalars (the stages' list: of mappings too, each handed
 * on as a JSON object's text). Anything else is refused at once, naming the
 * file, line and column, the key and what it allows; so memory stays bounded
 * by the file (at most SL_CONFIG_MAX_FILE_BYTES) and nesting by the schema,
 * whatever the file holds. Anchors, aliases, tags and merge keys (<<) are
 * refused: a job file has no use for them, and an alias would let a small
 * file name one value many times. A key given twice in a mapping is an error (YAML says keys are
 * unique; libyaml does not check). A plain `~`, `null` or nothing resets a
 * key to its default, so `config print`'s ~ reads back as it was meant. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <yaml.h>

#include "config/config_impl.h"
#include "core/alloc.h"
#include "core/error.h"
#include "core/utf8.h"

enum { MAX_SEEN = 48, MAX_KEY = 96 };

typedef struct loader {
    sl_config *cfg;
    const char *name;
    const char *text; /* the file's bytes, for where a reader error is */
    size_t len;
    yaml_parser_t parser;
    yaml_event_t ev;
    bool have_ev;
    size_t *line_of; /* each setting's line in the file, 0 while not given: a
                        dotted key at the top and its nested form are one key */
} loader;

static void at(const loader *ld, yaml_mark_t m, char *buf, size_t size)
{
    snprintf(buf, size, "%s:%zu:%zu: ", ld->name, m.line + 1, m.column + 1);
}

static const char *event_name(yaml_event_type_t t)
{
    switch (t) {
    case YAML_SCALAR_EVENT: return "a value";
    case YAML_SEQUENCE_START_EVENT: return "a list";
    case YAML_MAPPING_START_EVENT: return "a mapping";
    case YAML_ALIAS_EVENT: return "an alias";
    default: return "something else";
    }
}

/* libyaml's reader (decoding) errors come with a byte offset and no line:
 * the line and column (in characters) of byte `off`. A byte that is not
 * UTF-8 is named where it is, not where libyaml noticed the sequence broken
 * (the byte after it). */
static sl_status reader_error(const loader *ld)
{
    size_t off = ld->parser.problem_offset, bad = ld->len;
    if (ld->parser.encoding == YAML_UTF8_ENCODING)
        bad = sl_utf8_valid_prefix(ld->text, ld->len);
    if (bad < ld->len)
        off = bad;
    size_t line = 1, column = 1;
    for (size_t i = 0; i < off && i < ld->len; i++) {
        if (ld->text[i] == '\n')
            line++, column = 1;
        else if (((unsigned char)ld->text[i] & 0xC0) != 0x80)
            column++;
    }
    if (bad < ld->len)
        return sl_fail(SL_ERR_INVALID_ARG, "%s:%zu:%zu: byte 0x%02X is not UTF-8: a job file is "
                       "UTF-8 text; save it as UTF-8 (iconv -f latin1 -t utf-8, or your editor)",
                       ld->name, line, column, (unsigned char)ld->text[bad]);
    int v = ld->parser.problem_value;
    char value[96] = "";
    if (v >= 0 && (v < 0x20 || v == 0x7F))
        snprintf(value, sizeof value, " (0x%02X): write it as an escape in a double-quoted "
                 "string (\"\\x%02X\")", (unsigned)v, (unsigned)v);
    else if (v >= 0)
        snprintf(value, sizeof value, " (0x%02X)", (unsigned)v);
    return sl_fail(SL_ERR_INVALID_ARG, "%s:%zu:%zu: YAML: %s%s", ld->name, line, column,
                   ld->parser.problem ? ld->parser.problem : "not readable", value);
}

/* The byte that starts the character at mark m (UTF-8), or -1 past the
 * end: found by its line and column, which count the same way whatever
 * libyaml's index counts. */
static int char_at(const loader *ld, yaml_mark_t m)
{
    size_t i = 0, line = 0, column = 0;
    for (; i < ld->len && line < m.line; i++)
        line += ld->text[i] == '\n';
    for (; i < ld->len && column <= m.column; i++)
        if (((unsigned char)ld->text[i] & 0xC0) != 0x80 && column++ == m.column)
            return (unsigned char)ld->text[i];
    return -1;
}

static sl_status next(loader *ld)
{
    if (ld->have_ev)
        yaml_event_delete(&ld->ev);
    ld->have_ev = false;
    if (!yaml_parser_parse(&ld->parser, &ld->ev)) {
        if (ld->parser.error == YAML_MEMORY_ERROR)
            return sl_fail(SL_ERR_NOMEM, "%s: out of memory reading it", ld->name);
        if (ld->parser.error == YAML_READER_ERROR)
            return reader_error(ld);
        char where[256];
        at(ld, ld->parser.problem_mark, where, sizeof where);
        /* A tab where YAML wants an indent is the usual cause, and
         * libyaml's words ("found character that cannot start any token")
         * do not say it. */
        bool tab = ld->parser.encoding == YAML_UTF8_ENCODING &&
                   char_at(ld, ld->parser.problem_mark) == '\t';
        return sl_fail(SL_ERR_INVALID_ARG, "%sYAML syntax: %s%s%s%s", where,
                       ld->parser.problem ? ld->parser.problem : "not readable",
                       ld->parser.context ? " " : "",
                       ld->parser.context ? ld->parser.context : "",
                       tab ? ": indent with spaces, not tabs" : "");
    }
    ld->have_ev = true;
    return SL_OK;
}

static sl_status fail_here(const loader *ld, const char *fmt, const char *a, const char *b)
{
    char where[256];
    at(ld, ld->ev.start_mark, where, sizeof where);
    return sl_fail(SL_ERR_INVALID_ARG, "%s%s%s%s", where, a, fmt, b ? b : "");
}

/* Anchors, aliases and tags have no meaning in a job file. */
static sl_status plain_node(const loader *ld)
{
    const yaml_event_t *e = &ld->ev;
    const yaml_char_t *anchor = NULL, *tag = NULL;
    if (e->type == YAML_ALIAS_EVENT)
        return fail_here(ld, "aliases (*name) are not used in job files: write the value", "",
                         NULL);
    if (e->type == YAML_SCALAR_EVENT) {
        anchor = e->data.scalar.anchor;
        tag = e->data.scalar.tag;
    } else if (e->type == YAML_SEQUENCE_START_EVENT) {
        anchor = e->data.sequence_start.anchor;
        tag = e->data.sequence_start.tag;
    } else if (e->type == YAML_MAPPING_START_EVENT) {
        anchor = e->data.mapping_start.anchor;
        tag = e->data.mapping_start.tag;
    }
    if (anchor)
        return fail_here(ld, "anchors (&name) are not used in job files", "", NULL);
    if (tag)
        return fail_here(ld, "tags (!name) are not used in job files: write the value alone", "",
                         NULL);
    return SL_OK;
}

static bool is_null(const yaml_event_t *e)
{
    if (e->type != YAML_SCALAR_EVENT || e->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return false;
    const char *v = (const char *)e->data.scalar.value;
    return !*v || !strcmp(v, "~") || !strcmp(v, "null") || !strcmp(v, "Null") ||
           !strcmp(v, "NULL");
}

/* The current scalar's text; refused when it holds a NUL ("\0" escape). */
static sl_status scalar_text(const loader *ld, const char *key, const char **text)
{
    const char *v = (const char *)ld->ev.data.scalar.value;
    if (strlen(v) != ld->ev.data.scalar.length)
        return fail_here(ld, " holds a NUL character", key, NULL);
    *text = v;
    return SL_OK;
}

/* A plain scalar's JSON value as YAML reads it: null, true/false, an
 * integer, a number, else text; a quoted scalar is always text. */
static json_t *scalar_json(const yaml_event_t *e)
{
    const char *v = (const char *)e->data.scalar.value;
    size_t n = e->data.scalar.length;
    if (e->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) {
        if (is_null(e))
            return json_null();
        if (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "TRUE"))
            return json_true();
        if (!strcmp(v, "false") || !strcmp(v, "False") || !strcmp(v, "FALSE"))
            return json_false();
        char *end;
        errno = 0;
        long long i = strtoll(v, &end, 10);
        if (!errno && end != v && !*end)
            return json_integer(i);
        double d = strtod(v, &end);
        if (end != v && !*end && isfinite(d))
            return json_real(d);
    }
    return json_stringn(v, n);
}

enum { MAX_DEPTH = 16 };

/* The node that starts at the current event (a mapping, a list or a
 * scalar) as JSON: a stage's settings, handed on as a JSON object's text.
 * Nesting is bounded; keys are text and unique. */
static sl_status node_json(loader *ld, int depth, json_t **out)
{
    sl_status st;
    *out = NULL;
    if ((st = plain_node(ld)) != SL_OK)
        return st;
    if (depth > MAX_DEPTH)
        return fail_here(ld, "nested too deep (more than 16 levels)", "", NULL);
    yaml_event_type_t t = ld->ev.type;
    if (t == YAML_SCALAR_EVENT) {
        if (strlen((const char *)ld->ev.data.scalar.value) != ld->ev.data.scalar.length)
            return fail_here(ld, "a value holds a NUL character", "", NULL);
        if (!(*out = scalar_json(&ld->ev)))
            return sl_fail(SL_ERR_NOMEM, "%s: out of memory reading it", ld->name);
        return SL_OK;
    }
    if (t != YAML_MAPPING_START_EVENT && t != YAML_SEQUENCE_START_EVENT)
        return fail_here(ld, "expected a value, a list or a mapping; this is ", "",
                         event_name(t));
    json_t *node = t == YAML_MAPPING_START_EVENT ? json_object() : json_array();
    if (!node)
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory reading it", ld->name);
    for (;;) {
        if ((st = next(ld)) != SL_OK)
            break;
        if (ld->ev.type == YAML_MAPPING_END_EVENT || ld->ev.type == YAML_SEQUENCE_END_EVENT) {
            *out = node;
            return SL_OK;
        }
        char key[MAX_KEY] = "";
        if (t == YAML_MAPPING_START_EVENT) {
            if ((st = plain_node(ld)) != SL_OK)
                break;
            const char *k = (const char *)ld->ev.data.scalar.value;
            if (ld->ev.type != YAML_SCALAR_EVENT || ld->ev.data.scalar.length >= MAX_KEY ||
                strlen(k) != ld->ev.data.scalar.length) {
                st = fail_here(ld, "a key must be a short name", "", NULL);
                break;
            }
            snprintf(key, sizeof key, "%s", k);
            if (json_object_get(node, key)) {
                char msg[MAX_KEY + 40];
                snprintf(msg, sizeof msg, "'%s' is given twice; keep one", key);
                st = fail_here(ld, msg, "", NULL);
                break;
            }
            if ((st = next(ld)) != SL_OK)
                break;
        }
        json_t *child;
        if ((st = node_json(ld, depth + 1, &child)) != SL_OK)
            break;
        if ((t == YAML_MAPPING_START_EVENT ? json_object_set_new(node, key, child)
                                           : json_array_append_new(node, child)) != 0) {
            st = sl_fail(SL_ERR_NOMEM, "%s: out of memory reading it", ld->name);
            break;
        }
    }
    json_decref(node);
    return st;
}

static sl_status value(loader *ld, int i, const char *key)
{
    sl_status st;
    char where[256];
    if ((st = next(ld)) != SL_OK || (st = plain_node(ld)) != SL_OK)
        return st;
    at(ld, ld->ev.start_mark, where, sizeof where);
    bool list = sl_config_option_is_list(i);
    sl_config_option o;
    sl_config_option_at((size_t)i, &o);
    /* what it takes, in words: engine's (E) is llama|openai */
    const char *shape = o.is_switch ? "true or false"
                        : sl_config_option_choices(i) ? sl_config_option_choices(i) : o.arg;
    const char *text = NULL;
    switch (ld->ev.type) {
    case YAML_SCALAR_EVENT:
        if (is_null(&ld->ev))
            return sl_config_set_at(ld->cfg, i, NULL, false, where, key);
        if ((st = scalar_text(ld, key, &text)) != SL_OK)
            return st;
        if (list && (st = sl_config_touch_list(ld->cfg, i, where, key)) != SL_OK)
            return st;
        return sl_config_set_at(ld->cfg, i, text, true, where, key);
    case YAML_SEQUENCE_START_EVENT:
        if (!list) {
            char what[160];
            snprintf(what, sizeof what, " takes one value (%s), not a list", shape);
            return fail_here(ld, what, key, NULL);
        }
        if ((st = sl_config_touch_list(ld->cfg, i, where, key)) != SL_OK)
            return st;
        for (;;) {
            if ((st = next(ld)) != SL_OK || (st = plain_node(ld)) != SL_OK)
                return st;
            if (ld->ev.type == YAML_SEQUENCE_END_EVENT)
                return SL_OK;
            if (ld->ev.type == YAML_MAPPING_START_EVENT && sl_config_option_takes_mappings(i)) {
                at(ld, ld->ev.start_mark, where, sizeof where);
                json_t *item = NULL;
                if ((st = node_json(ld, 0, &item)) != SL_OK)
                    return st;
                char *item_text = json_dumps(item, JSON_COMPACT);
                json_decref(item);
                if (!item_text)
                    return sl_fail(SL_ERR_NOMEM, "%s: out of memory reading it", ld->name);
                st = sl_config_set_at(ld->cfg, i, item_text, false, where, key);
                free(item_text);
                if (st != SL_OK)
                    return st;
                continue;
            }
            if (ld->ev.type != YAML_SCALAR_EVENT)
                return fail_here(ld, " is a list of single values; this item is ", key,
                                 event_name(ld->ev.type));
            if (is_null(&ld->ev))
                return fail_here(ld, ": an item is empty", key, NULL);
            at(ld, ld->ev.start_mark, where, sizeof where);
            if ((st = scalar_text(ld, key, &text)) != SL_OK ||
                (st = sl_config_set_at(ld->cfg, i, text, false, where, key)) != SL_OK)
                return st;
        }
    default: {
        char what[600];
        int w = snprintf(what, sizeof what, " takes %s (%s), not %s", list ? "a list" : "one value",
                         shape, event_name(ld->ev.type));
        if (ld->ev.type == YAML_MAPPING_START_EVENT) {
            /* `engine: {parallel: 2}`, the key taken for a section: where
             * the mapping's first key goes */
            yaml_mark_t start = ld->ev.start_mark;
            if ((st = next(ld)) != SL_OK)
                return st;
            char meant[400] = "";
            const char *k = (const char *)ld->ev.data.scalar.value;
            if (ld->ev.type == YAML_SCALAR_EVENT && strlen(k) == ld->ev.data.scalar.length &&
                strlen(k) < MAX_KEY)
                sl_config_elsewhere("", k, meant, sizeof meant);
            if (meant[0] && w > 0 && (size_t)w < sizeof what)
                snprintf(what + w, sizeof what - (size_t)w, "; for '%s' did you mean %s?", k,
                         meant);
            at(ld, start, where, sizeof where);
            return sl_fail(SL_ERR_INVALID_ARG, "%s%s%s", where, key, what);
        }
        return fail_here(ld, what, key, NULL);
    }
    }
}

static sl_status mapping(loader *ld, const char *prefix);

static sl_status unknown_key(loader *ld, const char *prefix, const char *key)
{
    char allowed[1024], near[64], meant[400], msg[1800];
    sl_config_children(prefix, key, allowed, sizeof allowed, near, sizeof near);
    const char *dot = strrchr(key, '.'), *last = dot ? dot + 1 : key;
    const char *instead = sl_config_foreign_missing(last, strlen(last));
    if (instead) { /* min_tokens is no max_tokens misspelt */
        snprintf(msg, sizeof msg, "unknown %s '%s'%s%s; %s; allowed: %s",
                 *prefix ? "key" : "section or key", key, *prefix ? " in " : "", prefix, instead,
                 allowed);
        return fail_here(ld, msg, "", NULL);
    }
    /* the same name elsewhere says more than a near spelling here */
    sl_config_elsewhere(prefix, key, meant, sizeof meant);
    if (!meant[0] && near[0])
        snprintf(meant, sizeof meant, "'%s'", near);
    snprintf(msg, sizeof msg, "unknown %s '%s'%s%s; %s%s%s: %s", *prefix ? "key" : "section or key",
             key, *prefix ? " in " : "", prefix, meant[0] ? "did you mean " : "", meant,
             meant[0] ? "? allowed" : "allowed", allowed);
    return fail_here(ld, msg, "", NULL);
}

/* `full` given again here, first on line `first`. */
static sl_status given_twice(const loader *ld, const char *full, size_t first)
{
    char msg[300];
    snprintf(msg, sizeof msg, " is given twice (first on line %zu); keep one", first);
    return fail_here(ld, msg, full, NULL);
}

static sl_status mapping(loader *ld, const char *prefix)
{
    struct { char name[MAX_KEY]; size_t line; } seen[MAX_SEEN];
    int n_seen = 0;
    sl_status st;
    for (;;) {
        if ((st = next(ld)) != SL_OK || (st = plain_node(ld)) != SL_OK)
            return st;
        if (ld->ev.type == YAML_MAPPING_END_EVENT)
            return SL_OK;
        if (ld->ev.type != YAML_SCALAR_EVENT)
            return fail_here(ld, "a key must be a name; this is ", "", event_name(ld->ev.type));
        const char *k = (const char *)ld->ev.data.scalar.value;
        size_t klen = ld->ev.data.scalar.length;
        char full[2 * MAX_KEY + 2];
        if (klen >= MAX_KEY || strlen(k) != klen)
            return unknown_key(ld, prefix, "(a long or odd name)");
        if (strcmp(k, "<<") == 0 && ld->ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE)
            return fail_here(ld, "merge keys (<<) are not used in job files: write the keys", "",
                             NULL);
        snprintf(full, sizeof full, "%s%s%s", prefix, *prefix ? "." : "", k);
        for (int s = 0; s < n_seen; s++)
            if (strcmp(seen[s].name, k) == 0)
                return given_twice(ld, full, seen[s].line);
        if (n_seen < MAX_SEEN) {
            snprintf(seen[n_seen].name, MAX_KEY, "%s", k);
            seen[n_seen++].line = ld->ev.start_mark.line + 1;
        }
        int i = sl_config_find_key(full, strlen(full));
        if (i >= 0 && ld->line_of[i])
            return given_twice(ld, full, ld->line_of[i]);
        if (i >= 0) {
            ld->line_of[i] = ld->ev.start_mark.line + 1;
            if ((st = value(ld, i, full)) != SL_OK)
                return st;
            continue;
        }
        if (!sl_config_is_section(full, strlen(full)))
            return unknown_key(ld, prefix, k);
        if ((st = next(ld)) != SL_OK || (st = plain_node(ld)) != SL_OK)
            return st;
        if (ld->ev.type == YAML_MAPPING_START_EVENT) {
            if ((st = mapping(ld, full)) != SL_OK)
                return st;
        } else if (!is_null(&ld->ev)) {
            char allowed[1024], near[64], msg[1200];
            sl_config_children(full, "", allowed, sizeof allowed, near, sizeof near);
            snprintf(msg, sizeof msg, " is a section: write its keys (%s) indented under it, "
                     "not %s", allowed, event_name(ld->ev.type));
            return fail_here(ld, msg, full, NULL);
        }
    }
}

static sl_status load(loader *ld)
{
    sl_status st;
    if ((st = next(ld)) != SL_OK) /* stream start */
        return st;
    if ((st = next(ld)) != SL_OK)
        return st;
    if (ld->ev.type == YAML_STREAM_END_EVENT)
        return SL_OK; /* an empty file: every default */
    if ((st = next(ld)) != SL_OK || (st = plain_node(ld)) != SL_OK)
        return st;
    if (ld->ev.type == YAML_MAPPING_START_EVENT) {
        if ((st = mapping(ld, "")) != SL_OK)
            return st;
    } else if (!is_null(&ld->ev)) {
        return fail_here(ld, "a job file is a mapping of sections and keys (engine: ..., "
                             "input: ..., llama: ...); this is ", "", event_name(ld->ev.type));
    }
    if ((st = next(ld)) != SL_OK) /* document end */
        return st;
    if ((st = next(ld)) != SL_OK)
        return st;
    if (ld->ev.type != YAML_STREAM_END_EVENT)
        return fail_here(ld, "a job file holds one YAML document; another starts here", "",
                         NULL);
    return SL_OK;
}

sl_status sl_config_load_text(sl_config *cfg, const char *text, size_t len, const char *name)
{
    if (len > SL_CONFIG_MAX_FILE_BYTES)
        return sl_fail(SL_ERR_INVALID_ARG,
                       "%s is larger than %d bytes: a job file holds settings, not data (a long "
                       "list of inputs goes in a manifest)", name, SL_CONFIG_MAX_FILE_BYTES);
    loader ld = {.cfg = cfg, .name = name, .text = text, .len = len};
    if (!(ld.line_of = sl_calloc(sl_config_option_count(), sizeof *ld.line_of)))
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory reading it", name);
    if (!yaml_parser_initialize(&ld.parser)) {
        sl_free(ld.line_of);
        return sl_fail(SL_ERR_NOMEM, "%s: out of memory reading it", name);
    }
    yaml_parser_set_input_string(&ld.parser, (const unsigned char *)text, len);
    sl_config_begin_layer(cfg);
    sl_status st = load(&ld);
    if (ld.have_ev)
        yaml_event_delete(&ld.ev);
    yaml_parser_delete(&ld.parser);
    sl_free(ld.line_of);
    return st;
}

sl_status sl_config_load_file(sl_config *cfg, const char *path)
{
    FILE *fp = fopen(path, "rbe");
    if (!fp)
        return sl_fail(errno == ENOENT ? SL_ERR_NOT_FOUND : SL_ERR_IO,
                       "job file '%s': %s", path, strerror(errno));
    char *buf = sl_malloc(SL_CONFIG_MAX_FILE_BYTES + 1);
    if (!buf) {
        fclose(fp);
        return sl_fail(SL_ERR_NOMEM, "out of memory reading job file '%s'", path);
    }
    size_t n = fread(buf, 1, SL_CONFIG_MAX_FILE_BYTES + 1, fp);
    int err = ferror(fp) ? errno : 0;
    fclose(fp);
    sl_status st;
    if (err == EISDIR) /* `sluice run photos/`: the inputs go after the job file */
        st = sl_fail(SL_ERR_INVALID_ARG, "job file '%s' is a folder: give a YAML job file first "
                     "(sluice run JOB.yaml [INPUT...]), or caption a folder with sluice caption",
                     path);
    else if (err)
        st = sl_fail(SL_ERR_IO, "job file '%s': %s", path, strerror(err));
    else
        st = sl_config_load_text(cfg, buf, n, path);
    sl_free(buf);
    return st;
}
