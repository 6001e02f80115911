// Package text reads UTF-8 and whitespace exactly as Rust does, for the Go
// plugins that must give the Rust plugins' answers: where a value stops being
// valid UTF-8 (`Utf8Error::valid_up_to`), its characters as
// `String::from_utf8_lossy` reads them, and `char::is_whitespace`.
//
// Go's `unicode/utf8` accepts and rejects the same byte sequences as Rust,
// but replaces every bad byte with its own U+FFFD, where Rust replaces each
// longest bad prefix of a sequence with one.
package text

import "unicode/utf8"

// IsWhitespace is Rust's `char::is_whitespace`: the Unicode White_Space
// property, as a fixed list (the C plugins' list) rather than Go's
// `unicode.IsSpace`, which reads the same property from Go's own tables.
func IsWhitespace(c rune) bool {
	if c < 0x80 {
		return c == ' ' || (c >= '\t' && c <= '\r')
	}
	return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
		c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000
}

// ValidUpTo is the offset of the first byte of s that does not start a valid
// UTF-8 sequence (Rust's `Utf8Error::valid_up_to`), or -1 when s is valid.
func ValidUpTo(s []byte) int {
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return -1
}

// Next reads the character at s[i] (i < len(s)) and returns it with the
// offset after it. Where the bytes are not valid UTF-8 it returns U+FFFD and
// the offset past the longest bad prefix of the sequence, so that reading on
// gives what `String::from_utf8_lossy` gives.
func Next(s []byte, i int) (rune, int) {
	b := s[i]
	if b < utf8.RuneSelf {
		return rune(b), i + 1
	}
	if r, size := utf8.DecodeRune(s[i:]); r != utf8.RuneError || size > 1 {
		return r, i + size
	}
	// Invalid: how many bytes Rust takes into one U+FFFD. A lead byte is
	// followed by up to `need` continuation bytes, the first in [lo, hi].
	need, lo, hi := 0, byte(0x80), byte(0xBF)
	switch {
	case b >= 0xC2 && b <= 0xDF:
		need = 1
	case b >= 0xE0 && b <= 0xEF:
		need = 2
		if b == 0xE0 {
			lo = 0xA0 // no overlong forms
		} else if b == 0xED {
			hi = 0x9F // no surrogates
		}
	case b >= 0xF0 && b <= 0xF4:
		need = 3
		if b == 0xF0 {
			lo = 0x90
		} else if b == 0xF4 {
			hi = 0x8F // nothing past U+10FFFF
		}
	}
	j := 1
	for ; j <= need && i+j < len(s) && s[i+j] >= lo && s[i+j] <= hi; j++ {
		lo, hi = 0x80, 0xBF
	}
	return utf8.RuneError, i + j
}
