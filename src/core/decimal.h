/* core/decimal.h — a decimal (an unscaled integer over 10^scale) as the
 * double nearest its value, rounded once: how Parquet's DECIMAL columns
 * and Arrow's decimal columns pass through as JSON numbers. */
#ifndef SL_CORE_DECIMAL_H
#define SL_CORE_DECIMAL_H

#include <stddef.h>
#include <stdint.h>

/* The unscaled value in n bytes of big-endian two's complement over
 * 10^scale (|scale| <= 76; Arrow allows a negative one). One division where both are exact doubles
 * (the value within 2^53, 0 <= scale <= 22), else the value's digits through
 * strtod; past 32 bytes (no decimal is that wide), the nearest the bytes
 * give one at a time. */
double sl_decimal_double(const uint8_t *be, size_t n, int scale);

#endif
