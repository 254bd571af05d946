/* io/hf.h — dataset repositories on the Hugging Face hub as inputs:
 * hf://datasets/ORG/NAME[@REVISION][/PATTERN] (HfFileSystem's path form)
 * expanded through the hub's API ($HF_ENDPOINT, $HF_TOKEN) into the https
 * URLs of its files, each pinned to the commit REVISION names, with its
 * repository path (its name in ids). The reads then go through
 * io/ranged.h like any URL; hf_bearer() gives io/fetch.c the token for the
 * hub's own host only. The pure parts (spec, one tree page, a Link header,
 * the selection) do no I/O, for the unit tests and fuzz/fuzz_hf_tree.c.
 * Thread-safe (no state of its own). Ownership: each hf_listing is the
 * caller's (hf_listing_clear); hf_expand's arrays too (sl_strings_free). */
#ifndef SL_IO_HF_H
#define SL_IO_HF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice/status.h"

/* Bounds on a listing (the hub's word, not ours): files kept, a page's
 * body, and all pages' bodies together. Past one, the expansion stops
 * with an error asking for a narrower pattern. */
enum { HF_MAX_FILES = 100000, HF_MAX_PATH = 1024, HF_MAX_PAGES = 1000 };
#define HF_MAX_PAGE_BYTES (16u << 20)
#define HF_MAX_LISTING_BYTES (256u << 20)

typedef struct hf_spec {
    char org[128], name[128];
    char revision[256]; /* decoded ("refs/convert/parquet" from @refs%2Fconvert%2Fparquet);
                           "main" when none is given */
    char pattern[HF_MAX_PATH]; /* "" when none */
} hf_spec;

/* True for an hf://datasets/ reference. */
bool hf_is_dataset_ref(const char *s);

/* Parses an hf://datasets/ reference. SL_ERR_INVALID_ARG naming it: not
 * one, an ORG or NAME that is not a plain name, an empty or unsafe
 * revision (control characters, "..", '?', '#'), a pattern with an unsafe
 * segment or too long. */
sl_status hf_spec_parse(const char *ref, hf_spec *out);

typedef struct hf_file {
    char *path;    /* the repository path: relative, every segment plain (hub_segment_ok) */
    uint64_t size; /* as listed */
} hf_file;

typedef struct hf_listing {
    hf_file *files;
    size_t n, cap;
    uint64_t bytes; /* the sizes listed, added up */
} hf_listing;

void hf_listing_clear(hf_listing *l);

/* One page of GET /api/datasets/ORG/NAME/tree/REV[/PATH]?recursive=true:
 * a JSON array of {"type": "file"|"directory", "path": P, "size": N, ...}.
 * Appends the files whose path is safe (relative; no "..", ".", empty,
 * control character, backslash, space, '?', '#' or '%' segment; shorter
 * than HF_MAX_PATH); drops the others and every directory. False with
 * *why when the body is not such an array, or when it would take the
 * listing past HF_MAX_FILES (nothing of the page is kept then); false
 * only out of memory otherwise (why says so). */
bool hf_tree_parse(const char *body, size_t len, hf_listing *out, char *why, size_t cap);

/* The URL of rel="next" in a Link header's value (RFC 8288: `<URL>;
 * rel="next", <URL>; rel="prev"`) into out; false when there is none or
 * it does not fit. */
bool hf_link_next(const char *value, char *out, size_t cap);

/* Keeps the files that `pattern` selects, sorted by path, and returns how
 * many: a glob (fnmatch with FNM_PATHNAME: '*' stays within a folder)
 * keeps the paths it matches; a plain path keeps that file, or the files
 * under that folder by the default rule; no pattern ("") applies the
 * default rule to all: every .parquet file, or if there is none, every
 * .tar shard. */
size_t hf_select(hf_listing *l, const char *pattern);

/* Whether $HF_TOKEN goes with a request for url: when url is on the hub's
 * own origin ($HF_ENDPOINT's scheme://host[:port], default
 * https://huggingface.co). Then the token into token (cap bytes). A
 * redirect elsewhere (an LFS file's CDN) gets none: libcurl drops the
 * credentials when the host changes. */
bool hf_bearer(const char *url, char *token, size_t cap);

/* The reference without its @REVISION (hf://datasets/ORG/NAME[/PATTERN]),
 * for what stays the same when a run names the commit a branch had: a
 * copy (sl_free); NULL when ref is not a valid reference or out of memory. */
char *hf_ref_unpinned(const char *ref);

/* How the listing requests are made. */
typedef struct hf_fetch {
    long timeout_ms; /* per try */
    int retries;     /* tries after the first, for transport errors, 5xx and 429 */
} hf_fetch;

/* Expands one reference: resolves REVISION to its commit, lists the files
 * there (every page), selects them (hf_select) and gives each one's URL,
 * {endpoint}/datasets/ORG/NAME/resolve/COMMIT/PATH, in *urls and its path
 * in *names (n of each). Errors name the reference: SL_ERR_INVALID_ARG
 * for a bad reference or $HF_HUB_OFFLINE set, SL_ERR_NOT_FOUND for no
 * such repository or revision, a gated or private one (saying to set
 * HF_TOKEN), a pattern that selects nothing; SL_ERR_IO when the hub
 * cannot be reached or answers otherwise. */
sl_status hf_expand(const char *ref, const hf_fetch *fetch, char ***urls, char ***names,
                    size_t *n);

#endif
