/* job/turns.h — --turns last: a row's conversation as the engine's
 * messages, so the model answers its last human turn with the turns before
 * it in context (docs/inputs.md, "Conversations").
 *
 * A conversation is a JSON array of LLaVA/ShareGPT turns ({"from": "human"
 * | "gpt" | "system", "value": TEXT}) or chat messages ({"role": "user" |
 * "assistant" | "system", "content": TEXT | [{"type": "text", "text": ...},
 * {"type": "image"}]}). Every turn up to the last human/user turn that says
 * something becomes a message; what follows it (the dataset's own answer)
 * is left out; a turn that says nothing is no message, but an empty
 * answer is (the roles keep alternating). The row's images go where the
 * user turns mark them: the placeholder in a text (`<image>`) or an image
 * part, slot k at marker k;
 * a conversation without markers has them all before the first user
 * turn's text. Asked up to an earlier question, the messages hold the
 * images of the turns they hold. A conversation without a system turn gets the job's system
 * prompt first.
 *
 * turns_build() makes the messages and owns them, their parts and their
 * texts until turns_clear(); the parts point at the slots' parts too, which
 * must live as long. Not thread-safe: one owner. */
#ifndef SL_JOB_TURNS_H
#define SL_JOB_TURNS_H

#include <jansson.h>

#include "sluice/engine.h"

/* What goes at one marker: the parts of one image (its text, then the image
 * part), or of a video's frames. */
typedef struct turn_slot {
    const sl_content_part *parts;
    int n;
} turn_slot;

typedef struct turns {
    sl_message *messages;
    int n_messages;     /* 0: no user turn, the row keeps its prompt */
    sl_content_part *parts;
    int n_parts;
    char **texts;
    int n_texts;
    int n_questions;    /* its user turns that say something, all of them */
    int n_images;       /* image parts in the messages (the slots' first ones) */
} turns;

/* The messages of `conversation` into *t, up to its question `question`
 * (its user turns that say something, from 0; -1: the last). SL_OK with
 * t->n_messages 0 when it is not an array holding such a user turn. A
 * failure names `row` and the turn (0-based, as in the array): a role
 * other than human/user, gpt/assistant/bot/model and system, a turn that
 * is not an object, markers that do not match n_slots (video: the slots
 * are one video's frames), more than 256 messages, SL_ERR_NOMEM. `mark`
 * NULL or "": only image parts mark. */
sl_status turns_build(const json_t *conversation, const char *system_prompt, const char *mark,
                      const turn_slot *slots, int n_slots, bool video, int question,
                      const char *row, turns *t);

void turns_clear(turns *t);

/* --turns all: `answer` written into `conversation` as question
 * `question`'s answer, in the conversation's own form: in place of the
 * assistant turn after it (the assistant turns following that one go), or
 * a new turn there. SL_ERR_INVALID_ARG when it has no such question;
 * SL_ERR_NOMEM. */
sl_status turns_answer(json_t *conversation, int question, const char *answer);

#endif
