/* io/dir_source.c — depth-first sorted directory walk. Each level keeps the
 * sorted names of one directory; a level is dropped once consumed. Sorting
 * needs every name of a folder at once, so they sit end to end in one
 * block: a name costs its bytes, its NUL and a pointer (a 13-byte name 22
 * bytes), where a string allocated per name cost about 48. Unsorted (a
 * count), a level is its open directory, read as walked: no names held. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "io/dir_source.h"
#include "sluice/video.h"

/* A name's place in its level's text while the text still grows (and may
 * move), then its address once the text is whole. */
typedef union name_ref {
    size_t at;
    const char *name;
} name_ref;

typedef struct level {
    char *rel;      /* directory relative to root ("" for root) */
    char *text;     /* the names, each with its NUL, end to end */
    name_ref *names;
    size_t count, next;
    DIR *dir;       /* unsorted: read as walked, no names held */
} level;

struct sl_dir_source {
    bool sorted, quiet;
    char *root;
    level *levels;
    size_t depth, cap;
    char *path, *rel, *error; /* the current entry's strings */
    bool (*want)(const char *rel, void *user); /* NULL: image and video names */
    void *want_user;
    sl_dir_entry entry;
};

/* Images the image decoder takes; videos are sluice/video.h's. */
static const char *const image_exts[] = {
    "jpg", "jpeg", "jpe", "jfif", "png", "webp", "gif", "tif", "tiff", "heic", "heif", "avif",
};

bool sl_is_media_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name)
        return false;
    for (size_t i = 0; i < sizeof image_exts / sizeof *image_exts; i++)
        if (strcasecmp(dot + 1, image_exts[i]) == 0)
            return true;
    return sl_video_path_is_video(name);
}

bool sl_is_mac_metadata(const char *rel)
{
    for (const char *c = rel; *c;) {
        size_t n = strcspn(c, "/");
        if ((n == 8 && strncmp(c, "__MACOSX", 8) == 0) || (n > 2 && strncmp(c, "._", 2) == 0))
            return true;
        c += n;
        c += *c == '/';
    }
    return false;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(((const name_ref *)a)->name, ((const name_ref *)b)->name);
}

static char *join(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = sl_malloc(la + lb + 2);
    if (!s)
        return NULL;
    memcpy(s, a, la);
    size_t n = la;
    if (la && lb && a[la - 1] != '/')
        s[n++] = '/';
    memcpy(s + n, b, lb + 1);
    return s;
}

static void free_level(level *lv)
{
    if (lv->dir)
        closedir(lv->dir);
    sl_free(lv->text);
    sl_free(lv->names);
    sl_free(lv->rel);
}

/* Reads and sorts one directory. On failure returns the errno. */
static int read_level(const char *dir_path, level *lv)
{
    DIR *d = opendir(dir_path);
    if (!d)
        return errno;
    size_t cap = 0, len = 0, text_cap = 0;
    struct dirent *de;
    int err = 0;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        size_t n = strlen(de->d_name) + 1;
        if (len + n > text_cap) {
            size_t grown_cap = text_cap ? text_cap : 4096;
            while (grown_cap < len + n && grown_cap <= SIZE_MAX / 2)
                grown_cap *= 2;
            char *grown = grown_cap >= len + n ? sl_realloc(lv->text, grown_cap) : NULL;
            if (!grown) { err = ENOMEM; break; }
            lv->text = grown;
            text_cap = grown_cap;
        }
        name_ref *grown = sl_grow(lv->names, lv->count, &cap, sizeof *grown);
        if (!grown) { err = ENOMEM; break; }
        lv->names = grown;
        memcpy(lv->text + len, de->d_name, n);
        lv->names[lv->count++].at = len;
        len += n;
    }
    closedir(d);
    if (err)
        return err;
    for (size_t i = 0; i < lv->count; i++)
        lv->names[i].name = lv->text + lv->names[i].at;
    if (lv->count)
        qsort(lv->names, lv->count, sizeof *lv->names, cmp_names);
    return 0;
}

static sl_status push_level(sl_dir_source *src, const char *rel, int *read_errno)
{
    level *grown = sl_grow(src->levels, src->depth, &src->cap, sizeof *grown);
    if (!grown)
        return sl_fail(SL_ERR_NOMEM, "out of memory listing '%s'", src->root);
    src->levels = grown;
    level lv = {0};
    if (!(lv.rel = sl_strdup(rel)))
        return sl_fail(SL_ERR_NOMEM, "out of memory listing '%s'", src->root);
    char *dir_path = join(src->root, rel);
    if (!dir_path) {
        sl_free(lv.rel);
        return sl_fail(SL_ERR_NOMEM, "out of memory listing '%s'", src->root);
    }
    if (src->sorted)
        *read_errno = read_level(dir_path, &lv);
    else
        *read_errno = (lv.dir = opendir(dir_path)) ? 0 : errno;
    sl_free(dir_path);
    if (*read_errno) {
        free_level(&lv);
        if (*read_errno == ENOMEM)
            return sl_fail(SL_ERR_NOMEM, "out of memory listing '%s'", src->root);
        return SL_OK;
    }
    src->levels[src->depth++] = lv;
    return SL_OK;
}

sl_status sl_dir_source_open(const char *root, bool sorted, sl_dir_source **out)
{
    *out = NULL;
    struct stat st;
    if (stat(root, &st) != 0)
        return sl_fail(errno == ENOENT ? SL_ERR_NOT_FOUND : SL_ERR_IO,
                       "input folder '%s': %s", root, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return sl_fail(SL_ERR_INVALID_ARG, "input '%s' is not a folder", root);
    sl_dir_source *src = sl_calloc(1, sizeof *src);
    if (!src || !(src->root = sl_strdup(root))) {
        sl_free(src);
        return sl_fail(SL_ERR_NOMEM, "out of memory opening '%s'", root);
    }
    src->sorted = sorted;
    int read_errno = 0;
    sl_status st2 = push_level(src, "", &read_errno);
    if (st2 == SL_OK && read_errno)
        st2 = sl_fail(SL_ERR_IO, "input folder '%s': %s", root, strerror(read_errno));
    if (st2 != SL_OK) {
        sl_dir_source_free(src);
        return st2;
    }
    *out = src;
    return SL_OK;
}

void sl_dir_source_quiet(sl_dir_source *src) { src->quiet = true; }

void sl_dir_source_choose(sl_dir_source *src, bool (*want)(const char *rel, void *user),
                          void *user)
{
    src->want = want;
    src->want_user = user;
}

static void clear_entry(sl_dir_source *src)
{
    sl_free(src->path);
    sl_free(src->rel);
    sl_free(src->error);
    src->path = src->rel = src->error = NULL;
}

sl_status sl_dir_source_next(sl_dir_source *src, const sl_dir_entry **entry)
{
    *entry = NULL;
    clear_entry(src);
    while (src->depth) {
        level *lv = &src->levels[src->depth - 1];
        const char *name = NULL;
        if (lv->dir) {
            const struct dirent *de;
            while ((de = readdir(lv->dir)) &&
                   (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0))
                ;
            name = de ? de->d_name : NULL;
        } else if (lv->next < lv->count) {
            name = lv->names[lv->next++].name;
        }
        if (!name) {
            free_level(lv);
            src->depth--;
            continue;
        }
        char *rel = join(lv->rel, name);
        char *path = rel ? join(src->root, rel) : NULL;
        if (!path) {
            sl_free(rel);
            return sl_fail(SL_ERR_NOMEM, "out of memory listing '%s'", src->root);
        }
        struct stat st;
        bool listed = lstat(path, &st) == 0;
        if (sl_is_mac_metadata(name)) { /* a Mac's copy left these beside the images */
            sl_free(rel);
            sl_free(path);
            continue;
        }
        if (listed && S_ISLNK(st.st_mode) && stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            /* Not followed (a loop could never end), but said: a folder
             * of images left out without a word looks like lost data. */
            if (!src->quiet)
                sl_log(SL_LOG_WARN, "'%s' is a symlink to a folder: not followed; give its "
                                    "target as an input of its own to read it", path);
            sl_free(rel);
            sl_free(path);
            continue;
        }
        if (listed && S_ISDIR(st.st_mode)) {
            int read_errno = 0;
            sl_status s = push_level(src, rel, &read_errno);
            if (s == SL_OK && read_errno) {
                char msg[512];
                snprintf(msg, sizeof msg, "cannot list folder '%s': %s", path, strerror(read_errno));
                src->error = sl_strdup(msg);
                src->path = path;
                src->rel = rel;
                src->entry = (sl_dir_entry){src->path, src->rel, src->error};
                *entry = &src->entry;
                return SL_OK;
            }
            sl_free(rel);
            sl_free(path);
            if (s != SL_OK)
                return s;
            continue;
        }
        if (src->want ? !src->want(rel, src->want_user) : !sl_is_media_name(name)) {
            sl_free(rel);
            sl_free(path);
            continue;
        }
        src->path = path;
        src->rel = rel;
        src->entry = (sl_dir_entry){src->path, src->rel, NULL};
        *entry = &src->entry;
        return SL_OK;
    }
    return SL_OK;
}

void sl_dir_source_free(sl_dir_source *src)
{
    if (!src)
        return;
    clear_entry(src);
    while (src->depth)
        free_level(&src->levels[--src->depth]);
    sl_free(src->levels);
    sl_free(src->root);
    sl_free(src);
}
