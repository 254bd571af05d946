/* io/shard.c — temp-name-then-rename output files; the rename and the
 * folder's sync go through core/file.h's checked calls. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/fault.h"
#include "core/file.h"
#include "io/shard.h"

sl_status sl_make_dirs(const char *path)
{
    char *p = sl_strdup(path);
    if (!p)
        return sl_fail(SL_ERR_NOMEM, "out of memory creating '%s'", path);
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char saved = *s;
        *s = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST) {
            int err = errno;
            sl_status st = sl_fail(SL_ERR_IO, "cannot create folder '%s': %s", p, strerror(err));
            sl_free(p);
            errno = err;
            return st;
        }
        *s = saved;
        if (!saved)
            break;
    }
    sl_free(p);
    struct stat st;
    bool there = stat(path, &st) == 0;
    if (!there || !S_ISDIR(st.st_mode)) {
        int err = there ? ENOTDIR : errno;
        sl_status failed = sl_fail(SL_ERR_IO, "output '%s' is not a folder", path);
        errno = err;
        return failed;
    }
    return SL_OK;
}

sl_status sl_shard_init(sl_shard *shard, const char *dir, const char *name, bool overwrite)
{
    *shard = (sl_shard){0};
    sl_status st = sl_make_dirs(dir);
    if (st != SL_OK)
        return st;
    shard->dir = sl_strdup(dir);
    shard->final_path = sl_asprintf("%s/%s", dir, name);
    shard->tmp_path = sl_asprintf("%s/.%s.tmp-%ld", dir, name, (long)getpid());
    if (!shard->dir || !shard->final_path || !shard->tmp_path) {
        sl_shard_clear(shard);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening output '%s'", dir);
    }
    if (!overwrite && access(shard->final_path, F_OK) == 0) {
        st = sl_fail(SL_ERR_EXISTS,
                     "output '%s' already exists: pass --overwrite or choose another output folder",
                     shard->final_path);
        sl_shard_clear(shard);
        return st;
    }
    return SL_OK;
}

sl_status sl_shard_publish(sl_shard *shard)
{
    sl_status st = sl_file_rename(shard->tmp_path, shard->final_path);
    if (st != SL_OK)
        return st;
    shard->published = true;
    int err = sl_fault("commit.after_rename", shard->final_path);
    if (err)
        return sl_fail(SL_ERR_IO, "cannot publish '%s': %s", shard->final_path, strerror(err));
    /* The rename is durable only once the folder's entry is. A failure is
     * reported: the file is complete (synced before the rename) but might
     * not survive a power cut under its name. */
    st = sl_file_sync_dir(shard->dir);
    if (st == SL_OK && (err = sl_fault("commit.after_dir_sync", shard->final_path)))
        st = sl_fail(SL_ERR_IO, "cannot publish '%s': %s", shard->final_path, strerror(err));
    return st;
}

void sl_shard_clear(sl_shard *shard)
{
    if (!shard->published && shard->tmp_path)
        unlink(shard->tmp_path);
    sl_free(shard->dir);
    sl_free(shard->final_path);
    sl_free(shard->tmp_path);
    *shard = (sl_shard){0};
}

/* Every output format's part extension. One list for reading names and for
 * looking a part up: an errors part whose part went unseen would be removed
 * by every rerun as an orphan. */
static const char *const part_exts[] = {".jsonl", ".parquet", ".tar"};

long sl_shard_part_number(const char *name)
{
    if (strncmp(name, "part-", 5) != 0)
        return -1;
    const char *d = name + 5, *e = d;
    while (isdigit((unsigned char)*e))
        e++;
    if (e - d < 5 || e - d > 15)
        return -1;
    for (size_t i = 0; i < sizeof part_exts / sizeof *part_exts; i++)
        if (strcmp(e, part_exts[i]) == 0)
            return strtol(d, NULL, 10);
    return -1;
}

/* A temporary of io/shard.c: ".part-N.EXT.tmp-PID", or of the errors part
 * beside it (--errors-file), ".errors-N.jsonl.tmp-PID": a killed run leaves
 * both, and the errors one would otherwise stay for good, as large as the
 * part's failed rows. */
static bool is_part_temp(const char *name)
{
    return (strncmp(name, ".part-", 6) == 0 || strncmp(name, ".errors-", 8) == 0) &&
           strstr(name, ".tmp-") != NULL;
}

sl_status sl_shard_scan_parts(const char *dir, sl_part_scan *out)
{
    *out = (sl_part_scan){.max_number = -1};
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? SL_OK
                               : sl_fail(SL_ERR_IO, "cannot list output folder '%s': %s", dir,
                                         strerror(errno));
    for (struct dirent *e; (e = readdir(d));) {
        long n = sl_shard_part_number(e->d_name);
        if (n < 0)
            continue;
        out->count++;
        if (n > out->max_number)
            out->max_number = n;
    }
    closedir(d);
    return SL_OK;
}

sl_status sl_shard_each_part(const char *dir, sl_status (*each)(void *user, const char *name),
                             void *user)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? SL_OK
                               : sl_fail(SL_ERR_IO, "cannot list output folder '%s': %s", dir,
                                         strerror(errno));
    sl_status st = SL_OK;
    for (struct dirent *e; st == SL_OK && (e = readdir(d));)
        if (sl_shard_part_number(e->d_name) >= 0)
            st = each(user, e->d_name);
    closedir(d);
    return st;
}

/* Removes the entries of dir that `match` accepts; -1 when dir is unreadable. */
static long remove_matching(const char *dir, bool (*match)(const char *name), sl_status *st)
{
    *st = SL_OK;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno != ENOENT)
            *st = sl_fail(SL_ERR_IO, "cannot list output folder '%s': %s", dir, strerror(errno));
        return errno == ENOENT ? 0 : -1;
    }
    long removed = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (!match(e->d_name))
            continue;
        char *path = sl_asprintf("%s/%s", dir, e->d_name);
        if (path && unlink(path) == 0)
            removed++;
        else if (path && errno != ENOENT && *st == SL_OK)
            *st = sl_fail(SL_ERR_IO, "cannot remove '%s': %s", path, strerror(errno));
        sl_free(path);
    }
    closedir(d);
    return removed;
}

long sl_shard_errors_number(const char *name)
{
    char as_part[64];
    if (strncmp(name, "errors-", 7) != 0 || strlen(name) > 40)
        return -1;
    snprintf(as_part, sizeof as_part, "part-%s", name + 7);
    return strcmp(name + strlen(name) - 6, ".jsonl") == 0 ? sl_shard_part_number(as_part) : -1;
}

/* A part file, or the errors part of --errors-file beside it: --overwrite
 * removes both, or the old errors parts would stay beside the new parts,
 * their rows failures of another run. */
static bool is_part(const char *name)
{
    return sl_shard_part_number(name) >= 0 || sl_shard_errors_number(name) >= 0;
}

sl_status sl_shard_remove_parts(const char *dir)
{
    sl_status st;
    remove_matching(dir, is_part, &st);
    return st;
}

long sl_shard_remove_temps(const char *dir)
{
    sl_status st;
    return remove_matching(dir, is_part_temp, &st);
}


/* Whether dir holds part N in any format, its digits as `digits` spells them. */
static bool has_part(const char *dir, const char *digits, size_t n)
{
    bool found = false;
    for (size_t i = 0; !found && i < sizeof part_exts / sizeof *part_exts; i++) {
        char *path = sl_asprintf("%s/part-%.*s%s", dir, (int)n, digits, part_exts[i]);
        /* out of memory: taken as there, so nothing is removed in doubt */
        found = !path || access(path, F_OK) == 0;
        sl_free(path);
    }
    return found;
}

long sl_shard_remove_orphan_errors(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    long removed = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (sl_shard_errors_number(e->d_name) < 0)
            continue;
        const char *digits = e->d_name + strlen("errors-");
        if (has_part(dir, digits, strcspn(digits, ".")))
            continue;
        char *path = sl_asprintf("%s/%s", dir, e->d_name);
        if (path && unlink(path) == 0)
            removed++;
        sl_free(path);
    }
    closedir(d);
    return removed;
}
