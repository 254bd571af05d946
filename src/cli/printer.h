/* cli/printer.h — the sluice command's terminal output while a job runs:
 * shown captions and failed rows (from the write stage's thread), the
 * progress block (from the progress thread) and library log lines (from
 * any thread). One lock orders them, so a row or log line never lands
 * inside a progress block being drawn. Thread rules: printer_init() before
 * the job starts and printer_finish() after it ended, on the main thread;
 * the callbacks from any thread. The printer is the caller's (stack). */
#ifndef SL_CLI_PRINTER_H
#define SL_CLI_PRINTER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>

#include "sluice/sluice.h"

/* Failed rows printed one by one at most: a run where every row fails (a
 * wrong prompt column, a server refusing them all) would otherwise write a
 * line for each of millions; their errors are in the output. */
#define PRINTER_FAILED_MAX 100

typedef struct printer {
    long show;         /* captions to print at most */
    long shown;
    long failed_shown; /* failed rows printed, up to PRINTER_FAILED_MAX */
    int quiet;         /* --quiet: failed rows' lines alone (they are errors) */
    bool hide_failed;  /* not even those: a rank other than 0 (rank 0 speaks) */
    bool tty;          /* stderr is a terminal: redraw the progress block in place */
    int drawn;         /* lines of the progress block on screen */
    double last_line;  /* non-TTY: when the last progress line went out */
    double line_every; /* non-TTY: seconds between progress lines */
    bool resume_said;  /* the "resuming" line went out */
    bool retry_said;   /* the "retrying" line went out */
    const char *unit;  /* what the progress counts: NULL "images"; a batch file's "requests" */
    const char *token_file; /* --metrics-token-file: the server asks for its token */
    pthread_mutex_t mu;
} printer;

/* Writes text from the data (an id, a caption, an error naming an input)
 * to f so that it cannot drive the terminal: ESC and the other control
 * bytes (which can recolour, retitle or redraw the screen), DEL and the C1
 * controls go out as \xNN / \u00NN, as does any byte that is not valid
 * UTF-8, and the bidirectional overrides and isolates (which reorder the
 * line) as \u202E, ...; newlines and tabs stay when keep_lines. Past max bytes the rest is
 * cut: "\u2026 (N bytes more)". Returns the terminal columns written (a
 * CJK character or an emoji two, a combining accent none, an escape its
 * length), for padding. NULL prints "(null)". */
size_t printer_put_text(FILE *f, const char *text, size_t max, bool keep_lines);

/* Takes the library's log sink too (sl_log_set_callback). */
void printer_init(printer *pr);
void printer_finish(printer *pr);

/* sl_caption_params callbacks; `user` is the printer. */
void printer_row(const sl_row_view *row, void *user);
void printer_progress(const sl_caption_progress *g, void *user);
void printer_metrics_url(const char *url, void *user);

#endif
