/* llm/http_policy.c — see http_policy.h. */
#include <math.h>
#include <stdlib.h>

#include <curl/curl.h>

#include "llm/http_policy.h"

bool http_policy_retriable(long code)
{
    return code == 0 || code == 408 || code == 409 || code == 429 || (code >= 500 && code <= 599);
}

bool http_policy_endpoint_fault(long code)
{
    return code == 0 || code == 408 || (code >= 500 && code <= 599);
}

static double uniform01(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return (double)(x >> 11) / 9007199254740992.0; /* 2^53 */
}

double http_policy_backoff_s(int attempt, double base_s, double cap_s, double retry_after_s,
                             double retry_after_max_s, uint64_t *rng)
{
    if (attempt < 1)
        attempt = 1;
    double ceiling = base_s * ldexp(1.0, attempt > 60 ? 60 : attempt - 1);
    if (ceiling > cap_s)
        ceiling = cap_s;
    double wait = uniform01(rng) * ceiling;
    if (retry_after_s > retry_after_max_s)
        return wait;
    return retry_after_s > wait ? retry_after_s : wait;
}

bool http_policy_stalled(double now, double failing_since, double running_s, double all_down_s)
{
    return failing_since >= 0 && now - failing_since >= all_down_s &&
           running_s < HTTP_POLICY_BUSY_S;
}

double http_policy_retry_after(const char *value, time_t now)
{
    if (!value)
        return -1.0;
    while (*value == ' ' || *value == '\t')
        value++;
    if (*value >= '0' && *value <= '9') {
        char *end;
        double s = strtod(value, &end);
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n')
            end++;
        return *end || !(s >= 0.0) ? -1.0 : s;
    }
    time_t at = curl_getdate(value, NULL);
    if (at == (time_t)-1)
        return -1.0;
    return at > now ? difftime(at, now) : 0.0;
}

int http_policy_pick(const http_endpoint_view *eps, size_t n, double now)
{
    int best = -1;
    for (size_t i = 0; i < n; i++) {
        const http_endpoint_view *e = &eps[i];
        int limit = e->probing ? 1 : e->limit;
        if (e->down_until > now || e->in_flight >= limit)
            continue;
        if (best < 0 || e->in_flight < eps[best].in_flight ||
            (e->in_flight == eps[best].in_flight && e->last_pick < eps[best].last_pick))
            best = (int)i;
    }
    return best;
}

int http_policy_adapt(int limit, int max_limit, bool saturated, double prev_rps, double rps,
                      double prev_latency_s, double latency_s)
{
    int step = limit / 8 > 1 ? limit / 8 : 1;
    bool faster = rps > prev_rps * 1.05;
    if (saturated && (faster || prev_rps <= 0.0))
        limit += step;
    else if (!faster && prev_latency_s > 0.0 && latency_s > prev_latency_s * 1.2)
        limit -= step;
    if (limit > max_limit)
        limit = max_limit;
    return limit < 1 ? 1 : limit;
}

int http_policy_busy_cut(int limit, uint64_t sent_seq, uint64_t last_seq, uint64_t *cut_seq)
{
    if (sent_seq <= *cut_seq)
        return limit;
    *cut_seq = last_seq;
    return limit / 2 > 1 ? limit / 2 : 1;
}

int http_policy_busy_recover(int limit, int ceiling, int *answered)
{
    if (limit >= ceiling) {
        *answered = 0;
        return limit;
    }
    if (++*answered < limit)
        return limit;
    *answered = 0;
    return limit + 1;
}
