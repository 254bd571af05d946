/* core/redact.h — keeping the secrets a URL may carry out of what sluice
 * prints and writes: a password in its user info (http://user:PASS@host)
 * and the values of query parameters that sign or authorise a request
 * (a presigned S3 URL's X-Amz-Signature, an Azure SAS's sig, ?token=...).
 * Pure; thread-safe; the caller owns every buffer. */
#ifndef SL_CORE_REDACT_H
#define SL_CORE_REDACT_H

#include <stdbool.h>
#include <stddef.h>

/* Copies text into out (cap bytes, NUL-terminated, cut to fit as snprintf
 * does) with every URL in it (a word holding "://") shown without its
 * secrets: the password of its user info and the value of each query
 * parameter named in the table of redact.c (case-insensitive) become
 * "***". The rest is copied byte for byte. Returns the length the whole
 * result has (as snprintf: out may be NULL with cap 0, to size a buffer). */
size_t sl_redact_urls(const char *text, char *out, size_t cap);

/* text as sl_redact_urls shows it, in a new string (sl_free); NULL when
 * out of memory. */
char *sl_redact_dup(const char *text);

/* Whether sl_redact_urls would change text. */
bool sl_redact_needed(const char *text);

#endif
