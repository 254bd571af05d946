/* Unit tests: cli/printer.c — row lines, progress blocks and log lines
 * written from three threads at once, as a run does (the write stage, the
 * progress thread, library warnings): no line lands inside a progress block
 * (TSan checks the locking too: this test runs in the TSan build). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cli/printer.h"
#include "core/log.h"

enum { ROUNDS = 2000 };

/* The three threads start together, so their output really overlaps. */
static pthread_barrier_t start;

static void *rows(void *arg)
{
    pthread_barrier_wait(&start);
    for (int i = 0; i < ROUNDS; i++) {
        char id[32];
        snprintf(id, sizeof id, "row%04d", i);
        sl_row_view v = {.id = id, .caption = "ROWLINE a caption", .index = i};
        sl_row_view bad = {.id = id, .error = "ROWLINE broken", .error_stage = "decode"};
        printer_row(i % 7 ? &v : &bad, arg);
    }
    return NULL;
}

static void *progress(void *arg)
{
    pthread_barrier_wait(&start);
    sl_caption_progress g = {.elapsed_s = 1.0, .rows_total = -1, .eta_s = -1, .n_stages = 3};
    const char *names[3] = {"read", "decode", "engine"};
    for (int k = 0; k < 3; k++)
        g.stages[k] = (sl_stage_stats){.name = names[k], .workers = 1};
    for (int i = 0; i < ROUNDS; i++) {
        g.rows_done = (uint64_t)i;
        printer_progress(&g, arg);
    }
    return NULL;
}

static void *logs(void *arg)
{
    pthread_barrier_wait(&start);
    for (int i = 0; i < ROUNDS / 4; i++)
        sl_log(SL_LOG_WARN, "LOGLINE %d", i);
    return NULL;
}

static void one_round(void)
{
    char path[] = "/tmp/sluice-printer-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    dup2(fd, 1); /* one file for both streams, in write order */
    dup2(fd, 2);
    printer pr = {.show = ROUNDS, .tty = true, .line_every = 10.0};
    printer_init(&pr);
    pthread_barrier_init(&start, NULL, 3);
    pthread_t t[3];
    pthread_create(&t[0], NULL, rows, &pr);
    pthread_create(&t[1], NULL, progress, &pr);
    pthread_create(&t[2], NULL, logs, &pr);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    printer_finish(&pr);
    fflush(stdout);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);

    FILE *f = fdopen(fd, "r");
    rewind(f);
    char line[512];
    int in_block = 0, blocks = 0, row_lines = 0, log_lines = 0;
    while (fgets(line, sizeof line, f)) {
        /* A redraw starts with the cursor-up/erase sequence; strip it. */
        char *s = line;
        while (s[0] == '\033') {
            char *end = strchr(s, 'J');
            assert_non_null(end);
            s = end + 1;
        }
        if (in_block) {
            /* Inside a block: only its next stage line or its total line. */
            if (strncmp(s, "  ", 2) != 0)
                fail_msg("a line inside a progress block: %s", s);
            if (strstr(s, "images done"))
                in_block = 0;
            continue;
        }
        if (strncmp(s, "  read", 6) == 0) {
            in_block = 1;
            blocks++;
        } else if (strstr(s, "ROWLINE")) {
            row_lines++;
        } else if (strstr(s, "LOGLINE")) {
            log_lines++;
        }
    }
    fclose(f);
    unlink(path);
    assert_int_equal(blocks, ROUNDS);
    /* Every caption, and the failed rows up to PRINTER_FAILED_MAX. */
    int failed = (ROUNDS + 6) / 7;
    assert_int_equal(row_lines, ROUNDS - failed +
                                    (failed < PRINTER_FAILED_MAX ? failed : PRINTER_FAILED_MAX));
    assert_int_equal(log_lines, ROUNDS / 4);
    assert_int_equal(pr.shown, ROUNDS - (ROUNDS + 6) / 7);
}

/* Ten rounds: without the lock, one round in two shows a torn block on a
 * 2-core machine, so ten all but always do. */
static void lines_never_land_inside_a_progress_block(void **state)
{
    for (int i = 0; i < 10; i++)
        one_round();
}

/* What a row line's id column is padded by: the columns the text takes on
 * a terminal. Counted as characters, a CJK or emoji id (two columns each)
 * pushed its caption right and an NFD é (e + a combining accent) pulled
 * it left of the others; an escape is as wide as it is written. */
static void text_is_measured_in_terminal_columns(void **state)
{
    (void)state;
    static const struct {
        const char *text, *printed;
        size_t cols;
    } cases[] = {
        {"\xe7\x8c\xab cat.jpg", "\xe7\x8c\xab cat.jpg", 10},
        {"\xf0\x9f\x90\xb1.jpg", "\xf0\x9f\x90\xb1.jpg", 6},
        {"caf\xc3\xa9", "caf\xc3\xa9", 4},
        {"cafe\xcc\x81", "cafe\xcc\x81", 4},
        {"\xed\x95\x9c\xea\xb5\xad", "\xed\x95\x9c\xea\xb5\xad", 4},
        {"r\x1b[31m\xff", "r\\x1B[31m\\xFF", 13},
        {"a\xc2\x9b", "a\\u009B", 7},
        /* Beyond the blocks picked by hand first, as Python's
         * unicodedata has them (east_asian_width W or F: two; category
         * Mn, Me or Cf: none) and its wcwidth.wcswidth() agrees: emoji
         * outside U+1F300-U+1F64F (a coffee, a rocket, a melting face, a
         * watch, a mahjong tile, a squared CJK sign), Hebrew points, a
         * Thai tone mark, a kana voicing mark, Hangul jamo, a byte order
         * mark, a CJK ideograph newer than the table (Extension H). */
        {"\xe2\x98\x95.jpg", "\xe2\x98\x95.jpg", 6},
        {"\xf0\x9f\x9a\x80.jpg", "\xf0\x9f\x9a\x80.jpg", 6},
        {"\xf0\x9f\xab\xa0", "\xf0\x9f\xab\xa0", 2},
        {"\xe2\x8c\x9a", "\xe2\x8c\x9a", 2},
        {"\xf0\x9f\x80\x84", "\xf0\x9f\x80\x84", 2},
        {"\xf0\x9f\x88\x9a", "\xf0\x9f\x88\x9a", 2},
        {"\xd7\xa9\xd6\xb8\xd7\x81", "\xd7\xa9\xd6\xb8\xd7\x81", 1},
        {"\xe0\xb8\x81\xe0\xb9\x89\xe0\xb8\xb2", "\xe0\xb8\x81\xe0\xb9\x89\xe0\xb8\xb2", 2},
        {"\xe3\x81\x8b\xe3\x82\x99", "\xe3\x81\x8b\xe3\x82\x99", 2},
        {"\xe1\x84\x80\xe1\x85\xa1", "\xe1\x84\x80\xe1\x85\xa1", 2},
        {"\xef\xbb\xbf" "a", "\xef\xbb\xbf" "a", 1},
        {"\xf0\xb1\x8d\x90", "\xf0\xb1\x8d\x90", 2},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        char *buf = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&buf, &size);
        assert_non_null(f);
        size_t cols = printer_put_text(f, cases[k].text, 96, false);
        fclose(f);
        assert_string_equal(buf, cases[k].printed);
        assert_int_equal(cols, cases[k].cols);
        free(buf);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lines_never_land_inside_a_progress_block),
        cmocka_unit_test(text_is_measured_in_terminal_columns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
