/* llm/engines/llama_sample.h — the llama engine's host token choice, on
 * its own for tests: greedy as an argmax, a llama.cpp sampler chain run
 * on a candidate array that leaves out what cannot be drawn, and a row
 * constrained by a grammar (llama_grammar.h). Pure
 * functions of their arguments; any thread (one chain per thread). */
#ifndef SL_LLM_LLAMA_SAMPLE_H
#define SL_LLM_LLAMA_SAMPLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/engine.h"

struct llama_sampler;

/* The chain a row with these settings samples with (repetition penalty,
 * top-k, top-p, min-p, temperature, dist seeded with s->seed; greedy at
 * temperature 0); freed with sl_llama_free_chain. */
struct llama_sampler *sl_llama_make_chain(const sl_sampling *s, int n_vocab);
void sl_llama_free_chain(struct llama_sampler *chain);

/* The first index of the largest logit (llama.cpp's greedy choice). */
int32_t sl_llama_argmax(const float *logits, int n);

/* Runs `chain` (llama_sampler_chain_init's) over the logits, accepts and
 * returns its token. With prefilter, tokens more than 30 * max(1, T)
 * below the best logit are left out of the candidates (see llama.c).
 * cand_buf: room for n llama_token_data (owned by the caller);
 * *n_candidates (optional): how many went in. */
int32_t sl_llama_sample_chain(struct llama_sampler *chain, const float *logits, int n,
                              const sl_sampling *sp, bool prefilter, void *cand_buf,
                              size_t *n_candidates);

/* A grammar row's token (llama_sampler_init_grammar's `grammar`; `chain`
 * as above, or NULL for greedy): the choice without the grammar when the
 * grammar allows it, else the choice among the tokens it allows (the
 * grammar applied to all n, then the 30 * max(1, T) cut below the best
 * allowed one). Accepts the token into both; -1 when the grammar allows
 * none (nothing accepted). *n_candidates (optional): 1 when the first
 * choice stood, else the allowed candidates the choice was made among. */
int32_t sl_llama_sample_grammar(struct llama_sampler *grammar, struct llama_sampler *chain,
                                const float *logits, int n, const sl_sampling *sp, void *cand_buf,
                                size_t *n_candidates);

#endif
