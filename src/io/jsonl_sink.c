/* io/jsonl_sink.c — temp-file-then-rename JSONL shard. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/error.h"
#include "io/jsonl_sink.h"

struct sl_jsonl_sink {
    char *dir, *final_path, *tmp_path;
    FILE *fp;
    bool committed;
};

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
            sl_status st = sl_fail(SL_ERR_IO, "cannot create folder '%s': %s", p, strerror(errno));
            sl_free(p);
            return st;
        }
        *s = saved;
        if (!saved)
            break;
    }
    sl_free(p);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return sl_fail(SL_ERR_IO, "output '%s' is not a folder", path);
    return SL_OK;
}

sl_status sl_jsonl_sink_open(const char *dir, const char *name, bool overwrite,
                             sl_jsonl_sink **out)
{
    *out = NULL;
    sl_status st = sl_make_dirs(dir);
    if (st != SL_OK)
        return st;
    sl_jsonl_sink *sink = sl_calloc(1, sizeof *sink);
    if (!sink)
        return sl_fail(SL_ERR_NOMEM, "out of memory opening output '%s'", dir);
    sink->dir = sl_strdup(dir);
    sink->final_path = sl_asprintf("%s/%s", dir, name);
    sink->tmp_path = sl_asprintf("%s/.%s.tmp-%ld", dir, name, (long)getpid());
    if (!sink->dir || !sink->final_path || !sink->tmp_path) {
        sl_jsonl_sink_free(sink);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening output '%s'", dir);
    }
    if (!overwrite && access(sink->final_path, F_OK) == 0) {
        st = sl_fail(SL_ERR_EXISTS,
                     "output '%s' already exists: pass --overwrite or choose another output folder",
                     sink->final_path);
        sl_jsonl_sink_free(sink);
        return st;
    }
    sink->fp = fopen(sink->tmp_path, "w");
    if (!sink->fp) {
        st = sl_fail(SL_ERR_IO, "cannot create '%s': %s", sink->tmp_path, strerror(errno));
        sl_jsonl_sink_free(sink);
        return st;
    }
    *out = sink;
    return SL_OK;
}

sl_status sl_jsonl_sink_write(sl_jsonl_sink *sink, const json_t *row)
{
    if (json_dumpf(row, sink->fp, JSON_COMPACT | JSON_PRESERVE_ORDER) != 0 ||
        fputc('\n', sink->fp) == EOF)
        return sl_fail(SL_ERR_IO, "cannot write to '%s': %s", sink->tmp_path, strerror(errno));
    return SL_OK;
}

sl_status sl_jsonl_sink_commit(sl_jsonl_sink *sink)
{
    FILE *fp = sink->fp;
    sink->fp = NULL;
    if (fflush(fp) != 0 || fsync(fileno(fp)) != 0) {
        fclose(fp);
        return sl_fail(SL_ERR_IO, "cannot write '%s': %s", sink->tmp_path, strerror(errno));
    }
    if (fclose(fp) != 0)
        return sl_fail(SL_ERR_IO, "cannot close '%s': %s", sink->tmp_path, strerror(errno));
    if (rename(sink->tmp_path, sink->final_path) != 0)
        return sl_fail(SL_ERR_IO, "cannot rename '%s' to '%s': %s", sink->tmp_path,
                       sink->final_path, strerror(errno));
    sink->committed = true;
    /* The rename is durable only once the directory entry is. */
    int dfd = open(sink->dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return SL_OK;
}

const char *sl_jsonl_sink_path(const sl_jsonl_sink *sink) { return sink->final_path; }

void sl_jsonl_sink_free(sl_jsonl_sink *sink)
{
    if (!sink)
        return;
    if (sink->fp)
        fclose(sink->fp);
    if (!sink->committed && sink->tmp_path)
        unlink(sink->tmp_path);
    sl_free(sink->dir);
    sl_free(sink->final_path);
    sl_free(sink->tmp_path);
    sl_free(sink);
}
