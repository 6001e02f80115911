// UTF-8 and whitespace as Rust reads them, for the C plugins that must give
// the Rust plugins' answers.
#ifndef SLUICE_UTF8_H
#define SLUICE_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// `char::is_whitespace` in Rust: the Unicode White_Space property.
static inline bool is_whitespace(uint32_t c) {
    return (c >= 0x9 && c <= 0xD) || c == 0x20 || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
           c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Reads the character at `s[*i]` (`*i < n`) into `*c` and moves `*i` past
// it. When the bytes there are not valid UTF-8 (as `std::str::from_utf8`
// judges: no overlong forms, surrogates or code points past U+10FFFF),
// returns false, sets `*c` to U+FFFD and moves `*i` past the longest
// invalid prefix, so that a caller substituting U+FFFD reads as
// `String::from_utf8_lossy` does.
static inline bool utf8_next(const uint8_t *s, size_t n, size_t *i, uint32_t *c) {
    uint8_t b = s[*i];
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b < 0x80) { *c = b; (*i)++; return true; }
    else if (b >= 0xC2 && b <= 0xDF) { *c = b & 0x1F; len = 1; }
    else if (b >= 0xE0 && b <= 0xEF) {
        *c = b & 0x0F; len = 2;
        if (b == 0xE0) lo = 0xA0; // no overlong forms
        if (b == 0xED) hi = 0x9F; // no surrogates
    } else if (b >= 0xF0 && b <= 0xF4) {
        *c = b & 0x07; len = 3;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F; // nothing past U+10FFFF
    } else { *c = 0xFFFD; (*i)++; return false; }
    for (size_t j = 1; j <= len; j++) {
        if (*i + j >= n || s[*i + j] < lo || s[*i + j] > hi) {
            *c = 0xFFFD;
            *i += j;
            return false;
        }
        *c = (*c << 6) | (s[*i + j] & 0x3F);
        lo = 0x80; hi = 0xBF;
    }
    *i += len + 1;
    return true;
}

// Writes `c` as UTF-8 to `out` (room for 4 bytes); returns the length.
static inline size_t utf8_encode(uint32_t c, uint8_t *out) {
    if (c < 0x80) { out[0] = c; return 1; }
    if (c < 0x800) { out[0] = 0xC0 | c >> 6; out[1] = 0x80 | (c & 0x3F); return 2; }
    if (c < 0x10000) {
        out[0] = 0xE0 | c >> 12; out[1] = 0x80 | (c >> 6 & 0x3F); out[2] = 0x80 | (c & 0x3F);
        return 3;
    }
    out[0] = 0xF0 | c >> 18; out[1] = 0x80 | (c >> 12 & 0x3F);
    out[2] = 0x80 | (c >> 6 & 0x3F); out[3] = 0x80 | (c & 0x3F);
    return 4;
}

#endif
