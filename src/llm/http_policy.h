/* llm/http_policy.h — the decisions of the OpenAI-compatible engine that do
 * not need a socket: which answers are retried, how long to wait before the
 * next attempt (exponential backoff with full jitter, never less than the
 * server's Retry-After up to a bound), when a fleet that never answers is
 * given up, which endpoint takes the next request, and how the adaptive mode
 * moves an endpoint's in-flight limit. Pure functions: no
 * globals, no locks; the caller owns every struct. */
#ifndef SL_LLM_HTTP_POLICY_H
#define SL_LLM_HTTP_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* 408, 409, 429 and 5xx are worth another attempt; other answers are final. */
bool http_policy_retriable(long code);
/* Whether an answer counts against the endpoint's health (it may be down):
 * no answer (code 0), 408 and 5xx. 429 and 409 mean busy, not broken. */
bool http_policy_endpoint_fault(long code);

/* Seconds before attempt `attempt` + 1 (attempt >= 1 failed so far): a
 * uniform draw from [0, min(cap_s, base_s * 2^(attempt-1))], raised to
 * retry_after_s when the server asked for longer (retry_after_s < 0: it did
 * not) but not past retry_after_max_s: a longer Retry-After is not obeyed
 * (the draw alone), as OpenAI's own client does, so that no server can
 * park a request for a day. *rng is a xorshift state the caller keeps. */
double http_policy_backoff_s(int attempt, double base_s, double cap_s, double retry_after_s,
                             double retry_after_max_s, uint64_t *rng);

/* A Retry-After header value: delay-seconds ("120") or an HTTP-date,
 * relative to `now`. Seconds to wait (>= 0), or -1 when it cannot be parsed. */
double http_policy_retry_after(const char *value, time_t now);

/* An attempt waiting this long for its answer is being worked on (a long
 * generation, not a refusal): it holds off http_policy_stalled(). */
#define HTTP_POLICY_BUSY_S 10.0

/* Whether the engine should give up on its fleet: since failing_since
 * (< 0: not failing) every attempt that ended failed in a way worth
 * retrying, 429s included, for at least all_down_s, and no attempt in
 * progress has been running for HTTP_POLICY_BUSY_S (running_s: the age of
 * the oldest one, 0 when none). A busy fleet that still answers some
 * requests never trips it: each answer clears failing_since. */
bool http_policy_stalled(double now, double failing_since, double running_s, double all_down_s);

typedef struct http_endpoint_view {
    int in_flight;      /* requests outstanding */
    int limit;          /* in-flight limit */
    double down_until;  /* out of rotation until then (monotonic seconds) */
    bool probing;       /* back from a cool-down: one request until one succeeds */
    uint64_t last_pick; /* when it last got a request (a sequence number) */
} http_endpoint_view;

/* The endpoint for the next request: the fewest outstanding among those in
 * rotation with room; ties go to the one picked longest ago. -1: none. */
int http_policy_pick(const http_endpoint_view *eps, size_t n, double now);

/* The adaptive mode, once per window: raise the limit while throughput
 * rises (and the limit was reached, so it was what held it back); lower it
 * when latency climbs and throughput does not follow. Returns the new
 * limit, within [1, max_limit]. */
int http_policy_adapt(int limit, int max_limit, bool saturated, double prev_rps, double rps,
                      double prev_latency_s, double latency_s);

/* An endpoint answered 429 (busy) to a request it was sent as number
 * sent_seq: the in-flight limit halves (at least 1) when that request went
 * out after the last cut (*cut_seq), which then moves to last_seq, the
 * latest request sent; else the limit is kept. The requests of one burst
 * are refused together: one cut answers them all, not one each. */
int http_policy_busy_cut(int limit, uint64_t sent_seq, uint64_t last_seq, uint64_t *cut_seq);

/* An endpoint answered a request while its limit sat below ceiling (cut by
 * 429s): one more in flight after `limit` answers since the last change
 * (*answered counts them), up to ceiling: additive increase, so a limit
 * found too high is approached again slowly. */
int http_policy_busy_recover(int limit, int ceiling, int *answered);

#endif
