/* cli/printer.c — what the sluice command prints while a job runs: row
 * lines, the progress block, log lines. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cli/printer.h"

/* Longest id and caption a row line shows: the output has them whole. */
#define SHOW_ID_MAX 96
#define SHOW_TEXT_MAX 4096

/* The length of the valid UTF-8 character at s[0..n), 0 if there is none
 * (an invalid or cut byte). core/utf8.c has its twin, but the CLI sees only
 * the library's public headers. */
static size_t utf8_char_len(const unsigned char *s, size_t n)
{
    size_t len = s[0] >= 0xF0 && s[0] <= 0xF4 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC2 ? 2 : 0;
    if (s[0] > 0xF4 || len == 0 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    if ((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] >= 0xA0) ||
        (s[0] == 0xF0 && s[1] < 0x90) || (s[0] == 0xF4 && s[1] >= 0x90))
        return 0; /* overlong, surrogate, past U+10FFFF */
    return len;
}

/* Whether the 3-byte character at s is a bidirectional embedding, override
 * or isolate (U+202A-U+202E, U+2066-U+2069): printed, one reorders the rest
 * of the line on a terminal that lays out right-to-left text, so that
 * "photo\u202Egpj.exe" reads "photoexe.jpg" (Trojan Source). */
static bool is_bidi_control(const unsigned char *s)
{
    return s[0] == 0xE2 && ((s[1] == 0x80 && s[2] >= 0xAA && s[2] <= 0xAE) ||
                            (s[1] == 0x81 && s[2] >= 0xA6 && s[2] <= 0xA9));
}

/* The terminal columns the valid character at s[0..len) takes, as
 * wcwidth() has them for the common cases (the CLI sets no locale for
 * wcwidth to work in): 2 for East Asian wide and fullwidth characters and
 * emoji (a 猫 or a 😀), 0 for combining marks (the accent of an NFD é)
 * and zero-width ones, else 1. */
static size_t columns_of(const unsigned char *s, size_t len)
{
    uint32_t cp = len == 2   ? (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F)
                  : len == 3 ? (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F)
                             : (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
                                   (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
    static const uint32_t zero[][2] = {{0x0300, 0x036F}, {0x1AB0, 0x1AFF}, {0x1DC0, 0x1DFF},
                                       {0x200B, 0x200F}, {0x20D0, 0x20FF}, {0xFE00, 0xFE0F},
                                       {0xFE20, 0xFE2F}};
    static const uint32_t wide[][2] = {
        {0x1100, 0x115F}, {0x2E80, 0x303E}, {0x3041, 0x33FF}, {0x3400, 0x4DBF},
        {0x4E00, 0x9FFF}, {0xA000, 0xA4CF}, {0xAC00, 0xD7A3}, {0xF900, 0xFAFF},
        {0xFE30, 0xFE4F}, {0xFF00, 0xFF60}, {0xFFE0, 0xFFE6}, {0x1F300, 0x1F64F},
        {0x1F900, 0x1F9FF}, {0x20000, 0x3FFFD}};
    for (size_t k = 0; k < sizeof zero / sizeof *zero; k++)
        if (cp >= zero[k][0] && cp <= zero[k][1])
            return 0;
    for (size_t k = 0; k < sizeof wide / sizeof *wide; k++)
        if (cp >= wide[k][0] && cp <= wide[k][1])
            return 2;
    return 1;
}

size_t printer_put_text(FILE *f, const char *text, size_t max, bool keep_lines)
{
    const unsigned char *s = (const unsigned char *)(text ? text : "(null)");
    size_t n = strlen((const char *)s), cols = 0;
    for (size_t i = 0; i < n;) {
        if (i >= max) {
            int w = fprintf(f, "\u2026 (%zu bytes more)", n - i);
            return cols + (w > 2 ? (size_t)w - 2 : 0); /* the ellipsis is 3 bytes, 1 column */
        }
        size_t len = s[i] < 0x80 ? 1 : utf8_char_len(s + i, n - i);
        bool plain = s[i] >= 0x20 && s[i] != 0x7F;
        int escaped = 0;
        if (len == 1 && (plain || (keep_lines && (s[i] == '\n' || s[i] == '\t')))) {
            fputc(s[i], f);
            cols++;
        } else if (len == 2 && s[i] == 0xC2 && s[i + 1] < 0xA0) { /* C1 control (U+0080-U+009F) */
            escaped = fprintf(f, "\\u%04X", s[i + 1]);
        } else if (len == 3 && is_bidi_control(s + i)) {
            escaped = fprintf(f, "\\u%04X", 0x2000 | (s[i + 1] & 0x3F) << 6 | (s[i + 2] & 0x3F));
        } else if (len > 1) {
            fwrite(s + i, 1, len, f);
            cols += columns_of(s + i, len);
        } else { /* a control or an invalid byte */
            escaped = fprintf(f, "\\x%02X", s[i]);
        }
        cols += escaped > 0 ? (size_t)escaped : 0;
        i += len ? len : 1;
    }
    return cols;
}

/* Erases the progress block so a row's line does not land inside it. */
static void clear_progress(printer *pr)
{
    if (pr->tty && pr->drawn) {
        fprintf(stderr, "\033[%dA\033[J", pr->drawn);
        pr->drawn = 0;
    }
}

void printer_row(const sl_row_view *row, void *user)
{
    printer *pr = user;
    if (row->error ? pr->hide_failed : pr->quiet)
        return;
    pthread_mutex_lock(&pr->mu);
    clear_progress(pr);
    if (row->error) {
        if (pr->failed_shown < PRINTER_FAILED_MAX) {
            fputs("sluice: ", stderr);
            printer_put_text(stderr, row->id, SHOW_ID_MAX, false);
            fprintf(stderr, " failed (%s): ", row->error_stage);
            printer_put_text(stderr, row->error, SHOW_TEXT_MAX, false);
            fputc('\n', stderr);
        } else if (pr->failed_shown == PRINTER_FAILED_MAX) {
            fprintf(stderr, "sluice: more than %d rows failed: the rest are not printed one by "
                    "one (each row's error is in the output's error column; the progress "
                    "line counts them)\n", PRINTER_FAILED_MAX);
        }
        pr->failed_shown++;
    } else if (pr->shown < pr->show && row->caption) { /* a dry run's rows have none */
        for (size_t w = printer_put_text(stdout, row->id, SHOW_ID_MAX, false); w < 28; w++)
            putchar(' ');
        putchar(' ');
        printer_put_text(stdout, row->caption, SHOW_TEXT_MAX, true);
        putchar('\n');
        fflush(stdout);
        pr->shown++;
    }
    pthread_mutex_unlock(&pr->mu);
}

static void fmt_duration(double s, char *buf, size_t n)
{
    long t = (long)(s + 0.5);
    snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

static void print_progress_locked(printer *pr, const sl_caption_progress *g);

/* On a terminal: one line per stage plus a total, redrawn in place. Else:
 * one plain line every line_every seconds, and a last one at the end.
 * Counts are images (rows), never internal batches. */
void printer_progress(const sl_caption_progress *g, void *user)
{
    printer *pr = user;
    if (pr->quiet)
        return;
    pthread_mutex_lock(&pr->mu);
    print_progress_locked(pr, g);
    pthread_mutex_unlock(&pr->mu);
}

static void print_progress_locked(printer *pr, const sl_caption_progress *g)
{
    double rate = g->elapsed_s > 0 ? (double)g->rows_done / g->elapsed_s : 0.0;
    const char *unit = pr->unit ? pr->unit : "images";
    char elapsed[32], eta[32], of[64] = "";
    fmt_duration(g->elapsed_s, elapsed, sizeof elapsed);
    if (g->eta_s >= 0)
        fmt_duration(g->eta_s, eta, sizeof eta);
    else
        snprintf(eta, sizeof eta, "?");
    if (g->rows_total >= 0)
        snprintf(of, sizeof of, " of %lld (%.0f%%)", (long long)g->rows_total,
                 g->rows_total ? 100.0 * (double)g->rows_done / (double)g->rows_total : 100.0);
    char skipped[224] = "";
    /* Rows the writer could not write were fine rows: not failed ones. */
    if (g->rows_write_failed)
        snprintf(skipped, sizeof skipped, ", %llu not written (write failed)",
                 (unsigned long long)g->rows_write_failed);
    if (g->rows_skipped)
        snprintf(skipped + strlen(skipped), sizeof skipped - strlen(skipped),
                 ", %llu skipped (done before)", (unsigned long long)g->rows_skipped);
    if (g->ranks > 1) /* rank 0 of an MPI job: the whole job as well */
        snprintf(skipped + strlen(skipped), sizeof skipped - strlen(skipped),
                 " [job: %lld rows committed, %d of %d ranks done]", (long long)g->job_rows,
                 g->ranks_finished, g->ranks);
    if (g->retry_failed && !pr->retry_said) {
        clear_progress(pr);
        fprintf(stderr, "sluice: retrying: %lld failed row%s taken out of %lld part%s to be "
                        "captioned again (%lld other row%s rewritten, %.2f s)\n",
                (long long)g->rows_retried, g->rows_retried == 1 ? "" : "s",
                (long long)g->parts_retried, g->parts_retried == 1 ? "" : "s",
                (long long)g->rows_retry_kept, g->rows_retry_kept == 1 ? "" : "s",
                g->retry_seconds);
        pr->retry_said = true;
    }
    if (g->inputs_done_before > 0 && !pr->resume_said) {
        /* Inputs, as the skipped count; the rows they made as the output
         * holds them (with --rows-per-task one per input and task). */
        clear_progress(pr);
        char failed[96] = "";
        /* A batch file's failed requests are answered again otherwise
         * (batch.md#resume: a batch file of them, into another folder). */
        if (g->rows_failed_before > 0)
            snprintf(failed, sizeof failed, ", %lld failed: %s", (long long)g->rows_failed_before,
                     pr->unit ? "docs/batch.md#resume says how to answer them again"
                              : "--retry-failed tries those again");
        fprintf(stderr, "sluice: resuming: %lld input%s already done by an earlier run (%lld "
                        "row%s in the output%s); they are skipped\n",
                (long long)g->inputs_done_before, g->inputs_done_before == 1 ? " was" : "s were",
                (long long)g->rows_done_before, g->rows_done_before == 1 ? "" : "s", failed);
        pr->resume_said = true;
    }
    if (pr->tty) {
        clear_progress(pr);
        for (size_t i = 0; i < g->n_stages; i++) {
            const sl_stage_stats *s = &g->stages[i];
            double all = s->busy_s + s->idle_s + s->blocked_s;
            fprintf(stderr, "  %-7s x%-2d %9llu in %9llu out %6llu failed  queue %5llu (%6.1f MB)"
                            "  busy %3.0f%%%s\n",
                    s->name, s->workers, (unsigned long long)s->rows_in,
                    (unsigned long long)s->rows_out, (unsigned long long)s->rows_failed,
                    (unsigned long long)s->queue_rows, (double)s->queue_bytes / 1e6,
                    all > 0 ? 100.0 * s->busy_s / all : 0.0,
                    s->in_flight ? "  (in engine)" : "");
        }
        fprintf(stderr, "  %llu%s %s done, %llu failed%s, %.2f %s/s, %s elapsed, ETA %s, "
                        "%.0f of %.0f MB in flight%s\n",
                (unsigned long long)g->rows_done, of, unit, (unsigned long long)g->rows_failed,
                skipped, rate, unit, elapsed, eta, (double)g->bytes_in_flight / 1e6, (double)g->memory_budget / 1e6,
                g->final ? " (finished)" : "");
        pr->drawn = (int)g->n_stages + 1;
        if (g->final)
            pr->drawn = 0; /* leave the last block on screen */
        return;
    }
    double now = g->elapsed_s;
    if (!g->final && now - pr->last_line < pr->line_every)
        return;
    pr->last_line = now;
    fprintf(stderr, "progress: %llu%s %s done, %llu failed%s, %.2f %s/s, %s elapsed, ETA %s |",
            (unsigned long long)g->rows_done, of, unit, (unsigned long long)g->rows_failed, skipped,
            rate, unit, elapsed, eta);
    for (size_t i = 0; i < g->n_stages; i++) {
        const sl_stage_stats *s = &g->stages[i];
        if (i == 0) /* the source has no input queue */
            fprintf(stderr, " %s %llu", s->name, (unsigned long long)s->rows_out);
        else
            fprintf(stderr, " %s %llu/%llu q%llu", s->name, (unsigned long long)s->rows_out,
                    (unsigned long long)s->rows_in, (unsigned long long)s->queue_rows);
    }
    fprintf(stderr, "%s\n", g->final ? " | finished" : "");
}

void printer_metrics_url(const char *url, void *user)
{
    printer *pr = user;
    if (pr->quiet)
        return;
    pthread_mutex_lock(&pr->mu);
    clear_progress(pr);
    fprintf(stderr, "sluice: metrics at %s/metrics, live page at %s/\n", url, url);
    pthread_mutex_unlock(&pr->mu);
}

/* Library log lines (warnings from any thread) go through the same lock,
 * so they never land inside a progress block. */
static void printer_log(sl_log_level level, const char *message, void *user)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    printer *pr = user;
    pthread_mutex_lock(&pr->mu);
    clear_progress(pr);
    fprintf(stderr, "sluice: %s: ", names[level]);
    printer_put_text(stderr, message, SIZE_MAX, false);
    fputc('\n', stderr);
    pthread_mutex_unlock(&pr->mu);
}

void printer_init(printer *pr)
{
    pthread_mutex_init(&pr->mu, NULL);
    sl_log_set_callback(printer_log, pr);
}

void printer_finish(printer *pr)
{
    sl_log_set_callback(NULL, NULL);
    pthread_mutex_destroy(&pr->mu);
}

