/* core/decimal.c — see decimal.h. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/decimal.h"

/* The decimal digits of a big-endian magnitude (n <= 32 bytes, consumed)
 * into out (80 bytes: 78 digits at most), by division in 10^9 chunks. */
static void magnitude_digits(uint8_t *m, size_t n, char *out)
{
    uint32_t chunks[9];
    int n_chunks = 0;
    bool zero = false;
    while (!zero && n_chunks < 9) {
        uint64_t rem = 0;
        zero = true;
        for (size_t k = 0; k < n; k++) {
            uint64_t cur = rem * 256 + m[k];
            m[k] = (uint8_t)(cur / 1000000000u);
            rem = cur % 1000000000u;
            zero &= m[k] == 0;
        }
        chunks[n_chunks++] = (uint32_t)rem;
    }
    int len = snprintf(out, 80, "%u", chunks[n_chunks - 1]);
    for (int k = n_chunks - 2; k >= 0; k--)
        len += snprintf(out + len, (size_t)(80 - len), "%09u", chunks[k]);
}

double sl_decimal_double(const uint8_t *be, size_t n, int scale)
{
    static const double pow10[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                   1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                   1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};
    bool negative = n > 0 && be[0] & 0x80;
    uint8_t m[32]; /* the magnitude, big-endian */
    if (n > sizeof m) {
        double d = 0;
        for (size_t k = 0; k < n; k++)
            d = d * 256 + (negative ? (uint8_t)~be[k] : be[k]);
        return (negative ? -(d + 1) : d) / pow(10, scale);
    }
    unsigned carry = negative; /* the two's complement's magnitude: ~be + 1 */
    for (size_t k = n; k-- > 0;) {
        unsigned b = (negative ? (uint8_t)~be[k] : be[k]) + carry;
        m[k] = (uint8_t)b;
        carry = b >> 8;
    }
    size_t lead = 0;
    while (lead < n && m[lead] == 0)
        lead++;
    if (n - lead <= 6 || (n - lead == 7 && m[lead] < 0x20)) { /* within 2^53 */
        double d = 0;
        for (size_t k = lead; k < n; k++)
            d = d * 256 + m[k];
        if (scale >= 0 && scale <= 22)
            return (negative ? -d : d) / pow10[scale];
    }
    char text[96];
    text[0] = '-';
    magnitude_digits(m + lead, n - lead, text + 1);
    size_t len = strlen(text);
    snprintf(text + len, sizeof text - len, "e%d", -scale);
    return strtod(negative ? text : text + 1, NULL);
}

size_t sl_double_shortest(double v, char out[32])
{
    int digits = 1;
    for (;; digits++) { /* 17 digits always read back as the double */
        snprintf(out, 32, "%.*e", digits - 1, v);
        if (digits == 17 || strtod(out, NULL) == v)
            break;
    }
    /* Plain digits while the exponent is under 16, as Python writes them:
     * %g at the digits' precision wrote 100 as 1e+02. */
    int exp = atoi(strchr(out, 'e') + 1);
    return (size_t)snprintf(out, 32, "%.*g", exp >= digits && exp < 16 ? exp + 1 : digits, v);
}

float sl_half_float(uint16_t h)
{
    int exp = h >> 10 & 0x1f;
    double mant = h & 0x3ff, v;
    if (exp == 0)
        v = ldexp(mant, -24); /* subnormal */
    else if (exp == 31)
        v = mant ? NAN : INFINITY;
    else
        v = ldexp(mant + 1024, exp - 25);
    return (float)(h & 0x8000 ? -v : v);
}

size_t sl_decimal_text(const uint8_t *be, size_t n, int scale, char out[SL_DECIMAL_TEXT_MAX])
{
    bool negative = n > 0 && be[0] & 0x80;
    uint8_t m[32];
    if (n > sizeof m || scale > 76 || scale < -76)
        return 0;
    unsigned carry = negative; /* the two's complement's magnitude: ~be + 1 */
    for (size_t k = n; k-- > 0;) {
        unsigned b = (negative ? (uint8_t)~be[k] : be[k]) + carry;
        m[k] = (uint8_t)b;
        carry = b >> 8;
    }
    char digits[80];
    size_t lead = 0;
    while (lead < n && m[lead] == 0)
        lead++;
    if (lead == n)
        strcpy(digits, "0");
    else
        magnitude_digits(m + lead, n - lead, digits);
    size_t len = strlen(digits), o = 0;
    if (negative && strcmp(digits, "0") != 0)
        out[o++] = '-';
    if (scale <= 0) { /* an integer: the digits, then -scale zeros */
        memcpy(out + o, digits, len);
        o += len;
        if (strcmp(digits, "0") != 0)
            for (int k = 0; k < -scale; k++)
                out[o++] = '0';
    } else if (len > (size_t)scale) { /* 123.45 */
        memcpy(out + o, digits, len - (size_t)scale);
        o += len - (size_t)scale;
        out[o++] = '.';
        memcpy(out + o, digits + len - (size_t)scale, (size_t)scale);
        o += (size_t)scale;
    } else { /* 0.0012 */
        out[o++] = '0';
        out[o++] = '.';
        for (size_t k = len; k < (size_t)scale; k++)
            out[o++] = '0';
        memcpy(out + o, digits, len);
        o += len;
    }
    out[o] = '\0';
    return o;
}

bool sl_decimal_from_text(const char *text, size_t len, int precision, int scale, uint8_t *out, size_t n)
{
    char digits[77];
    size_t d = 0, i = 0, frac = 0;
    bool neg = i < len && text[i] == '-', point = false, any = false;
    if (precision < 1 || precision >= (int)sizeof digits)
        return false;
    i += neg;
    /* The digits (leading zeros dropped), and how many follow the point. */
    for (; i < len && ((text[i] >= '0' && text[i] <= '9') || (text[i] == '.' && !point)); i++) {
        if (text[i] == '.') {
            point = true;
            continue;
        }
        any = true;
        frac += point;
        if (d == 0 && text[i] == '0')
            continue;
        if (d == sizeof digits)
            return false; /* more significant digits than any decimal here holds */
        digits[d++] = text[i];
    }
    long exp = 0;
    if (any && i < len && (text[i] == 'e' || text[i] == 'E')) {
        bool eneg = ++i < len && text[i] == '-';
        i += i < len && (text[i] == '-' || text[i] == '+');
        size_t start = i;
        for (; i < len && text[i] >= '0' && text[i] <= '9'; i++)
            if (exp < 100000)
                exp = exp * 10 + (text[i] - '0');
        if (i == start)
            return false;
        exp = eneg ? -exp : exp;
    }
    if (!any || i != len)
        return false;
    /* The unscaled value is digits times 10^shift. */
    long shift = exp - (long)frac + scale;
    while (shift < 0 && d > 0) {
        if (digits[--d] != '0')
            return false; /* a digit past the scale */
        shift++;
    }
    if (d > 0 && (long)d + shift > precision)
        return false;
    while (d > 0 && shift-- > 0)
        digits[d++] = '0';
    memset(out, 0, n);
    for (size_t k = 0; k < d; k++) { /* out = out * 10 + digit, big-endian */
        unsigned carry = (unsigned)(digits[k] - '0');
        for (size_t b = n; b-- > 0;) {
            unsigned x = out[b] * 10u + carry;
            out[b] = (uint8_t)x;
            carry = x >> 8;
        }
    }
    if (neg) { /* two's complement: invert, add one */
        unsigned carry = 1;
        for (size_t b = n; b-- > 0;) {
            unsigned x = (uint8_t)~out[b] + carry;
            out[b] = (uint8_t)x;
            carry = x >> 8;
        }
    }
    return true;
}
