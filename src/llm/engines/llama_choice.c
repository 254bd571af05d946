/* llm/engines/llama_choice.c — choices scored whole (llama_choice.h). */
#include "llm/engines/llama_choice.h"

#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "core/alloc.h"

typedef struct form {
    int len;        /* tokens kept (0: the form does not count) */
    bool truncated; /* it had more than SL_CHOICE_DEPTH */
    bool dropped;   /* settled as not counting (plan) */
    int32_t tok[SL_CHOICE_DEPTH];
    /* p[0]: the first token's weight after the prompt (relative to the
     * forms' best); p[d]: tok[d]'s probability after tok[0, d), where a
     * probe read it. */
    float p[SL_CHOICE_DEPTH];
} form;

typedef struct probe {
    int form;       /* decodes this form's tokens [0, len) */
    int len;
    uint32_t reads; /* bit j: read after token j */
} probe;

struct sl_choice_tree {
    int n_choices, n_forms; /* n_forms per choice */
    form *forms;            /* n_choices * n_forms, choice-major */
    probe *probes;
    int *scratch;           /* forms' indexes, sorted in place by the walks */
    int n_probes;
    int room;
    double root_sum;        /* the first tokens' weights together (each token once) */
};

sl_choice_tree *sl_choice_tree_new(int n_choices, int n_forms)
{
    sl_choice_tree *t = sl_calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->n_choices = n_choices;
    t->n_forms = n_forms;
    t->forms = sl_calloc((size_t)n_choices * (size_t)n_forms, sizeof *t->forms);
    t->probes = sl_calloc((size_t)n_choices * (size_t)n_forms, sizeof *t->probes);
    t->scratch = sl_calloc((size_t)n_choices * (size_t)n_forms, sizeof *t->scratch);
    if (!t->forms || !t->probes || !t->scratch) {
        sl_choice_tree_free(t);
        return NULL;
    }
    t->room = 1;
    return t;
}

void sl_choice_tree_free(sl_choice_tree *t)
{
    if (!t)
        return;
    sl_free(t->forms);
    sl_free(t->probes);
    sl_free(t->scratch);
    sl_free(t);
}

void sl_choice_tree_set(sl_choice_tree *t, int choice, int form_index, const int32_t *tokens,
                        int n)
{
    form *f = &t->forms[choice * t->n_forms + form_index];
    f->len = n < SL_CHOICE_DEPTH ? n : SL_CHOICE_DEPTH;
    f->truncated = n > SL_CHOICE_DEPTH;
    memcpy(f->tok, tokens, (size_t)f->len * sizeof *tokens);
}

static bool same_tokens(const form *a, const form *b)
{
    return a->len == b->len && memcmp(a->tok, b->tok, (size_t)a->len * sizeof *a->tok) == 0;
}

/* The key forms are grouped by at depth d: the token there, or -1 where
 * the form ends. */
static int32_t key_at(const form *f, int d)
{
    return d < f->len ? f->tok[d] : -1;
}

/* Sorts idx[0, n) by their key at depth d (then by index: the same order
 * for the plan and the scores). */
static void sort_at(const sl_choice_tree *t, int *idx, int n, int d)
{
    for (int i = 1; i < n; i++) {
        int x = idx[i], k = i;
        int32_t kx = key_at(&t->forms[x], d);
        while (k > 0) {
            int y = idx[k - 1];
            int32_t ky = key_at(&t->forms[y], d);
            if (ky < kx || (ky == kx && y < x))
                break;
            idx[k] = y;
            k--;
        }
        idx[k] = x;
    }
}

/* The end of the group that starts at idx[lo] (sorted at depth d): the
 * first form after it with another key. */
static int group_end(const sl_choice_tree *t, const int *idx, int n, int lo, int d)
{
    int32_t key = key_at(&t->forms[idx[lo]], d);
    int hi = lo + 1;
    while (hi < n && key_at(&t->forms[idx[hi]], d) == key)
        hi++;
    return hi;
}

static sl_status alike_too_long(const char *who, const char *a, const char *b)
{
    return sl_fail(SL_ERR_INVALID_ARG,
                   "%s: choices '%.60s' and '%.60s' begin with the same %d tokens: make them "
                   "differ sooner",
                   who, a, b, SL_CHOICE_DEPTH);
}

/* The other choice among idx[0, n) than idx[0]'s, or -1: one choice alone. */
static int other_choice(const sl_choice_tree *t, const int *idx, int n)
{
    for (int i = 1; i < n; i++)
        if (idx[i] / t->n_forms != idx[0] / t->n_forms)
            return idx[i] / t->n_forms;
    return -1;
}

/* The forms idx[0, n), alike in their first d tokens: where they part
 * among choices, a probe reads the model (reads: its ancestors' reads).
 * *probed: a probe passes here. */
static sl_status plan_at(sl_choice_tree *t, int *idx, int n, int d, uint32_t reads, bool *probed,
                         const char *who, const char *const *names)
{
    *probed = false;
    int other = other_choice(t, idx, n);
    if (other < 0)
        return SL_OK;
    if (d >= SL_CHOICE_DEPTH)
        return alike_too_long(who, names[idx[0] / t->n_forms], names[other]);
    if (d > 0)
        reads |= 1u << (d - 1);
    sort_at(t, idx, n, d);
    bool below = false;
    for (int lo = 0, hi; lo < n; lo = hi) {
        hi = group_end(t, idx, n, lo, d);
        /* Forms ending here are alike whole: settled, one choice. */
        bool sub = false;
        sl_status st = key_at(&t->forms[idx[lo]], d) < 0
                           ? SL_OK
                           : plan_at(t, idx + lo, hi - lo, d + 1, reads, &sub, who, names);
        if (st != SL_OK)
            return st;
        below |= sub;
    }
    if (d > 0 && !below) {
        t->probes[t->n_probes++] = (probe){.form = idx[0], .len = d, .reads = reads};
        if (d > t->room)
            t->room = d;
    }
    *probed = d > 0;
    return SL_OK;
}

/* The counted forms' indexes into idx; how many. */
static int counted(const sl_choice_tree *t, int *idx)
{
    int n = 0;
    for (int k = 0; k < t->n_choices * t->n_forms; k++)
        if (t->forms[k].len > 0)
            idx[n++] = k;
    return n;
}

sl_status sl_choice_tree_plan(sl_choice_tree *t, const char *who, const char *const *names)
{
    int total = t->n_choices * t->n_forms;
    sl_status st = SL_OK;
    for (int a = 0; st == SL_OK && a < total; a++)
        for (int b = a + 1; st == SL_OK && b < total; b++) {
            const form *fa = &t->forms[a], *fb = &t->forms[b];
            if (fa->len == 0 || !same_tokens(fa, fb))
                continue;
            int ca = a / t->n_forms, cb = b / t->n_forms;
            bool written_a = a % t->n_forms == 0, written_b = b % t->n_forms == 0;
            if (ca == cb) {
                t->forms[b].dropped = true;
            } else if (written_a && written_b) {
                st = fa->truncated || fb->truncated
                         ? alike_too_long(who, names[ca], names[cb])
                         : sl_fail(SL_ERR_INVALID_ARG,
                                   "%s: choices '%.60s' and '%.60s' are the same tokens to the "
                                   "model: make them differ",
                                   who, names[ca], names[cb]);
            } else {
                t->forms[a].dropped |= !written_a;
                t->forms[b].dropped |= !written_b;
            }
        }
    for (int k = 0; k < total; k++)
        if (t->forms[k].dropped)
            t->forms[k].len = 0;
    t->n_probes = 0;
    t->room = 1;
    bool probed;
    if (st == SL_OK)
        st = plan_at(t, t->scratch, counted(t, t->scratch), 0, 0, &probed, who, names);
    return st;
}

int32_t sl_choice_tree_first(const sl_choice_tree *t, int choice, int form_index)
{
    const form *f = &t->forms[choice * t->n_forms + form_index];
    return f->len > 0 ? f->tok[0] : -1;
}

int sl_choice_tree_probes(const sl_choice_tree *t)
{
    return t->n_probes;
}

int sl_choice_tree_probe(const sl_choice_tree *t, int k, const int32_t **tokens, uint32_t *reads)
{
    const probe *p = &t->probes[k];
    *tokens = t->forms[p->form].tok;
    *reads = p->reads;
    return p->len;
}

int sl_choice_tree_room(const sl_choice_tree *t)
{
    return t->room;
}

void sl_choice_tree_read_root(sl_choice_tree *t, const float *logits)
{
    float top = -INFINITY;
    int total = t->n_choices * t->n_forms;
    for (int k = 0; k < total; k++)
        if (t->forms[k].len > 0 && logits[t->forms[k].tok[0]] > top)
            top = logits[t->forms[k].tok[0]];
    t->root_sum = 0;
    for (int k = 0; k < total; k++) {
        form *f = &t->forms[k];
        if (f->len == 0)
            continue;
        f->p[0] = isfinite(top) ? (float)exp((double)logits[f->tok[0]] - (double)top) : 0.0f;
        /* Each first token once: the first form that has it. */
        bool first = true;
        for (int g = 0; g < k && first; g++)
            first = !(t->forms[g].len > 0 && t->forms[g].tok[0] == f->tok[0]);
        if (first)
            t->root_sum += f->p[0];
    }
}

/* Does form x go through the first d tokens of form y? */
static bool through(const form *x, const form *y, int d)
{
    return x->len >= d && memcmp(x->tok, y->tok, (size_t)d * sizeof *x->tok) == 0;
}

bool sl_choice_tree_probe_needed(const sl_choice_tree *t, int k)
{
    /* Every form with the probe's first token has that token's weight. */
    double mine = t->forms[t->probes[k].form].p[0];
    return t->root_sum > 0 && mine >= SL_CHOICE_NEGLIGIBLE * t->root_sum;
}

void sl_choice_tree_read(sl_choice_tree *t, int k, int j, const float *logits, int n_vocab)
{
    const form *pf = &t->forms[t->probes[k].form];
    int d = j + 1; /* the depth read: after tokens [0, j] */
    int total = t->n_choices * t->n_forms;
    /* The next tokens share what reaches here by their weights alone,
     * unless a form ends here: that one takes the rest of the
     * probability, so it must be a probability (the whole vocabulary's
     * softmax). */
    bool ends = false;
    float top = -INFINITY;
    for (int f = 0; f < total; f++) {
        const form *x = &t->forms[f];
        if (x->len > 0 && through(x, pf, d)) {
            if (x->len == d)
                ends = true;
            else if (logits[x->tok[d]] > top)
                top = logits[x->tok[d]];
        }
    }
    double sum = 1;
    if (ends) {
        for (int v = 0; v < n_vocab; v++)
            if (logits[v] > top)
                top = logits[v];
        sum = 0;
        for (int v = 0; v < n_vocab; v++)
            sum += exp((double)logits[v] - (double)top);
    }
    for (int f = 0; f < total; f++) {
        form *x = &t->forms[f];
        if (x->len > d && through(x, pf, d))
            x->p[d] = (float)(exp((double)logits[x->tok[d]] - (double)top) / sum);
    }
}

/* Shares `mass` among the choices of the forms idx[0, n), alike in their
 * first d tokens, as the reads say (llama_choice.h). */
static void score_at(const sl_choice_tree *t, int *idx, int n, int d, double mass, double *p)
{
    if (other_choice(t, idx, n) < 0) {
        p[idx[0] / t->n_forms] += mass;
        return;
    }
    sort_at(t, idx, n, d);
    double next = 0; /* the next tokens' weight together */
    bool ends = false;
    int groups = 0;
    for (int lo = 0; lo < n; lo = group_end(t, idx, n, lo, d), groups++) {
        if (key_at(&t->forms[idx[lo]], d) < 0)
            ends = true;
        else
            next += t->forms[idx[lo]].p[d];
    }
    /* Without a form ending here (and after the prompt: none can) the next
     * tokens share the mass; with one, it takes the rest. */
    double scale = !ends || next > 1 ? (next > 0 ? 1 / next : 0) : 1;
    double rest = ends && next < 1 ? 1 - next : 0;
    for (int lo = 0, hi; lo < n; lo = hi) {
        hi = group_end(t, idx, n, lo, d);
        int32_t key = key_at(&t->forms[idx[lo]], d);
        double share = key < 0 ? rest
                       : next > 0 ? t->forms[idx[lo]].p[d] * scale
                                  : (ends ? 0 : 1.0 / groups);
        if (key < 0)
            p[idx[lo] / t->n_forms] += mass * share;
        else if (share > 0)
            score_at(t, idx + lo, hi - lo, d + 1, mass * share, p);
    }
}

void sl_choice_tree_scores(const sl_choice_tree *t, double *p)
{
    for (int i = 0; i < t->n_choices; i++)
        p[i] = 0;
    score_at(t, t->scratch, counted(t, t->scratch), 0, 1.0, p);
    double sum = 0;
    for (int i = 0; i < t->n_choices; i++)
        sum += p[i];
    for (int i = 0; i < t->n_choices; i++)
        p[i] = sum > 0 ? p[i] / sum : 1.0 / t->n_choices;
}
