/* llm/engines/llama_choice.h — a row's choices scored whole, on its own
 * for tests. A choice may be answered in several forms (as written, after
 * a space, with its first letter's case swapped, both: SL_CHOICE_VARIANTS),
 * each a run of tokens after the prompt. Forms of different choices that
 * begin alike (`the cat`, `the dog`; `1`, `10`) part somewhere: the engine
 * decodes their common beginning after the prompt (a probe) and reads the
 * model where they part. A choice's score is the share of the answers
 * that lead to it:
 *  - after the prompt, each first token's probability, over the forms'
 *    first tokens together;
 *  - where forms of different choices part, each next token's
 *    probability; a form that ends there (`1` beside `10`) takes the rest
 *    (1 minus the others': whatever the model says next, the answer was
 *    that choice); without such a form the next tokens share it all;
 *  - where all the forms left belong to one choice, nothing more is read.
 * With forms that all begin differently this is the first token's share
 * alone, and no probe is needed.
 * Tokens are int32 ids and logits a row of n_vocab floats: no llama.cpp
 * here. The tree belongs to its request (who frees it); one thread at a
 * time uses it. */
#ifndef SL_LLM_LLAMA_CHOICE_H
#define SL_LLM_LLAMA_CHOICE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

/* The tokens of a form that are looked at: two choices alike for longer
 * cannot be told apart. */
#define SL_CHOICE_DEPTH 32

typedef struct sl_choice_tree sl_choice_tree;

/* A tree for n_choices choices of n_forms forms each; NULL when out of
 * memory. */
sl_choice_tree *sl_choice_tree_new(int n_choices, int n_forms);
void sl_choice_tree_free(sl_choice_tree *t);

/* Form `form` (0: as written) of choice `choice`: its tokens after the
 * prompt (the first SL_CHOICE_DEPTH kept). A form not set does not count. */
void sl_choice_tree_set(sl_choice_tree *t, int choice, int form, const int32_t *tokens, int n);

/* Settles the forms once all are set: a form with the same tokens as one
 * of the same choice before it counts once; a form other than the one as
 * written with the same tokens as another choice's counts for neither.
 * Then finds the probes. SL_ERR_INVALID_ARG, naming `who` and the two
 * choices (names[]), when two choices as written are the same tokens or
 * begin with the same SL_CHOICE_DEPTH. */
sl_status sl_choice_tree_plan(sl_choice_tree *t, const char *who, const char *const *names);

/* The first token of a form (-1: it does not count). */
int32_t sl_choice_tree_first(const sl_choice_tree *t, int choice, int form);

/* The probes (after sl_choice_tree_plan): how many; probe k's tokens
 * (*tokens: valid while t lives; the count returned) and after which of
 * them the model is read (bit j of *reads: after tokens [0, j]). */
int sl_choice_tree_probes(const sl_choice_tree *t);
int sl_choice_tree_probe(const sl_choice_tree *t, int k, const int32_t **tokens, uint32_t *reads);

/* Positions after the prompt a row needs: its longest probe, at least 1. */
int sl_choice_tree_room(const sl_choice_tree *t);

/* The model read after the prompt, and after token j of probe k. */
void sl_choice_tree_read_root(sl_choice_tree *t, const float *logits);
/* After the root's read: does probe k matter? Not when the answers that
 * begin with its first token are under SL_CHOICE_NEGLIGIBLE of the
 * choices' (their share is then split evenly among its choices: a score
 * off by less than that, below the 6 digits written). */
#define SL_CHOICE_NEGLIGIBLE 1e-7
bool sl_choice_tree_probe_needed(const sl_choice_tree *t, int k);
void sl_choice_tree_read(sl_choice_tree *t, int k, int j, const float *logits, int n_vocab);

/* Each choice's score from the reads (after the root's and every probe's):
 * n_choices values that sum to 1 into p. */
void sl_choice_tree_scores(const sl_choice_tree *t, double *p);

#endif
