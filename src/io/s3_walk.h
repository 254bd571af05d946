/* io/s3_walk.h — the keys under an s3:// prefix in the order a local
 * folder's walk gives the same tree (io/dir_source.h: sorted names, depth
 * first, so "sub/b.jpg" before "sub-x/a.jpg"), where S3 lists them byte-wise
 * ('-' < '/': sub-x first). Streamed from the listing a page at a time: a
 * key is given once no key still to come can go before it; past 1,000 such
 * keys held back, the folder they wait for is listed on its own first (a
 * request, often an empty answer), so memory stays bounded by that and the
 * keys' depth. One thread at a time; the caller frees the walk. */
#ifndef SL_IO_S3_WALK_H
#define SL_IO_S3_WALK_H
#include <stdbool.h>
#include "io/s3.h"

typedef struct sl_s3_walk sl_s3_walk;
/* Lists nothing yet: the first page is read by the first next. */
sl_status sl_s3_walk_open(const sl_s3 *s3, const char *url, sl_s3_walk **out);
/* The next key (the whole key, valid until the next call); *done at the
 * end. A listing that fails is its error (naming the URL). */
sl_status sl_s3_walk_next(sl_s3_walk *w, const char **key, bool *done);
void sl_s3_walk_free(sl_s3_walk *w);
/* A folder walk's order for two '/'-separated paths: byte order with '/'
 * before every other byte. */
int sl_walk_cmp(const char *a, const char *b);
#endif
