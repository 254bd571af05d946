/* core/decimal.h — a decimal (an unscaled integer over 10^scale) as the
 * double nearest its value, rounded once: how Parquet's DECIMAL columns
 * and Arrow's decimal columns pass through as JSON numbers; a double as
 * the shortest decimal text that reads back as it; a half as a float. */
#ifndef SL_CORE_DECIMAL_H
#define SL_CORE_DECIMAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The unscaled value in n bytes of big-endian two's complement over
 * 10^scale (|scale| <= 76; Arrow allows a negative one). One division where both are exact doubles
 * (the value within 2^53, 0 <= scale <= 22), else the value's digits through
 * strtod; past 32 bytes (no decimal is that wide), the nearest the bytes
 * give one at a time. */
double sl_decimal_double(const uint8_t *be, size_t n, int scale);

/* The longest sl_decimal_text, and its NUL: a sign, 78 digits, a point,
 * a leading "0." and 76 zeros. */
#define SL_DECIMAL_TEXT_MAX 160

/* The same decimal as its exact text, the scale kept: 1.10 (110 over
 * 10^2), -0.001, 12300 (123 over 10^-2); what pyarrow's and DuckDB's JSON
 * of a decimal write. Returns its length; 0 past 32 bytes or |scale| 76. */
size_t sl_decimal_text(const uint8_t *be, size_t n, int scale, char out[SL_DECIMAL_TEXT_MAX]);

/* Its inverse: the number text[0..len) (-?digits(.digits)?([eE][+-]?digits)?,
 * as sl_decimal_text, sl_double_shortest and JSON write one) as a decimal
 * of precision (1..76 digits) and scale (0..precision): its unscaled
 * value, big-endian two's complement, in out[0..n), n bytes that hold
 * every value of that precision (Parquet's widths: io/parquet_format.h's
 * sl_pq_decimal_width). False when text is no such number or its value is
 * not one of the decimal's (more digits, or digits past the scale that
 * are not 0): never rounded. */
bool sl_decimal_from_text(const char *text, size_t len, int precision, int scale, uint8_t *out, size_t n);

/* A finite v as the shortest %g text that strtod reads back as the same
 * double (19.99, where %.17g writes 19.989999999999998), in plain digits
 * while its exponent is under 16 (1500000, not 1.5e+06), as Python,
 * pyarrow and DuckDB show it, into out (32 bytes); returns its length. */
size_t sl_double_shortest(double v, char out[32]);

/* The IEEE half of bits h as the float that holds it exactly (subnormals
 * too: nanoarrow's ArrowHalfFloatToFloat reads 6.1e-5 as 1.17e-38). */
float sl_half_float(uint16_t h);

#endif
