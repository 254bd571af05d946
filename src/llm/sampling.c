/* llm/sampling.c — generation settings and per-row seeds. */
#include "core/hash.h"
#include "sluice/engine.h"

sl_sampling sl_sampling_default(void)
{
    return (sl_sampling){
        .temperature = 0.0f,
        .top_p = 1.0f,
        .min_p = 0.0f,
        .repeat_penalty = 1.0f,
        .top_k = 0,
        .max_tokens = 64,
        .seed = 0,
    };
}

bool sl_sampling_penalizes(const sl_sampling *s)
{
    return s->repeat_penalty != 1.0f || s->presence_penalty != 0.0f ||
           s->frequency_penalty != 0.0f;
}

uint64_t sl_sampling_row_seed(uint64_t job_seed, const char *row_id)
{
    return sl_hash_mix64(job_seed ^ sl_hash_fnv1a64(row_id ? row_id : ""));
}

uint64_t sl_sampling_answer_seed(uint64_t seed, int k)
{
    return k == 0 ? seed : sl_hash_mix64(seed ^ (0x9E3779B97F4A7C15ull * (uint64_t)k));
}
