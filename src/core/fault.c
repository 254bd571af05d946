/* core/fault.c — see core/fault.h. Test-only; costs one atomic load per
 * point when SLUICE_TEST_FAULTS is unset. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/fault.h"

enum { MAX_RULES = 16, MAX_POINT = 48 };

typedef struct rule {
    char point[MAX_POINT];
    long sleep_ms; /* > 0: pause; else fail with err */
    long value;    /* > 0: a number for sl_fault_value, no action */
    int err;
    long nth;      /* 0: every hit */
    bool from_nth; /* the Nth hit and every later one */
    atomic_long hits;
} rule;

static rule rules[MAX_RULES];
static int n_rules;
static bool trace;
/* 0: the environment not read yet; 1: off; 2: on. */
static atomic_int state;
static pthread_once_t env_once = PTHREAD_ONCE_INIT;

static const struct {
    const char *name;
    int err;
} errnos[] = {{"eio", EIO}, {"enospc", ENOSPC}, {"edquot", EDQUOT}, {"erofs", EROFS},
              {"eintr", EINTR}};

static int parse_action(rule *r, const char *a)
{
    char *end;
    if (*a >= '0' && *a <= '9') {
        r->value = strtol(a, &end, 10);
        return r->value > 0 && *end == '\0' ? 0 : -1;
    }
    if (strncmp(a, "sleep:", 6) == 0) {
        r->sleep_ms = strtol(a + 6, &end, 10);
        if (r->sleep_ms <= 0 || end == a + 6)
            return -1;
        a = end;
    } else {
        size_t n = strcspn(a, "@");
        for (size_t i = 0; i < sizeof errnos / sizeof *errnos; i++)
            if (strlen(errnos[i].name) == n && strncmp(a, errnos[i].name, n) == 0)
                r->err = errnos[i].err;
        if (!r->err)
            return -1;
        a += n;
    }
    if (*a == '\0')
        return 0;
    if (*a != '@')
        return -1;
    r->nth = strtol(a + 1, &end, 10);
    if (r->nth <= 0 || end == a + 1)
        return -1;
    r->from_nth = *end == '+';
    return *end == '\0' || (r->from_nth && end[1] == '\0') ? 0 : -1;
}

/* Parses `spec` into the rules; -1 when an item does not parse. */
static int parse(const char *spec)
{
    n_rules = 0;
    trace = false;
    char item[128];
    for (const char *s = spec; *s;) {
        size_t n = strcspn(s, ",");
        if (n >= sizeof item)
            return -1;
        memcpy(item, s, n);
        item[n] = '\0';
        s += n + (s[n] == ',');
        if (n == 0)
            continue;
        if (strcmp(item, "trace") == 0) {
            trace = true;
            continue;
        }
        char *eq = strchr(item, '=');
        if (!eq || eq == item || (size_t)(eq - item) >= MAX_POINT || n_rules == MAX_RULES)
            return -1;
        rule *r = &rules[n_rules];
        memset(r->point, 0, sizeof r->point);
        memcpy(r->point, item, (size_t)(eq - item));
        r->sleep_ms = 0;
        r->value = 0;
        r->err = 0;
        r->nth = 0;
        r->from_nth = false;
        atomic_store(&r->hits, 0);
        if (parse_action(r, eq + 1) != 0)
            return -1;
        n_rules++;
    }
    return 0;
}

int sl_fault_configure(const char *spec)
{
    atomic_store(&state, 1);
    if (!spec || !*spec)
        return 0;
    if (parse(spec) != 0) {
        n_rules = 0;
        trace = false;
        return -1;
    }
    atomic_store(&state, 2);
    return 0;
}

static void read_env(void)
{
    if (atomic_load(&state) != 0)
        return; /* configured by a test first */
    const char *spec = getenv("SLUICE_TEST_FAULTS");
    if (!spec || !*spec) {
        atomic_store(&state, 1);
        return;
    }
    if (parse(spec) != 0) {
        fprintf(stderr, "sluice: SLUICE_TEST_FAULTS='%s' does not parse (see src/core/fault.h); "
                        "no fault is injected\n", spec);
        n_rules = 0;
        trace = false;
        atomic_store(&state, 1);
        return;
    }
    fprintf(stderr, "sluice: test faults active: SLUICE_TEST_FAULTS='%s' (for tests only)\n", spec);
    atomic_store(&state, 2);
}

static void pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static const char *errno_name(int err)
{
    for (size_t i = 0; i < sizeof errnos / sizeof *errnos; i++)
        if (errnos[i].err == err)
            return errnos[i].name;
    return "?";
}

int sl_fault(const char *point, const char *detail)
{
    if (atomic_load_explicit(&state, memory_order_acquire) == 1)
        return 0;
    pthread_once(&env_once, read_env);
    if (atomic_load(&state) != 2)
        return 0;
    int saved = errno;
    int fail = 0;
    if (trace)
        fprintf(stderr, "sluice: test fault point %s (%s)\n", point, detail ? detail : "");
    for (int i = 0; i < n_rules; i++) {
        rule *r = &rules[i];
        if (r->value || strcmp(r->point, point) != 0)
            continue;
        long hit = atomic_fetch_add(&r->hits, 1) + 1;
        if (r->nth && hit != r->nth && !(r->from_nth && hit > r->nth))
            continue;
        if (r->sleep_ms > 0) {
            fprintf(stderr, "sluice: test fault point %s (%s): sleeping %ld ms\n", point,
                    detail ? detail : "", r->sleep_ms);
            pause_ms(r->sleep_ms);
        } else if (!fail) {
            fprintf(stderr, "sluice: test fault point %s (%s): failing with %s\n", point,
                    detail ? detail : "", errno_name(r->err));
            fail = r->err;
        }
    }
    errno = saved;
    return fail;
}

long sl_fault_value(const char *name, long otherwise)
{
    if (atomic_load_explicit(&state, memory_order_acquire) == 1)
        return otherwise;
    pthread_once(&env_once, read_env);
    if (atomic_load(&state) != 2)
        return otherwise;
    for (int i = 0; i < n_rules; i++)
        if (rules[i].value && strcmp(rules[i].point, name) == 0)
            return rules[i].value;
    return otherwise;
}
