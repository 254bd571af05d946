/* core/hash.h — small stable hashes (the values are part of output
 * reproducibility: never change them). */
#ifndef SL_CORE_HASH_H
#define SL_CORE_HASH_H

#include <stdint.h>

uint64_t sl_hash_fnv1a64(const char *s);
uint64_t sl_hash_mix64(uint64_t x);

#endif
