/* job/turns.c — a row's conversation as the engine's messages (turns.h). */
#include "job/turns.h"

#include <string.h>

#include "core/alloc.h"
#include "core/error.h"

/* The engine's own limit (sl_engine_submit refuses more). */
#define TURNS_MAX_MESSAGES 256

typedef struct builder {
    turns *t;
    int cap_parts, cap_texts;
    int *first_part;            /* per message: its first part's index */
    const turn_slot *slots;
    int n_slots;
    int markers;
    const char *mark;
} builder;

static const char *engine_role(const char *who)
{
    static const char *const users[] = {"human", "user"};
    static const char *const assistants[] = {"gpt", "assistant", "bot", "model", "chatgpt"};
    for (size_t i = 0; i < sizeof users / sizeof users[0]; i++)
        if (strcmp(who, users[i]) == 0)
            return "user";
    for (size_t i = 0; i < sizeof assistants / sizeof assistants[0]; i++)
        if (strcmp(who, assistants[i]) == 0)
            return "assistant";
    return strcmp(who, "system") == 0 ? "system" : NULL;
}

/* A turn's speaker and what it said, in either form. */
static const char *speaker(const json_t *turn, const json_t **said)
{
    const char *who = json_string_value(json_object_get(turn, "from"));
    *said = json_object_get(turn, "value");
    if (!who) {
        who = json_string_value(json_object_get(turn, "role"));
        *said = json_object_get(turn, "content");
    }
    return who;
}

static bool add_part(builder *b, const char *text)
{
    turns *t = b->t;
    if (t->n_parts == b->cap_parts) {
        int cap = b->cap_parts ? 2 * b->cap_parts : 16;
        sl_content_part *parts = sl_realloc(t->parts, (size_t)cap * sizeof *parts);
        if (!parts)
            return false;
        t->parts = parts;
        b->cap_parts = cap;
    }
    t->parts[t->n_parts++].text = text;
    return true;
}

static bool add_text(builder *b, const char *s, size_t len)
{
    turns *t = b->t;
    if (!len)
        return true;
    if (t->n_texts == b->cap_texts) {
        int cap = b->cap_texts ? 2 * b->cap_texts : 16;
        char **texts = sl_realloc(t->texts, (size_t)cap * sizeof *texts);
        if (!texts)
            return false;
        t->texts = texts;
        b->cap_texts = cap;
    }
    char *copy = sl_strndup(s, len);
    if (!copy)
        return false;
    t->texts[t->n_texts++] = copy;
    return add_part(b, copy);
}

/* Marker k takes slot k; markers past the slots are counted only (the
 * count fails the row). */
static bool add_marker(builder *b)
{
    int k = b->markers++;
    for (int i = 0; k < b->n_slots && i < b->slots[k].n; i++)
        if (!add_part(b, b->slots[k].parts[i].text))
            return false;
    return true;
}

/* A text split at the placeholder, each marker its slot. (A C string: the
 * engine's texts end at a NUL as this does.) */
static bool add_marked_text(builder *b, const char *s)
{
    for (const char *m; b->mark && (m = strstr(s, b->mark)); s = m + strlen(b->mark))
        if (!add_text(b, s, (size_t)(m - s)) || !add_marker(b))
            return false;
    return add_text(b, s, strlen(s));
}

/* What a turn said: a string, or content parts (text parts one each, image
 * parts as markers, others left out as the first-turn prompt leaves them).
 * Only a user turn marks images (as chat APIs take them): a model's answer
 * that happens to hold the placeholder is text. */
static bool add_said(builder *b, const json_t *said, bool marks)
{
    const char *mark = b->mark;
    if (!marks)
        b->mark = NULL;
    bool ok = true;
    if (json_is_string(said))
        ok = add_marked_text(b, json_string_value(said));
    size_t k;
    json_t *part;
    json_array_foreach(said, k, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        const json_t *text = json_object_get(part, "text");
        if (type && strcmp(type, "image") == 0) {
            ok = !marks || add_marker(b);
        } else if ((!type || strcmp(type, "text") == 0) && json_is_string(text)) {
            ok = add_marked_text(b, json_string_value(text));
        }
        if (!ok)
            break;
    }
    b->mark = mark;
    return ok;
}

/* The slots' parts moved in at `at` (the conversation had no markers). */
static bool insert_slots(builder *b, int at)
{
    turns *t = b->t;
    int tail = t->n_parts - at, n = 0;
    for (int k = 0; k < b->n_slots; k++)
        for (int i = 0; i < b->slots[k].n; i++)
            if (!add_part(b, b->slots[k].parts[i].text))
                return false;
    n = t->n_parts - at - tail;
    /* [at, at+tail) is the tail, [at+tail, end) the slots: rotate. */
    sl_content_part *moved = sl_malloc((size_t)(n ? n : 1) * sizeof *moved);
    if (!moved)
        return false;
    memcpy(moved, t->parts + at + tail, (size_t)n * sizeof *moved);
    memmove(t->parts + at + n, t->parts + at, (size_t)tail * sizeof *moved);
    memcpy(t->parts + at, moved, (size_t)n * sizeof *moved);
    sl_free(moved);
    for (int i = 0; i < t->n_messages; i++)
        if (b->first_part[i] > at) /* the messages after the first user turn */
            b->first_part[i] += n;
    return true;
}

sl_status turns_build(const json_t *conversation, const char *system_prompt, const char *mark,
                      const turn_slot *slots, int n_slots, bool video, int question,
                      const char *row, turns *t)
{
    memset(t, 0, sizeof *t);
    if (!json_is_array(conversation) || json_array_size(conversation) == 0)
        return SL_OK;
    size_t n_turns = json_array_size(conversation);
    builder b = {.t = t, .slots = slots, .n_slots = n_slots, .mark = mark && *mark ? mark : NULL};
    /* A system message of the job's may go first: one more than the turns. */
    t->messages = sl_calloc(n_turns + 1, sizeof *t->messages);
    b.first_part = sl_calloc(n_turns + 1, sizeof *b.first_part);
    int *markers_after = sl_calloc(n_turns + 1, sizeof *markers_after);
    sl_status st = SL_OK;
    if (!t->messages || !b.first_part || !markers_after)
        goto nomem;
    bool has_system = false;
    size_t k;
    json_t *turn;
    json_array_foreach(conversation, k, turn) {
        const json_t *said;
        const char *who = json_is_object(turn) ? speaker(turn, &said) : NULL;
        if (!json_is_object(turn) || !who) {
            st = sl_fail(SL_ERR_INVALID_ARG, "%s: turn %zu of the conversation is not a turn "
                         "(an object with \"from\"/\"value\" or \"role\"/\"content\")", row, k);
            goto out;
        }
        const char *role = engine_role(who);
        if (!role) {
            st = sl_fail(SL_ERR_INVALID_ARG, "%s: turn %zu of the conversation is by '%.64s' "
                         "(known: human/user, gpt/assistant/bot/model, system)", row, k, who);
            goto out;
        }
        has_system = has_system || strcmp(role, "system") == 0;
    }
    if (!has_system && system_prompt && *system_prompt) {
        if (!add_part(&b, system_prompt))
            goto nomem;
        t->messages[0] = (sl_message){.role = "system", .n_parts = 1};
        t->n_messages = 1;
    }
    int last_user = -1, first_user = -1, final_user = -1;
    json_array_foreach(conversation, k, turn) {
        const json_t *said;
        const char *role = engine_role(speaker(turn, &said));
        int m = t->n_messages, before = t->n_parts;
        b.first_part[m] = before;
        bool user = strcmp(role, "user") == 0, assistant = strcmp(role, "assistant") == 0;
        if (!add_said(&b, said, user))
            goto nomem;
        /* A turn that says nothing is no message, but for an empty answer:
         * it keeps the turns taking their turns. */
        if (t->n_parts == before && !assistant)
            continue;
        t->messages[m] = (sl_message){.role = role, .n_parts = t->n_parts - before};
        markers_after[m] = b.markers;
        t->n_messages++;
        if (user) {
            if (question < 0 || t->n_questions == question)
                last_user = m;
            final_user = m;
            if (first_user < 0)
                first_user = m;
            t->n_questions++;
        }
    }
    if (last_user < 0) { /* nothing to answer: the row keeps its prompt */
        turns_clear(t);
        goto out;
    }
    /* The dataset's answer and whatever follows go (n_questions stays). */
    t->n_messages = last_user + 1;
    t->n_parts = b.first_part[last_user] + t->messages[last_user].n_parts;
    /* Markers count to the last question whichever is asked: a later
     * question's image joins when that question is asked. */
    int markers = markers_after[final_user];
    if (t->n_messages > TURNS_MAX_MESSAGES) {
        st = sl_fail(SL_ERR_INVALID_ARG, "%s: the conversation has %d messages up to its last "
                     "user turn, more than the %d a request may have", row, t->n_messages,
                     TURNS_MAX_MESSAGES);
        goto out;
    }
    if (markers && markers != n_slots) {
        st = sl_fail(SL_ERR_INVALID_ARG, "%s: the conversation has %d image marker%s (%s%s%s"
                     "image parts) for %d image%s%s", row, markers, markers == 1 ? "" : "s",
                     b.mark ? "'" : "", b.mark ? b.mark : "", b.mark ? "' or " : "",
                     n_slots, n_slots == 1 ? "" : "s",
                     video ? " (a video's frames go at one marker)" : "");
        goto out;
    }
    if (!markers && n_slots > 0) {
        int at = b.first_part[first_user];
        int before = t->n_parts;
        if (!insert_slots(&b, at))
            goto nomem;
        t->messages[first_user].n_parts += t->n_parts - before;
    }
    for (int i = 0; i < t->n_messages; i++)
        t->messages[i].parts = t->parts + b.first_part[i];
    for (int i = 0; i < t->n_parts; i++)
        t->n_images += !t->parts[i].text;
    goto out;
nomem:
    st = sl_fail(SL_ERR_NOMEM, "%s: out of memory building the conversation", row);
out:
    if (st != SL_OK)
        turns_clear(t);
    sl_free(b.first_part);
    sl_free(markers_after);
    return st;
}

void turns_clear(turns *t)
{
    for (int i = 0; i < t->n_texts; i++)
        sl_free(t->texts[i]);
    sl_free(t->texts);
    sl_free(t->parts);
    sl_free(t->messages);
    memset(t, 0, sizeof *t);
}

/* Whether a turn's content says something (as add_said would give parts). */
static bool says_something(const json_t *said)
{
    if (json_is_string(said))
        return json_string_value(said)[0] != '\0';
    size_t k;
    json_t *part;
    json_array_foreach(said, k, part) {
        const char *type = json_string_value(json_object_get(part, "type"));
        const char *text = json_string_value(json_object_get(part, "text"));
        if ((type && strcmp(type, "image") == 0) ||
            ((!type || strcmp(type, "text") == 0) && text && *text))
            return true;
    }
    return false;
}

static const char *role_at(const json_t *conversation, size_t i, const json_t **said)
{
    const json_t *turn = json_array_get(conversation, i);
    const char *who = json_is_object(turn) ? speaker(turn, said) : NULL;
    return who ? engine_role(who) : NULL;
}

sl_status turns_answer(json_t *conversation, int question, const char *answer)
{
    size_t n = json_array_size(conversation), at = n;
    int seen = 0;
    for (size_t i = 0; i < n && at == n; i++) {
        const json_t *said;
        const char *role = role_at(conversation, i, &said);
        if (role && strcmp(role, "user") == 0 && says_something(said) && seen++ == question)
            at = i;
    }
    if (at == n)
        return sl_fail(SL_ERR_INVALID_ARG, "the conversation has no question %d", question);
    const json_t *said = NULL, *question_said = NULL, *asked = json_array_get(conversation, at);
    speaker(asked, &question_said);
    const char *next = at + 1 < n ? role_at(conversation, at + 1, &said) : NULL;
    bool replace = next && strcmp(next, "assistant") == 0;
    bool llava = json_object_get(asked, "from") != NULL;
    /* Content parts where the turn replaced had them (a new turn: where the
     * question has them), so a typed column keeps its type. */
    json_t *content = json_is_array(replace ? said : question_said)
                          ? json_pack("[{s:s, s:s}]", "type", "text", "text", answer)
                          : json_string(answer);
    int bad = !content;
    if (!bad && replace) {
        json_t *turn = json_array_get(conversation, at + 1);
        bad = json_object_set(turn, json_object_get(turn, "from") ? "value" : "content", content);
        while (!bad && at + 2 < json_array_size(conversation) &&
               (next = role_at(conversation, at + 2, &said)) && strcmp(next, "assistant") == 0)
            bad = json_array_remove(conversation, at + 2);
    } else if (!bad) {
        json_t *turn = llava ? json_pack("{s:s, s:O}", "from", "gpt", "value", content)
                             : json_pack("{s:s, s:O}", "role", "assistant", "content", content);
        bad = !turn || json_array_insert_new(conversation, at + 1, turn);
    }
    json_decref(content);
    return bad ? sl_fail(SL_ERR_NOMEM, "out of memory writing an answer into the conversation")
               : SL_OK;
}
