/* tests/unit/test_tar.h — a tar's members read back with libarchive (the
 * WebDataset parts io/wds_sink.c writes and io/part_filter_tar.c copies), and
 * a whole file read into memory; cmocka asserts. Include after cmocka.h;
 * the test links libarchive. The caller frees what these return (free()). */
#ifndef TEST_TAR_H
#define TEST_TAR_H

#include <archive.h>
#include <archive_entry.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct tt_member {
    char name[128];
    char *data; /* len bytes and a '\0' */
    size_t len;
    int perm;
    long long mtime, uid, gid;
} tt_member;

/* The regular-file members of the tar at `path` into out[0..max); how many. */
static inline int tt_read_tar(const char *path, tt_member *out, int max)
{
    struct archive *a = archive_read_new();
    archive_read_support_format_tar(a);
    assert_int_equal(archive_read_open_filename(a, path, 10240), ARCHIVE_OK);
    struct archive_entry *e;
    int n = 0, rc;
    while ((rc = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        assert_true(n < max);
        assert_int_equal(archive_entry_filetype(e), AE_IFREG);
        tt_member *m = &out[n++];
        snprintf(m->name, sizeof m->name, "%s", archive_entry_pathname(e));
        m->len = (size_t)archive_entry_size(e);
        m->perm = (int)archive_entry_perm(e);
        m->mtime = (long long)archive_entry_mtime(e);
        m->uid = (long long)archive_entry_uid(e);
        m->gid = (long long)archive_entry_gid(e);
        m->data = malloc(m->len + 1);
        assert_int_equal(archive_read_data(a, m->data, m->len), (la_ssize_t)m->len);
        m->data[m->len] = '\0';
    }
    assert_int_equal(rc, ARCHIVE_EOF);
    archive_read_free(a);
    return n;
}

static inline void tt_free_members(tt_member *m, int n)
{
    for (int i = 0; i < n; i++)
        free(m[i].data);
}

/* The file's bytes and a '\0'; *len (optional) their count. */
static inline char *tt_slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_int_equal(fread(buf, 1, (size_t)n, fp), (size_t)n);
    buf[n] = '\0';
    fclose(fp);
    if (len)
        *len = (size_t)n;
    return buf;
}

#endif
