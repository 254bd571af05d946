/* cli/printer.c — what the sluice command prints while a job runs: row
 * lines, the progress block, log lines. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cli/printer.h"

/* Longest id and caption a row line shows: the output has them whole. */
#define SHOW_ID_MAX 96
#define SHOW_TEXT_MAX 4096

/* The length of the valid UTF-8 character at s[0..n), 0 if there is none
 * (an invalid or cut byte). core/utf8.c has its twin, but the CLI sees only
 * the library's public headers. */
static size_t utf8_char_len(const unsigned char *s, size_t n)
{
    size_t len = s[0] >= 0xF0 && s[0] <= 0xF4 ? 4 : s[0] >= 0xE0 ? 3 : s[0] >= 0xC2 ? 2 : 0;
    if (s[0] > 0xF4 || len == 0 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    if ((s[0] == 0xE0 && s[1] < 0xA0) || (s[0] == 0xED && s[1] >= 0xA0) ||
        (s[0] == 0xF0 && s[1] < 0x90) || (s[0] == 0xF4 && s[1] >= 0x90))
        return 0; /* overlong, surrogate, past U+10FFFF */
    return len;
}

/* Whether the 3-byte character at s is a bidirectional embedding, override
 * or isolate (U+202A-U+202E, U+2066-U+2069): printed, one reorders the rest
 * of the line on a terminal that lays out right-to-left text, so that
 * "photo\u202Egpj.exe" reads "photoexe.jpg" (Trojan Source). */
static bool is_bidi_control(const unsigned char *s)
{
    return s[0] == 0xE2 && ((s[1] == 0x80 && s[2] >= 0xAA && s[2] <= 0xAE) ||
                            (s[1] == 0x81 && s[2] >= 0xA6 && s[2] <= 0xA9));
}

/* The code points that take no terminal column, and those that take two:
 * by Markus Kuhn's wcwidth rule over Python's unicodedata (which glibc's
 * wcwidth follows but for a few blocks: glibc 2.36 gives U+4DC0-4DFF,
 * U+3248-324F and U+0600-0605 other widths, 85 code points), which the CLI
 * cannot ask for (it sets no locale for wcwidth to work in). Sorted ranges, each [first, last]. Hand-picked blocks missed
 * the emoji outside U+1F300-U+1F64F (a ☕ or a 🚀 took one column) and
 * every combining mark but the Latin ones (Hebrew points, Thai vowels took
 * one each), so captions after such ids were out of line. */
/* Unicode 14.0.0: scripts/gen_widths.py */
static const uint32_t zero_width[][2] = {
    {0x0300, 0x036F}, {0x0483, 0x0489}, {0x0591, 0x05BD}, {0x05BF, 0x05BF},
    {0x05C1, 0x05C2}, {0x05C4, 0x05C5}, {0x05C7, 0x05C7}, {0x0600, 0x0605},
    {0x0610, 0x061A}, {0x061C, 0x061C}, {0x064B, 0x065F}, {0x0670, 0x0670},
    {0x06D6, 0x06DD}, {0x06DF, 0x06E4}, {0x06E7, 0x06E8}, {0x06EA, 0x06ED},
    {0x070F, 0x070F}, {0x0711, 0x0711}, {0x0730, 0x074A}, {0x07A6, 0x07B0},
    {0x07EB, 0x07F3}, {0x07FD, 0x07FD}, {0x0816, 0x0819}, {0x081B, 0x0823},
    {0x0825, 0x0827}, {0x0829, 0x082D}, {0x0859, 0x085B}, {0x0890, 0x089F},
    {0x08CA, 0x0902}, {0x093A, 0x093A}, {0x093C, 0x093C}, {0x0941, 0x0948},
    {0x094D, 0x094D}, {0x0951, 0x0957}, {0x0962, 0x0963}, {0x0981, 0x0981},
    {0x09BC, 0x09BC}, {0x09C1, 0x09C4}, {0x09CD, 0x09CD}, {0x09E2, 0x09E3},
    {0x09FE, 0x0A02}, {0x0A3C, 0x0A3C}, {0x0A41, 0x0A51}, {0x0A70, 0x0A71},
    {0x0A75, 0x0A75}, {0x0A81, 0x0A82}, {0x0ABC, 0x0ABC}, {0x0AC1, 0x0AC8},
    {0x0ACD, 0x0ACD}, {0x0AE2, 0x0AE3}, {0x0AFA, 0x0B01}, {0x0B3C, 0x0B3C},
    {0x0B3F, 0x0B3F}, {0x0B41, 0x0B44}, {0x0B4D, 0x0B56}, {0x0B62, 0x0B63},
    {0x0B82, 0x0B82}, {0x0BC0, 0x0BC0}, {0x0BCD, 0x0BCD}, {0x0C00, 0x0C00},
    {0x0C04, 0x0C04}, {0x0C3C, 0x0C3C}, {0x0C3E, 0x0C40}, {0x0C46, 0x0C56},
    {0x0C62, 0x0C63}, {0x0C81, 0x0C81}, {0x0CBC, 0x0CBC}, {0x0CBF, 0x0CBF},
    {0x0CC6, 0x0CC6}, {0x0CCC, 0x0CCD}, {0x0CE2, 0x0CE3}, {0x0D00, 0x0D01},
    {0x0D3B, 0x0D3C}, {0x0D41, 0x0D44}, {0x0D4D, 0x0D4D}, {0x0D62, 0x0D63},
    {0x0D81, 0x0D81}, {0x0DCA, 0x0DCA}, {0x0DD2, 0x0DD6}, {0x0E31, 0x0E31},
    {0x0E34, 0x0E3A}, {0x0E47, 0x0E4E}, {0x0EB1, 0x0EB1}, {0x0EB4, 0x0EBC},
    {0x0EC8, 0x0ECD}, {0x0F18, 0x0F19}, {0x0F35, 0x0F35}, {0x0F37, 0x0F37},
    {0x0F39, 0x0F39}, {0x0F71, 0x0F7E}, {0x0F80, 0x0F84}, {0x0F86, 0x0F87},
    {0x0F8D, 0x0FBC}, {0x0FC6, 0x0FC6}, {0x102D, 0x1030}, {0x1032, 0x1037},
    {0x1039, 0x103A}, {0x103D, 0x103E}, {0x1058, 0x1059}, {0x105E, 0x1060},
    {0x1071, 0x1074}, {0x1082, 0x1082}, {0x1085, 0x1086}, {0x108D, 0x108D},
    {0x109D, 0x109D}, {0x1160, 0x11FF}, {0x135D, 0x135F}, {0x1712, 0x1714},
    {0x1732, 0x1733}, {0x1752, 0x1753}, {0x1772, 0x1773}, {0x17B4, 0x17B5},
    {0x17B7, 0x17BD}, {0x17C6, 0x17C6}, {0x17C9, 0x17D3}, {0x17DD, 0x17DD},
    {0x180B, 0x180F}, {0x1885, 0x1886}, {0x18A9, 0x18A9}, {0x1920, 0x1922},
    {0x1927, 0x1928}, {0x1932, 0x1932}, {0x1939, 0x193B}, {0x1A17, 0x1A18},
    {0x1A1B, 0x1A1B}, {0x1A56, 0x1A56}, {0x1A58, 0x1A60}, {0x1A62, 0x1A62},
    {0x1A65, 0x1A6C}, {0x1A73, 0x1A7F}, {0x1AB0, 0x1B03}, {0x1B34, 0x1B34},
    {0x1B36, 0x1B3A}, {0x1B3C, 0x1B3C}, {0x1B42, 0x1B42}, {0x1B6B, 0x1B73},
    {0x1B80, 0x1B81}, {0x1BA2, 0x1BA5}, {0x1BA8, 0x1BA9}, {0x1BAB, 0x1BAD},
    {0x1BE6, 0x1BE6}, {0x1BE8, 0x1BE9}, {0x1BED, 0x1BED}, {0x1BEF, 0x1BF1},
    {0x1C2C, 0x1C33}, {0x1C36, 0x1C37}, {0x1CD0, 0x1CD2}, {0x1CD4, 0x1CE0},
    {0x1CE2, 0x1CE8}, {0x1CED, 0x1CED}, {0x1CF4, 0x1CF4}, {0x1CF8, 0x1CF9},
    {0x1DC0, 0x1DFF}, {0x200B, 0x200F}, {0x202A, 0x202E}, {0x2060, 0x206F},
    {0x20D0, 0x20F0}, {0x2CEF, 0x2CF1}, {0x2D7F, 0x2D7F}, {0x2DE0, 0x2DFF},
    {0x302A, 0x302D}, {0x3099, 0x309A}, {0xA66F, 0xA672}, {0xA674, 0xA67D},
    {0xA69E, 0xA69F}, {0xA6F0, 0xA6F1}, {0xA802, 0xA802}, {0xA806, 0xA806},
    {0xA80B, 0xA80B}, {0xA825, 0xA826}, {0xA82C, 0xA82C}, {0xA8C4, 0xA8C5},
    {0xA8E0, 0xA8F1}, {0xA8FF, 0xA8FF}, {0xA926, 0xA92D}, {0xA947, 0xA951},
    {0xA980, 0xA982}, {0xA9B3, 0xA9B3}, {0xA9B6, 0xA9B9}, {0xA9BC, 0xA9BD},
    {0xA9E5, 0xA9E5}, {0xAA29, 0xAA2E}, {0xAA31, 0xAA32}, {0xAA35, 0xAA36},
    {0xAA43, 0xAA43}, {0xAA4C, 0xAA4C}, {0xAA7C, 0xAA7C}, {0xAAB0, 0xAAB0},
    {0xAAB2, 0xAAB4}, {0xAAB7, 0xAAB8}, {0xAABE, 0xAABF}, {0xAAC1, 0xAAC1},
    {0xAAEC, 0xAAED}, {0xAAF6, 0xAAF6}, {0xABE5, 0xABE5}, {0xABE8, 0xABE8},
    {0xABED, 0xABED}, {0xD7B0, 0xD7FB}, {0xFB1E, 0xFB1E}, {0xFE00, 0xFE0F},
    {0xFE20, 0xFE2F}, {0xFEFF, 0xFEFF}, {0xFFF9, 0xFFFB}, {0x101FD, 0x101FD},
    {0x102E0, 0x102E0}, {0x10376, 0x1037A}, {0x10A01, 0x10A0F}, {0x10A38, 0x10A3F},
    {0x10AE5, 0x10AE6}, {0x10D24, 0x10D27}, {0x10EAB, 0x10EAC}, {0x10F46, 0x10F50},
    {0x10F82, 0x10F85}, {0x11001, 0x11001}, {0x11038, 0x11046}, {0x11070, 0x11070},
    {0x11073, 0x11074}, {0x1107F, 0x11081}, {0x110B3, 0x110B6}, {0x110B9, 0x110BA},
    {0x110BD, 0x110BD}, {0x110C2, 0x110CD}, {0x11100, 0x11102}, {0x11127, 0x1112B},
    {0x1112D, 0x11134}, {0x11173, 0x11173}, {0x11180, 0x11181}, {0x111B6, 0x111BE},
    {0x111C9, 0x111CC}, {0x111CF, 0x111CF}, {0x1122F, 0x11231}, {0x11234, 0x11234},
    {0x11236, 0x11237}, {0x1123E, 0x1123E}, {0x112DF, 0x112DF}, {0x112E3, 0x112EA},
    {0x11300, 0x11301}, {0x1133B, 0x1133C}, {0x11340, 0x11340}, {0x11366, 0x11374},
    {0x11438, 0x1143F}, {0x11442, 0x11444}, {0x11446, 0x11446}, {0x1145E, 0x1145E},
    {0x114B3, 0x114B8}, {0x114BA, 0x114BA}, {0x114BF, 0x114C0}, {0x114C2, 0x114C3},
    {0x115B2, 0x115B5}, {0x115BC, 0x115BD}, {0x115BF, 0x115C0}, {0x115DC, 0x115DD},
    {0x11633, 0x1163A}, {0x1163D, 0x1163D}, {0x1163F, 0x11640}, {0x116AB, 0x116AB},
    {0x116AD, 0x116AD}, {0x116B0, 0x116B5}, {0x116B7, 0x116B7}, {0x1171D, 0x1171F},
    {0x11722, 0x11725}, {0x11727, 0x1172B}, {0x1182F, 0x11837}, {0x11839, 0x1183A},
    {0x1193B, 0x1193C}, {0x1193E, 0x1193E}, {0x11943, 0x11943}, {0x119D4, 0x119DB},
    {0x119E0, 0x119E0}, {0x11A01, 0x11A0A}, {0x11A33, 0x11A38}, {0x11A3B, 0x11A3E},
    {0x11A47, 0x11A47}, {0x11A51, 0x11A56}, {0x11A59, 0x11A5B}, {0x11A8A, 0x11A96},
    {0x11A98, 0x11A99}, {0x11C30, 0x11C3D}, {0x11C3F, 0x11C3F}, {0x11C92, 0x11CA7},
    {0x11CAA, 0x11CB0}, {0x11CB2, 0x11CB3}, {0x11CB5, 0x11CB6}, {0x11D31, 0x11D45},
    {0x11D47, 0x11D47}, {0x11D90, 0x11D91}, {0x11D95, 0x11D95}, {0x11D97, 0x11D97},
    {0x11EF3, 0x11EF4}, {0x13430, 0x13438}, {0x16AF0, 0x16AF4}, {0x16B30, 0x16B36},
    {0x16F4F, 0x16F4F}, {0x16F8F, 0x16F92}, {0x16FE4, 0x16FE4}, {0x1BC9D, 0x1BC9E},
    {0x1BCA0, 0x1CF46}, {0x1D167, 0x1D169}, {0x1D173, 0x1D182}, {0x1D185, 0x1D18B},
    {0x1D1AA, 0x1D1AD}, {0x1D242, 0x1D244}, {0x1DA00, 0x1DA36}, {0x1DA3B, 0x1DA6C},
    {0x1DA75, 0x1DA75}, {0x1DA84, 0x1DA84}, {0x1DA9B, 0x1DAAF}, {0x1E000, 0x1E02A},
    {0x1E130, 0x1E136}, {0x1E2AE, 0x1E2AE}, {0x1E2EC, 0x1E2EF}, {0x1E8D0, 0x1E8D6},
    {0x1E944, 0x1E94A}, {0xE0001, 0xE01EF},
};
static const uint32_t wide[][2] = {
    {0x1100, 0x115F}, {0x231A, 0x231B}, {0x2329, 0x232A}, {0x23E9, 0x23EC},
    {0x23F0, 0x23F0}, {0x23F3, 0x23F3}, {0x25FD, 0x25FE}, {0x2614, 0x2615},
    {0x2648, 0x2653}, {0x267F, 0x267F}, {0x2693, 0x2693}, {0x26A1, 0x26A1},
    {0x26AA, 0x26AB}, {0x26BD, 0x26BE}, {0x26C4, 0x26C5}, {0x26CE, 0x26CE},
    {0x26D4, 0x26D4}, {0x26EA, 0x26EA}, {0x26F2, 0x26F3}, {0x26F5, 0x26F5},
    {0x26FA, 0x26FA}, {0x26FD, 0x26FD}, {0x2705, 0x2705}, {0x270A, 0x270B},
    {0x2728, 0x2728}, {0x274C, 0x274C}, {0x274E, 0x274E}, {0x2753, 0x2755},
    {0x2757, 0x2757}, {0x2795, 0x2797}, {0x27B0, 0x27B0}, {0x27BF, 0x27BF},
    {0x2B1B, 0x2B1C}, {0x2B50, 0x2B50}, {0x2B55, 0x2B55}, {0x2E80, 0x3029},
    {0x302E, 0x303E}, {0x3041, 0x3096}, {0x309B, 0x3247}, {0x3250, 0x4DBF},
    {0x4E00, 0xA4C6}, {0xA960, 0xA97C}, {0xAC00, 0xD7A3}, {0xF900, 0xFAFF},
    {0xFE10, 0xFE19}, {0xFE30, 0xFE6B}, {0xFF01, 0xFF60}, {0xFFE0, 0xFFE6},
    {0x16FE0, 0x16FE3}, {0x16FF0, 0x1B2FB}, {0x1F004, 0x1F004}, {0x1F0CF, 0x1F0CF},
    {0x1F18E, 0x1F18E}, {0x1F191, 0x1F19A}, {0x1F200, 0x1F320}, {0x1F32D, 0x1F335},
    {0x1F337, 0x1F37C}, {0x1F37E, 0x1F393}, {0x1F3A0, 0x1F3CA}, {0x1F3CF, 0x1F3D3},
    {0x1F3E0, 0x1F3F0}, {0x1F3F4, 0x1F3F4}, {0x1F3F8, 0x1F43E}, {0x1F440, 0x1F440},
    {0x1F442, 0x1F4FC}, {0x1F4FF, 0x1F53D}, {0x1F54B, 0x1F54E}, {0x1F550, 0x1F567},
    {0x1F57A, 0x1F57A}, {0x1F595, 0x1F596}, {0x1F5A4, 0x1F5A4}, {0x1F5FB, 0x1F64F},
    {0x1F680, 0x1F6C5}, {0x1F6CC, 0x1F6CC}, {0x1F6D0, 0x1F6D2}, {0x1F6D5, 0x1F6DF},
    {0x1F6EB, 0x1F6EC}, {0x1F6F4, 0x1F6FC}, {0x1F7E0, 0x1F7F0}, {0x1F90C, 0x1F93A},
    {0x1F93C, 0x1F945}, {0x1F947, 0x1F9FF}, {0x1FA70, 0x1FAF6}, {0x20000, 0x3FFFD},
};

static bool in_ranges(uint32_t cp, const uint32_t (*r)[2], size_t n)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cp < r[mid][0])
            hi = mid;
        else if (cp > r[mid][1])
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

/* The terminal columns the valid character at s[0..len) takes, as
 * wcwidth() has them: 2 for East Asian wide and fullwidth characters and
 * emoji (a 猫 or a 😀), 0 for combining marks (the accent of an NFD é)
 * and zero-width ones, else 1. */
static size_t columns_of(const unsigned char *s, size_t len)
{
    uint32_t cp = len == 2   ? (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F)
                  : len == 3 ? (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F)
                             : (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
                                   (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
    if (in_ranges(cp, zero_width, sizeof zero_width / sizeof *zero_width))
        return 0;
    return in_ranges(cp, wide, sizeof wide / sizeof *wide) ? 2 : 1;
}

size_t printer_put_text(FILE *f, const char *text, size_t max, bool keep_lines)
{
    const unsigned char *s = (const unsigned char *)(text ? text : "(null)");
    size_t n = strlen((const char *)s), cols = 0;
    for (size_t i = 0; i < n;) {
        if (i >= max) {
            int w = fprintf(f, "\u2026 (%zu byte%s more)", n - i, n - i == 1 ? "" : "s");
            return cols + (w > 2 ? (size_t)w - 2 : 0); /* the ellipsis is 3 bytes, 1 column */
        }
        size_t len = s[i] < 0x80 ? 1 : utf8_char_len(s + i, n - i);
        bool plain = s[i] >= 0x20 && s[i] != 0x7F;
        int escaped = 0;
        if (len == 1 && (plain || (keep_lines && (s[i] == '\n' || s[i] == '\t')))) {
            fputc(s[i], f);
            cols++;
        } else if (len == 2 && s[i] == 0xC2 && s[i + 1] < 0xA0) { /* C1 control (U+0080-U+009F) */
            escaped = fprintf(f, "\\u%04X", s[i + 1]);
        } else if (len == 3 && is_bidi_control(s + i)) {
            escaped = fprintf(f, "\\u%04X", 0x2000 | (s[i + 1] & 0x3F) << 6 | (s[i + 2] & 0x3F));
        } else if (len > 1) {
            fwrite(s + i, 1, len, f);
            cols += columns_of(s + i, len);
        } else { /* a control or an invalid byte */
            escaped = fprintf(f, "\\x%02X", s[i]);
        }
        cols += escaped > 0 ? (size_t)escaped : 0;
        i += len ? len : 1;
    }
    return cols;
}

/* Erases the progress block so a row's line does not land inside it. */
static void clear_progress(printer *pr)
{
    if (pr->tty && pr->drawn) {
        fprintf(stderr, "\033[%dA\033[J", pr->drawn);
        pr->drawn = 0;
    }
}

void printer_row(const sl_row_view *row, void *user)
{
    printer *pr = user;
    if (row->error ? pr->hide_failed : pr->quiet)
        return;
    pthread_mutex_lock(&pr->mu);
    clear_progress(pr);
    if (row->error) {
        if (pr->failed_shown < PRINTER_FAILED_MAX) {
            fputs("sluice: ", stderr);
            printer_put_text(stderr, row->id, SHOW_ID_MAX, false);
            fprintf(stderr, " failed (%s): ", row->error_stage);
            printer_put_text(stderr, row->error, SHOW_TEXT_MAX, false);
            fputc('\n', stderr);
        } else if (pr->failed_shown == PRINTER_FAILED_MAX) {
            fprintf(stderr, "sluice: more than %d rows failed: the rest are not printed one by "
                    "one (each row's error is in the output's error column; the progress "
                    "line counts them)\n", PRINTER_FAILED_MAX);
        }
        pr->failed_shown++;
    } else if (pr->shown < pr->show && row->caption) { /* a dry run's rows have none */
        for (size_t w = printer_put_text(stdout, row->id, SHOW_ID_MAX, false); w < 28; w++)
            putchar(' ');
        putchar(' ');
        printer_put_text(stdout, row->caption, SHOW_TEXT_MAX, true);
        putchar('\n');
        fflush(stdout);
        pr->shown++;
    }
    pthread_mutex_unlock(&pr->mu);
}

static void fmt_duration(double s, char *buf, size_t n)
{
    long t = (long)(s + 0.5);
    snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
}

static void print_progress_locked(printer *pr, const sl_caption_progress *g);

/* On a terminal: one line per stage plus a total, redrawn in place. Else:
 * one plain line every line_every seconds, and a last one at the end.
 * Counts are images (rows), never internal batches. */
void printer_progress(const sl_caption_progress *g, void *user)
{
    printer *pr = user;
    if (pr->quiet)
        return;
    pthread_mutex_lock(&pr->mu);
    print_progress_locked(pr, g);
    pthread_mutex_unlock(&pr->mu);
}

static void print_progress_locked(printer *pr, const sl_caption_progress *g)
{
    double rate = g->elapsed_s > 0 ? (double)g->rows_done / g->elapsed_s : 0.0;
    const char *unit = pr->unit ? pr->unit : "images";
    char elapsed[32], eta[32], of[64] = "";
    fmt_duration(g->elapsed_s, elapsed, sizeof elapsed);
    if (g->eta_s >= 0)
        fmt_duration(g->eta_s, eta, sizeof eta);
    else
        snprintf(eta, sizeof eta, "?");
    if (g->rows_total >= 0)
        snprintf(of, sizeof of, " of %lld (%.0f%%)", (long long)g->rows_total,
                 g->rows_total ? 100.0 * (double)g->rows_done / (double)g->rows_total : 100.0);
    char skipped[224] = "";
    /* Rows the writer could not write were fine rows: not failed ones. */
    if (g->rows_write_failed)
        snprintf(skipped, sizeof skipped, ", %llu not written (write failed)",
                 (unsigned long long)g->rows_write_failed);
    if (g->rows_skipped)
        snprintf(skipped + strlen(skipped), sizeof skipped - strlen(skipped),
                 ", %llu skipped (done before)", (unsigned long long)g->rows_skipped);
    if (g->ranks > 1) /* rank 0 of an MPI job: the whole job as well */
        snprintf(skipped + strlen(skipped), sizeof skipped - strlen(skipped),
                 " [job: %lld row%s committed, %d of %d ranks done]", (long long)g->job_rows,
                 g->job_rows == 1 ? "" : "s", g->ranks_finished, g->ranks);
    if (g->retry_failed && !pr->retry_said) {
        clear_progress(pr);
        fprintf(stderr, "sluice: retrying: %lld failed row%s taken out of %lld part%s to be "
                        "captioned again (%lld other row%s rewritten, %.2f s)\n",
                (long long)g->rows_retried, g->rows_retried == 1 ? "" : "s",
                (long long)g->parts_retried, g->parts_retried == 1 ? "" : "s",
                (long long)g->rows_retry_kept, g->rows_retry_kept == 1 ? "" : "s",
                g->retry_seconds);
        pr->retry_said = true;
    }
    if (g->inputs_done_before > 0 && !pr->resume_said) {
        /* Inputs, as the skipped count; the rows they made as the output
         * holds them (with --rows-per-task one per input and task). */
        clear_progress(pr);
        char failed[96] = "";
        /* A batch file's failed requests are answered again otherwise
         * (batch.md#resume: a batch file of them, into another folder). */
        if (g->rows_failed_before > 0)
            snprintf(failed, sizeof failed, ", %lld failed: %s", (long long)g->rows_failed_before,
                     pr->unit ? "docs/batch.md#resume says how to answer them again"
                              : "--retry-failed tries those again");
        fprintf(stderr, "sluice: resuming: %lld input%s already done by an earlier run (%lld "
                        "row%s in the output%s); they are skipped\n",
                (long long)g->inputs_done_before, g->inputs_done_before == 1 ? " was" : "s were",
                (long long)g->rows_done_before, g->rows_done_before == 1 ? "" : "s", failed);
        pr->resume_said = true;
    }
    if (pr->tty) {
        clear_progress(pr);
        for (size_t i = 0; i < g->n_stages; i++) {
            const sl_stage_stats *s = &g->stages[i];
            double all = s->busy_s + s->idle_s + s->blocked_s;
            fprintf(stderr, "  %-7s x%-2d %9llu in %9llu out %6llu failed  queue %5llu (%6.1f MB)"
                            "  busy %3.0f%%%s\n",
                    s->name, s->workers, (unsigned long long)s->rows_in,
                    (unsigned long long)s->rows_out, (unsigned long long)s->rows_failed,
                    (unsigned long long)s->queue_rows, (double)s->queue_bytes / 1e6,
                    all > 0 ? 100.0 * s->busy_s / all : 0.0,
                    s->in_flight ? "  (in engine)" : "");
        }
        fprintf(stderr, "  %llu%s %s done, %llu failed%s, %.2f %s/s, %s elapsed, ETA %s, "
                        "%.0f of %.0f MB in flight%s\n",
                (unsigned long long)g->rows_done, of, unit, (unsigned long long)g->rows_failed,
                skipped, rate, unit, elapsed, eta, (double)g->bytes_in_flight / 1e6, (double)g->memory_budget / 1e6,
                g->final ? " (finished)" : "");
        pr->drawn = (int)g->n_stages + 1;
        if (g->final)
            pr->drawn = 0; /* leave the last block on screen */
        return;
    }
    double now = g->elapsed_s;
    if (!g->final && now - pr->last_line < pr->line_every)
        return;
    pr->last_line = now;
    fprintf(stderr, "progress: %llu%s %s done, %llu failed%s, %.2f %s/s, %s elapsed, ETA %s |",
            (unsigned long long)g->rows_done, of, unit, (unsigned long long)g->rows_failed, skipped,
            rate, unit, elapsed, eta);
    for (size_t i = 0; i < g->n_stages; i++) {
        const sl_stage_stats *s = &g->stages[i];
        if (i == 0) /* the source has no input queue */
            fprintf(stderr, " %s %llu", s->name, (unsigned long long)s->rows_out);
        else
            fprintf(stderr, " %s %llu/%llu q%llu", s->name, (unsigned long long)s->rows_out,
                    (unsigned long long)s->rows_in, (unsigned long long)s->queue_rows);
    }
    fprintf(stderr, "%s\n", g->final ? " | finished" : "");
}

void printer_metrics_url(const char *url, void *user)
{
    printer *pr = user;
    if (pr->quiet)
        return;
    pthread_mutex_lock(&pr->mu);
    clear_progress(pr);
    if (pr->token_file) /* not the token itself: a job's log is often read by others */
        fprintf(stderr, "sluice: metrics at %s/metrics, live page at %s/?token=TOKEN (TOKEN: "
                        "the first line of %s)\n", url, url, pr->token_file);
    else
        fprintf(stderr, "sluice: metrics at %s/metrics, live page at %s/\n", url, url);
    pthread_mutex_unlock(&pr->mu);
}

/* Library log lines (warnings from any thread) go through the same lock,
 * so they never land inside a progress block. */
static void printer_log(sl_log_level level, const char *message, void *user)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};
    printer *pr = user;
    pthread_mutex_lock(&pr->mu);
    clear_progress(pr);
    fprintf(stderr, "sluice: %s: ", names[level]);
    printer_put_text(stderr, message, SIZE_MAX, false);
    fputc('\n', stderr);
    pthread_mutex_unlock(&pr->mu);
}

void printer_init(printer *pr)
{
    pthread_mutex_init(&pr->mu, NULL);
    sl_log_set_callback(printer_log, pr);
}

void printer_finish(printer *pr)
{
    sl_log_set_callback(NULL, NULL);
    pthread_mutex_destroy(&pr->mu);
}

