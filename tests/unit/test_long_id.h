/* A string longer than SQLite's string limit (1e9 bytes) in little memory,
 * for the tests that an id SQLite refuses to bind is an error (test_idset,
 * test_ledger). Include after cmocka.h, with _GNU_SOURCE defined before
 * any header (memfd_create). */
#ifndef SL_TEST_LONG_ID_H
#define SL_TEST_LONG_ID_H

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <sqlite3.h>

enum { TU_LONG_ID_CHUNK = 1 << 20 };

/* A string of `n` 'x' bytes and its NUL in little memory: one 1 MiB chunk
 * of 'x' (a memfd) mapped again and again, copy-on-write, so the NUL
 * written at the end copies one page. Unmap with munmap(s, *mapped). */
static inline char *tu_long_id(size_t n, size_t *mapped)
{
    enum { CHUNK = TU_LONG_ID_CHUNK };
    *mapped = (n + 1 + CHUNK - 1) / CHUNK * CHUNK;
    char *s = mmap(NULL, *mapped, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int fd = memfd_create("long-id", 0);
    assert_true(s != MAP_FAILED && fd >= 0);
    char *chunk = malloc(CHUNK);
    assert_non_null(chunk);
    memset(chunk, 'x', CHUNK);
    assert_int_equal(write(fd, chunk, CHUNK), CHUNK);
    free(chunk);
    for (size_t off = 0; off < *mapped; off += CHUNK)
        assert_true(mmap(s + off, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd,
                         0) != MAP_FAILED);
    close(fd);
    s[n] = '\0';
    return s;
}

/* SQLite's string limit, as a connection of its own reads it. */
static inline int tu_sqlite_limit(void)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(":memory:", &db), SQLITE_OK);
    int limit = sqlite3_limit(db, SQLITE_LIMIT_LENGTH, -1);
    sqlite3_close(db);
    return limit;
}

#endif
