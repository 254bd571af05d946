/* llm/engine_impl.h — what an engine backend provides: a table of
 * functions behind the opaque sl_engine. Backends live in llm/engines/.
 * submit() copies what it keeps of the request; poll() hands over
 * completions the caller clears. */
#ifndef SL_LLM_ENGINE_IMPL_H
#define SL_LLM_ENGINE_IMPL_H

#include <stdbool.h>
#include <stdint.h>

#include "sluice/engine.h"

typedef struct sl_engine_ops {
    const char *kind;
    sl_status (*submit)(void *impl, const sl_request *request, void *tag);
    sl_status (*poll)(void *impl, sl_completion *out, size_t max, int timeout_ms, size_t *n);
    size_t (*in_flight)(const void *impl);
    void (*stats)(const void *impl, sl_engine_stats *out);
    const char *(*model_name)(const void *impl);
    /* Optional: sl_engine_default_system. */
    const char *(*default_system)(const void *impl);
    void (*free)(void *impl);
    /* sl_engine_check_choices. tokens (NULL: not wanted): each form's
     * first token, as sl_engine_choice_tokens gives them (-1 each where
     * the engine does not know them: the openai engine's are the
     * server's). */
    sl_status (*check_choices)(void *impl, const char *who, const char *system_prompt,
                               const char *prompt, const char *const *choices, int n,
                               int32_t *tokens);
    /* Optional (HTTP engines): per-endpoint state. */
    size_t (*endpoint_count)(const void *impl);
    void (*endpoint_stats)(const void *impl, size_t i, sl_endpoint_stats *out);
    /* Optional: sl_engine_cancel_queued (absent: the engine runs what it
     * holds). Any thread. */
    void (*cancel_queued)(void *impl);
} sl_engine_ops;

/* The first tokens of the forms each choice is answered in, as
 * sl_engine_check_choices finds them (for tests and diagnostics):
 * SL_CHOICE_VARIANTS per choice into tokens (n * SL_CHOICE_VARIANTS
 * entries): as written, after a space, with the first letter's case
 * swapped, both; -1 where a form does not apply, begins with white space
 * alone, or is tokens already counted (llama_choice.h). */
#define SL_CHOICE_VARIANTS 4
sl_status sl_engine_choice_tokens(sl_engine *engine, const char *system_prompt,
                                  const char *prompt, const char *const *choices, int n,
                                  int32_t *tokens);

/* The other case of an ASCII letter, as a model may begin a choice ("Yes"
 * for "yes"); '\0' for any other byte. */
static inline char sl_choice_other_case(char c)
{
    bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    return letter ? (char)(c ^ 0x20) : '\0';
}

/* The choice a row takes from its scores p (n, summing to 1): the
 * highest (the first of equals) at temperature 0, else a draw from the
 * scores raised to 1/temperature with a uniform from `seed` (splitmix64:
 * the same seed draws the same). */
int sl_choice_pick(const double *p, int n, float temperature, uint64_t seed);

/* Each choice's score as the JSON text of sl_result.scores ({"choice":
 * score, ...} in order); NULL when out of memory. */
char *sl_choice_scores_json(const char *const *choices, const double *p, int n);

/* A request's tasks (or answers, sampling.n > 1) on their way back. A
 * backend turns a request with tasks into one piece of work per task
 * (sl_task_request), or per answer (sl_answer_request), and records each
 * outcome here; the last one makes the request's completion. Recording is
 * the backend's business to serialize (its own thread does it). */
typedef struct sl_task_group sl_task_group;

/* NULL when out of memory. */
sl_task_group *sl_task_group_new(void *tag, int n_tasks);

/* Task i of q as a request of its own: its prompt, system prompt,
 * sampling (with q's n: every task answered as many times), JSON schema
 * and choices (those it has), no tasks, task_name NAME (borrowed from
 * q->tasks, as the strings above are) and the id "ID, task NAME"
 * (*id_out, sl_free; NULL when out of memory). */
void sl_task_request(const sl_request *q, int i, sl_request *out, char **id_out);

/* Piece i of a request with tasks or n > 1 answers, as a request of its
 * own: with tasks, task i / n's answer i % n (sl_task_request, then
 * sl_answer_request when n > 1), else answer i. */
void sl_piece_request(const sl_request *q, int i, sl_request *out, char **id_out);

/* Answer k of q (sampling.n > 1) as a request of its own: q with the
 * answer's seed (sl_sampling_answer_seed), n 1, and the id "ID, answer
 * K+1" (*id_out, sl_free; NULL when out of memory). */
void sl_answer_request(const sl_request *q, int k, sl_request *out, char **id_out);

/* A prompt with several images (n_images > 0, no messages; a video's
 * frames) as the conversation it stands for: a system message when there is
 * a system prompt, then one user message of parts [image_texts[0], image 0,
 * ..., prompt] (absent or empty texts left out). Written into *c (the
 * caller's storage; q's strings and images borrowed) and returned; any other
 * request is returned as it is. */
typedef struct sl_prompt_conversation {
    sl_request req;
    sl_message messages[2];
    sl_content_part system, parts[2 * SL_MAX_IMAGES + 1];
} sl_prompt_conversation;
const sl_request *sl_prompt_as_conversation(const sl_request *q, sl_prompt_conversation *c);

/* Records task i's outcome: result (its strings taken) when status is
 * SL_OK or SL_ERR_INVALID_OUTPUT (an answer its schema refused), else
 * error. When it was the last, fills *out with the request's completion:
 * the results in task order, or the first failure, one SL_ERR_STOPPED
 * before any other (a task not sent makes the request one to do again; the
 * other answers freed); a first failure SL_ERR_INVALID_OUTPUT keeps the
 * results too, the refused one's as it came (its row fails with their
 * tokens and finish reasons, as a request of one answer does). Frees the
 * group and returns true. */
bool sl_task_group_record(sl_task_group *g, int i, sl_status status, const char *error,
                          sl_result *result, sl_completion *out);

/* Gives up one task without an outcome (the engine is being freed); the
 * last share frees the group, without a completion. */
void sl_task_group_drop(sl_task_group *g);

/* The chat.completion object of an answer, as OpenAI's API writes it (JSON
 * text, sl_free; NULL when out of memory): id (from sl_chat_completion_id
 * when `id` is NULL), object, created (unix seconds; 0: now), model,
 * choices[0] {index, message {role assistant, content: text}, finish_reason,
 * logprobs null} and usage {prompt_tokens, completion_tokens, total_tokens,
 * prompt_tokens_details.cached_tokens}. For sl_result.response_json. */
char *sl_chat_completion_json(const char *id, const char *model, long long created,
                              const sl_result *result);

/* A fresh "chatcmpl-" id (24 hex digits after it), unique within the
 * process and, with a per-process random start, across processes: writes
 * at most cap bytes (34 are enough). Any thread. */
void sl_chat_completion_id(char *out, size_t cap);

/* Wraps a backend; takes ownership of impl (freed by ops->free even when
 * this fails). */
sl_status sl_engine_wrap(const sl_engine_ops *ops, void *impl, sl_engine **out);

#endif
