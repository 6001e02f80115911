package text

import (
	"testing"
	"unicode/utf8"
)

func TestValidUpTo(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
	}{
		{"good", -1}, {"ok \xff", 3}, {"ab\xe2\x82", 2}, {"x\xed\xa0\x80", 1},
		{"\xf4\x90\x80\x80", 0}, {"\xc0\xaf", 0}, {"é€😀", -1},
	} {
		if got := ValidUpTo([]byte(c.in)); got != c.want {
			t.Errorf("ValidUpTo(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

// Lossy reads s as `String::from_utf8_lossy` does.
func lossy(s string) string {
	var out []byte
	for i := 0; i < len(s); {
		var r rune
		r, i = Next([]byte(s), i)
		out = utf8.AppendRune(out, r)
	}
	return string(out)
}

func TestNextIsLossyAsRust(t *testing.T) {
	// Expected values from Rust's `String::from_utf8_lossy`.
	for _, c := range []struct{ in, want string }{
		{"\xff\xfe9", "\uFFFD\uFFFD9"},
		{"\xe2\x82\n", "\uFFFD\n"},
		{"\xed\xa0\x80", "\uFFFD\uFFFD\uFFFD"},
		{"\xf0\x9f\x98", "\uFFFD"},
		{"\xf4\x90\x80\x80", "\uFFFD\uFFFD\uFFFD\uFFFD"},
		{"a\xc3", "a\uFFFD"},
		{"\xef\xbf\xbd", "\uFFFD"},
	} {
		if got := lossy(c.in); got != c.want {
			t.Errorf("lossy(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
