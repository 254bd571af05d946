/* llm/engines/llama_sample.c — the llama engine's host token choice
 * (llama_sample.h): greedy as an argmax, llama.cpp's sampler chain on the
 * candidates that can be drawn, top-p run here with llama.cpp's arithmetic,
 * and grammar rows. Pure functions of their arguments. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "llama.h"

#include "llm/engines/llama_sample.h"

_Static_assert(sizeof(llama_token_data) == SL_LLAMA_TOKEN_DATA_SIZE,
               "llama_sample.h sizes candidate arrays for another llama_token_data");

/* The scans over every logit of a row run once per sequence and step. The
 * build targets any x86-64 (SSE2: 4 floats at a time); the machines that
 * run 128 sequences have AVX2 or AVX-512, which the loader picks (GCC's
 * target_clones: one copy per target, chosen once at load). */
/* (Not in the sanitizer builds: their instrumented ifunc resolvers run
 * before the sanitizer's runtime is up.) */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    !defined(__SANITIZE_THREAD__) && !defined(__SANITIZE_ADDRESS__)
#define WIDE_SCAN __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define WIDE_SCAN
#endif

bool sl_llama_host_top_p(const sl_sampling *s)
{
    return s->temperature > 0.0f && s->top_p < 1.0f && s->top_k <= 0 && !sl_sampling_penalizes(s);
}

struct llama_sampler *sl_llama_make_chain(const sl_sampling *s, int n_vocab, bool without_top_p)
{
    struct llama_sampler *chain = llama_sampler_chain_init(llama_sampler_chain_default_params());
    if (s->repeat_penalty != 1.0f)
        llama_sampler_chain_add(chain, llama_sampler_init_penalties(n_vocab, 64,
                                                                    s->repeat_penalty, 0.0f, 0.0f));
    /* Over the whole answer, as vLLM counts them (up to the window), not
     * the repeat penalty's last 64 tokens: a second instance. */
    if (s->presence_penalty != 0.0f || s->frequency_penalty != 0.0f) {
        int window = s->max_tokens < SL_PENALTY_WINDOW ? s->max_tokens : SL_PENALTY_WINDOW;
        llama_sampler_chain_add(chain, llama_sampler_init_penalties(n_vocab, window, 1.0f,
                                                                    s->frequency_penalty,
                                                                    s->presence_penalty));
    }
    if (s->temperature <= 0.0f) {
        llama_sampler_chain_add(chain, llama_sampler_init_greedy());
        return chain;
    }
    if (s->top_k > 0)
        llama_sampler_chain_add(chain, llama_sampler_init_top_k(s->top_k));
    if (s->top_p < 1.0f && !without_top_p)
        llama_sampler_chain_add(chain, llama_sampler_init_top_p(s->top_p, 1));
    if (s->min_p > 0.0f)
        llama_sampler_chain_add(chain, llama_sampler_init_min_p(s->min_p, 1));
    llama_sampler_chain_add(chain, llama_sampler_init_temp(s->temperature));
    /* LLAMA_DEFAULT_SEED (0xFFFFFFFF) means "random": never pass it. */
    uint32_t seed = (uint32_t)(s->seed ^ (s->seed >> 32));
    if (seed == LLAMA_DEFAULT_SEED)
        seed = 0x5EED;
    llama_sampler_chain_add(chain, llama_sampler_init_dist(seed));
    return chain;
}

void sl_llama_free_chain(struct llama_sampler *chain)
{
    if (chain)
        llama_sampler_free(chain);
}

/* The largest logit. Sixteen running maxima let the compiler vectorize
 * the scan of 150k floats at any width. */
WIDE_SCAN static float max_logit(const float *x, int n)
{
    float lane[16];
    for (int k = 0; k < 16; k++)
        lane[k] = -INFINITY;
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int k = 0; k < 16; k++)
            lane[k] = x[i + k] > lane[k] ? x[i + k] : lane[k];
    float best = -INFINITY;
    for (int k = 0; k < 16; k++)
        best = lane[k] > best ? lane[k] : best;
    for (; i < n; i++)
        best = x[i] > best ? x[i] : best;
    return best;
}

/* The first index of the largest logit: what llama.cpp's greedy sampler
 * picks (ties go to the lowest id), without building its 150k-entry
 * candidate array. The second scan stops at the maximum and reads what the
 * first left in the core's cache. */
int32_t sl_llama_argmax(const float *x, int n)
{
    float best = max_logit(x, n);
    for (int i = 0; i < n; i++)
        if (x[i] == best)
            return i;
    return 0; /* every logit NaN or -inf: llama.cpp's greedy picks 0 too */
}

float sl_llama_top2_margin(const float *logits, int n)
{
    float a = -INFINITY, b = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (logits[i] > a) {
            b = a;
            a = logits[i];
        } else if (logits[i] > b) {
            b = logits[i];
        }
    }
    return a - b;
}

/* Does any of the 16 logits from x reach cut? (One vector compare.) */
static inline bool any_of_16(const float *x, float cut)
{
    int any = 0;
    for (int j = 0; j < 16; j++)
        any |= x[j] >= cut;
    return any;
}

/* The tokens whose logit is at least `cut`, ids ascending, into cand.
 * Nearly every block of 64 holds none, and of those that do, one of its
 * quarters: the tests vectorize, the copy runs over 16 logits per hit. */
WIDE_SCAN static size_t gather_candidates(const float *x, int n, float cut,
                                           llama_token_data *cand)
{
    size_t k = 0;
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        int any = 0;
        for (int j = 0; j < 64; j++)
            any |= x[i + j] >= cut;
        if (!any)
            continue;
        for (int q = i; q < i + 64; q += 16) {
            if (!any_of_16(x + q, cut))
                continue;
            for (int j = q; j < q + 16; j++)
                if (x[j] >= cut)
                    cand[k++] = (llama_token_data){.id = j, .logit = x[j], .p = 0.0f};
        }
    }
    for (; i < n; i++)
        if (x[i] >= cut)
            cand[k++] = (llama_token_data){.id = i, .logit = x[i], .p = 0.0f};
    return k;
}

/* A float's bits as an unsigned key that sorts as the float does. */
static uint32_t float_key(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u & 0x80000000u ? ~u : u | 0x80000000u;
}

/* Sorts key[0..n) (the high 32 bits hold ~float_key(logit), the low the
 * position) ascending by their high half, keeping the order of equal ones:
 * logits falling, ties by position. LSD radix, a byte a pass, through tmp. */
static void sort_by_logit(uint64_t *key, uint64_t *tmp, size_t n)
{
    for (int shift = 32; shift < 64; shift += 8) {
        size_t count[257] = {0};
        for (size_t i = 0; i < n; i++)
            count[((key[i] >> shift) & 0xff) + 1]++;
        if (count[((key[0] >> shift) & 0xff) + 1] == n)
            continue; /* every key has this byte: the pass would not move any */
        for (int b = 0; b < 256; b++)
            count[b + 1] += count[b];
        for (size_t i = 0; i < n; i++)
            tmp[count[(key[i] >> shift) & 0xff]++] = key[i];
        memcpy(key, tmp, n * sizeof *key);
    }
}

/* llama.cpp's top-p (llama_sampler_top_p with min_keep 1) over cand[0..n),
 * ids ascending, with its arithmetic: the softmax of the logits, summed in
 * this order in float; then the tokens by falling logit, their
 * probabilities added in float until the sum reaches top_p. Leaves that
 * nucleus at the front of cand, sorted, with .p set, and returns its size.
 * llama.cpp sorts every candidate (a heap of hundreds, often more); here
 * only those of the buckets of logits that can hold the nucleus are sorted.
 * The one difference: tokens of equal logit go by id here, in an order
 * llama.cpp's sort leaves open. scratch: 3n uint64_t. */
static size_t top_p_nucleus(llama_token_data *cand, size_t n, float top_p, uint64_t *scratch)
{
    if (n == 0)
        return 0;
    float max_l = cand[0].logit;
    for (size_t i = 1; i < n; i++)
        max_l = max_l < cand[i].logit ? cand[i].logit : max_l; /* std::max */
    float sum = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float p = expf(cand[i].logit - max_l);
        cand[i].p = p;
        sum += p;
    }
    float min_l = max_l;
    for (size_t i = 0; i < n; i++) {
        cand[i].p /= sum;
        min_l = cand[i].logit < min_l ? cand[i].logit : min_l;
    }
    /* The mass of each of 256 bands of logit below the best, in double:
     * the nucleus lies within the first bands whose mass reaches top_p.
     * One band more covers the float sums' rounding; should the float sum
     * still fall short, every band goes in. */
    enum { BANDS = 256 };
    double mass[BANDS] = {0};
    float span = max_l - min_l;
    float scale = span > 0.0f && isfinite(span) ? (BANDS - 1) / span : 0.0f;
    for (size_t i = 0; i < n; i++) {
        float b = (max_l - cand[i].logit) * scale;
        mass[b >= 0.0f && b < BANDS ? (int)b : BANDS - 1] += cand[i].p;
    }
    int last_band = 0;
    double cum = 0.0;
    while (last_band < BANDS - 1 && (cum += mass[last_band]) < (double)top_p)
        last_band++;
    if (last_band < BANDS - 1)
        last_band++;
    uint64_t *key = scratch, *tmp = scratch + n;
    for (int whole = 0; whole < 2; whole++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            float b = (max_l - cand[i].logit) * scale;
            if (whole || (b >= 0.0f && b < BANDS && (int)b <= last_band))
                key[m++] = (uint64_t)(~float_key(cand[i].logit)) << 32 | (uint32_t)i;
        }
        sort_by_logit(key, tmp, m);
        float run = 0.0f;
        size_t kept = m;
        for (size_t i = 0; i < m; i++) {
            run += cand[(uint32_t)key[i]].p;
            if (run >= top_p) {
                kept = i + 1;
                break;
            }
        }
        if (kept < m || m == n || whole) {
            llama_token_data *out = (llama_token_data *)tmp; /* 2n uint64_t: room for n */
            for (size_t i = 0; i < kept; i++)
                out[i] = cand[(uint32_t)key[i]];
            memcpy(cand, out, kept * sizeof *cand);
            return kept;
        }
    }
    return n; /* not reached: the second round takes every candidate */
}

/* Runs chain over the logits without accepting its choice. */
static llama_token chain_pick(struct llama_sampler *chain, const float *logits, int n,
                              const sl_sampling *sp, bool prefilter, bool own_top_p,
                              llama_token_data *cand, size_t *n_candidates)
{
    /* Only tokens within 30 (times the temperature, when above 1) of the
     * best logit become candidates: each one left out has a probability
     * below e^-30 of the best one's, under 2e-8 for all 150k together, at
     * every step of the chain (top-k, top-p and min-p look at the top;
     * temperature and dist weigh exp((l - max) / T)), and adding one to a
     * float sum that holds the best one's 1 changes nothing. A trained
     * model puts most of its vocabulary far below that, so the chain sees
     * hundreds of candidates instead of 150k. A repetition penalty can
     * raise a logit (penalty < 1) or lower the best one: then every token
     * goes in. */
    size_t n_cand = 0;
    if (prefilter && !sl_sampling_penalizes(sp))
        n_cand = gather_candidates(logits, n, max_logit(logits, n) -
                                   30.0f * (sp->temperature > 1.0f ? sp->temperature : 1.0f),
                                   cand);
    if (n_cand == 0) {
        for (int i = 0; i < n; i++)
            cand[i] = (llama_token_data){.id = i, .logit = logits[i], .p = 0.0f};
        n_cand = (size_t)n;
    }
    if (n_candidates)
        *n_candidates = n_cand;
    llama_token_data_array arr = {.data = cand, .size = n_cand, .selected = -1, .sorted = false};
    if (own_top_p) {
        /* The scratch lies past the candidate array's room for n. */
        uint64_t *scratch = (uint64_t *)((char *)cand + SL_LLAMA_CAND_ROOM((size_t)n));
        arr.size = top_p_nucleus(cand, n_cand, sp->top_p, scratch);
        arr.sorted = true;
    }
    llama_sampler_apply(chain, &arr);
    return arr.selected >= 0 && (size_t)arr.selected < arr.size ? arr.data[arr.selected].id
                                                                : sl_llama_argmax(logits, n);
}

int32_t sl_llama_sample_chain(struct llama_sampler *chain, const float *logits, int n,
                              const sl_sampling *sp, bool prefilter, bool own_top_p,
                              void *cand_buf, size_t *n_candidates)
{
    llama_token tok = chain_pick(chain, logits, n, sp, prefilter, own_top_p, cand_buf,
                                 n_candidates);
    llama_sampler_accept(chain, tok);
    return tok;
}

/* Does the grammar allow tok next? (llama.cpp's grammar sets the logit of a
 * token it refuses to -inf; it never drops a candidate.) */
static bool grammar_allows(struct llama_sampler *grammar, llama_token tok, float logit)
{
    llama_token_data one = {.id = tok, .logit = logit, .p = 0.0f};
    llama_token_data_array arr = {.data = &one, .size = 1, .selected = -1, .sorted = false};
    llama_sampler_apply(grammar, &arr);
    return arr.data[0].logit != -INFINITY;
}

int32_t sl_llama_sample_grammar(struct llama_sampler *grammar, struct llama_sampler *chain,
                                const float *logits, int n, const sl_sampling *sp, void *cand_buf,
                                size_t *n_candidates)
{
    llama_token_data *cand = cand_buf;
    /* The choice without the grammar first: where the grammar allows it, it
     * is the choice with the grammar too (greedy: the best allowed token;
     * sampled: accepting an allowed draw and drawing again among the
     * allowed tokens otherwise gives each the same probability as drawing
     * among them at once), and checking one token costs a few
     * microseconds; the grammar over the whole vocabulary costs
     * milliseconds. llama.cpp's common sampler does the same. */
    llama_token tok = chain ? chain_pick(chain, logits, n, sp, true, false, cand, NULL)
                            : sl_llama_argmax(logits, n);
    if (n_candidates)
        *n_candidates = 1;
    if (!grammar_allows(grammar, tok, logits[tok])) {
        for (int i = 0; i < n; i++)
            cand[i] = (llama_token_data){.id = i, .logit = logits[i], .p = 0.0f};
        llama_token_data_array all = {.data = cand, .size = (size_t)n, .selected = -1,
                                      .sorted = false};
        llama_sampler_apply(grammar, &all);
        float best = -INFINITY;
        for (int i = 0; i < n; i++)
            best = cand[i].logit > best ? cand[i].logit : best;
        if (best == -INFINITY)
            return -1; /* nothing allowed: accepting anything would throw in llama.cpp */
        /* The tokens the grammar allows, cut (after the grammar, not before:
         * it may allow none of the best) at 30 * max(1, T) below the best
         * allowed one as sl_llama_sample_chain cuts; all of them under a
         * repetition penalty, which moves logits. */
        bool cut = !sl_sampling_penalizes(sp);
        float floor_ = best - 30.0f * (sp->temperature > 1.0f ? sp->temperature : 1.0f);
        size_t k = 0;
        for (int i = 0; i < n; i++)
            if (cand[i].logit != -INFINITY && (!cut || cand[i].logit >= floor_))
                cand[k++] = cand[i];
        if (n_candidates)
            *n_candidates = k;
        if (!chain) {
            tok = cand[0].id; /* ids ascend: the first best is the lowest id */
            for (size_t i = 0; i < k; i++)
                if (cand[i].logit == best) {
                    tok = cand[i].id;
                    break;
                }
        } else {
            llama_token_data_array arr = {.data = cand, .size = k, .selected = -1,
                                          .sorted = false};
            llama_sampler_apply(chain, &arr);
            tok = arr.selected >= 0 && (size_t)arr.selected < arr.size ? arr.data[arr.selected].id
                                                                       : cand[0].id;
        }
    }
    if (chain)
        llama_sampler_accept(chain, tok);
    llama_sampler_accept(grammar, tok);
    return tok;
}


/* Logits this far below the largest are left out of the normalizer: each
 * adds under e^-30, so 150k of them move the sum (at least 1) by under
 * 2e-8, below a float's resolution; a trained model's few hundred tokens
 * within reach are all that is exponentiated. */
#define LOGPROB_REACH 30.0f

/* Keeps logit v of token id among the n_top best so far (sorted; ties:
 * the earlier id first). */
static inline void keep_top(float v, int32_t id, int n_top, int *kept, int32_t *ids, float *vals)
{
    if (*kept == n_top && !(v > vals[n_top - 1]))
        return;
    int at = *kept < n_top ? (*kept)++ : n_top - 1;
    while (at > 0 && v > vals[at - 1]) {
        vals[at] = vals[at - 1];
        ids[at] = ids[at - 1];
        at--;
    }
    vals[at] = v;
    ids[at] = id;
}

WIDE_SCAN float sl_llama_logprobs(const float *logits, int n, int32_t chosen, int n_top,
                                  int32_t *top_ids, float *top_logprobs)
{
    float max = max_logit(logits, n);
    if (!(max > -INFINITY)) { /* every logit -inf or NaN: no distribution */
        for (int k = 0; k < n_top; k++) {
            top_ids[k] = k < n ? k : 0;
            top_logprobs[k] = -INFINITY;
        }
        return -INFINITY;
    }
    float reach = max - LOGPROB_REACH;
    double sum = 0.0;
    int kept = 0, i = 0;
    /* One pass: a block of 16 is looked at only when one of its logits is
     * within reach or beats the n_top-th best so far (one vector compare). */
    for (; i + 16 <= n; i += 16) {
        float need = kept < n_top ? -INFINITY : fminf(reach, top_logprobs[n_top - 1]);
        if (!any_of_16(logits + i, need))
            continue;
        for (int k = 0; k < 16; k++) {
            float v = logits[i + k];
            if (v >= reach)
                sum += expf(v - max);
            if (n_top > 0)
                keep_top(v, i + k, n_top, &kept, top_ids, top_logprobs);
        }
    }
    for (; i < n; i++) {
        if (logits[i] >= reach)
            sum += expf(logits[i] - max);
        if (n_top > 0)
            keep_top(logits[i], i, n_top, &kept, top_ids, top_logprobs);
    }
    double log_z = (double)max + log(sum);
    for (int k = 0; k < kept; k++)
        top_logprobs[k] = (float)((double)top_logprobs[k] - log_z);
    for (int k = kept; k < n_top; k++) {
        top_ids[k] = 0;
        top_logprobs[k] = -INFINITY;
    }
    return chosen >= 0 && chosen < n ? (float)((double)logits[chosen] - log_z) : -INFINITY;
}
