/* llm/engines/llama_sample.h — the llama engine's host token choice, on
 * its own for tests: greedy as an argmax, a llama.cpp sampler chain run
 * on a candidate array that leaves out what cannot be drawn (top-p run
 * here, with llama.cpp's arithmetic, when the chain leaves it out), and a
 * row constrained by a grammar (llama_grammar.h). Pure functions of their
 * arguments; any thread (one chain and one candidate buffer per thread). */
#ifndef SL_LLM_LLAMA_SAMPLE_H
#define SL_LLM_LLAMA_SAMPLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/engine.h"

struct llama_sampler;

/* The bytes of a candidate buffer for n tokens: n llama_token_data
 * (SL_LLAMA_TOKEN_DATA_SIZE each, checked where llama.h is seen), then the
 * scratch of the host's top-p (3n uint64_t, 8-aligned). */
#define SL_LLAMA_TOKEN_DATA_SIZE 12
#define SL_LLAMA_CAND_ROOM(n) (((size_t)(n) * SL_LLAMA_TOKEN_DATA_SIZE + 7) / 8 * 8)
#define SL_LLAMA_CAND_BYTES(n) (SL_LLAMA_CAND_ROOM(n) + (size_t)(n) * 3 * sizeof(uint64_t))

/* Does the host run this row's top-p itself (a chain made without_top_p,
 * sampled with own_top_p)? Sampled rows (T > 0) with top-p < 1 and
 * neither top-k nor a repetition penalty: llama.cpp's top-p then sorts
 * every candidate of each step; the host's sorts only the few bands of
 * logits that can hold the nucleus. */
bool sl_llama_host_top_p(const sl_sampling *s);

/* The chain a row with these settings samples with (repetition penalty,
 * top-k, top-p unless without_top_p, min-p, temperature, dist seeded with
 * s->seed; greedy at temperature 0); freed with sl_llama_free_chain. */
struct llama_sampler *sl_llama_make_chain(const sl_sampling *s, int n_vocab, bool without_top_p);
void sl_llama_free_chain(struct llama_sampler *chain);

/* The first index of the largest logit (llama.cpp's greedy choice). */
int32_t sl_llama_argmax(const float *logits, int n);

/* The gap between the best and the second-best logit. */
float sl_llama_top2_margin(const float *logits, int n);

/* Runs `chain` (llama_sampler_chain_init's) over the logits, accepts and
 * returns its token. With prefilter, tokens more than 30 * max(1, T)
 * below the best logit are left out of the candidates (see
 * llama_sample.c). With own_top_p (chain made without_top_p), top-p with
 * sp->top_p runs here first, as llama.cpp's would but for the order of
 * tokens of equal logit (by id here; llama.cpp's sort leaves it open).
 * cand_buf: SL_LLAMA_CAND_BYTES(n) bytes (owned by the caller);
 * *n_candidates (optional): how many went in. */
int32_t sl_llama_sample_chain(struct llama_sampler *chain, const float *logits, int n,
                              const sl_sampling *sp, bool prefilter, bool own_top_p,
                              void *cand_buf, size_t *n_candidates);

/* A grammar row's token (llama_sampler_init_grammar's `grammar`; `chain`
 * as above, made with top-p, or NULL for greedy): the choice without the grammar when the
 * grammar allows it, else the choice among the tokens it allows (the
 * grammar applied to all n, then the 30 * max(1, T) cut below the best
 * allowed one). Accepts the token into both; -1 when the grammar allows
 * none (nothing accepted). *n_candidates (optional): 1 when the first
 * choice stood, else the allowed candidates the choice was made among. */
int32_t sl_llama_sample_grammar(struct llama_sampler *grammar, struct llama_sampler *chain,
                                const float *logits, int n, const sl_sampling *sp, void *cand_buf,
                                size_t *n_candidates);

/* The log-probabilities of the model's distribution over the n tokens
 * (the log-softmax of the raw logits: before temperature, penalties,
 * top-k/p or a grammar; what vLLM reports by default and llama-server
 * computes): `chosen`'s is returned, and the n_top most likely go into
 * top_ids/top_logprobs best first (equal logits: the lower id first);
 * slots past n are -inf. The normalizer is summed in double over the
 * logits within 30 of the largest (the others change it by less than a
 * float's resolution): one pass that skips blocks out of reach. */
float sl_llama_logprobs(const float *logits, int n, int32_t chosen, int n_top, int32_t *top_ids,
                        float *top_logprobs);

#endif
