// Package export_sluice_plugin_processor is average in Go: the mean of
// numeric values per key, within one batch, as `plugins/average` (Rust)
// computes and prints it. Each record's value is a number in decimal text,
// surrounding whitespace ignored; records without a key are grouped under
// the empty key. One output record per key, in order of first appearance:
// key = the key, value = the mean printed as Rust prints an `f64` (shortest
// text that reads back the same, never an exponent: "2.5", "3",
// "0.0000001"), timestamp = the latest of the group. A value that is not a
// finite number fails that record alone, with the Rust plugin's message.
//
// Unlike the Rust plugin, it has no `field` setting (JSON values).
package export_sluice_plugin_processor

import (
	"math"
	"strconv"
	"unicode/utf8"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	types "sluice/bindings/sluice_plugin_types"
	"sluice/gc"
	"sluice/text"
)

// excerptChars is the longest excerpt of a bad value quoted in a failure
// message, in characters.
const excerptChars = 64

// Init takes no config keys, and says so of `field`.
func Init(config []witTypes.Tuple2[string, string]) witTypes.Result[witTypes.Unit, types.Error] {
	defer gc.Call()()
	if len(config) == 0 {
		return witTypes.Ok[witTypes.Unit, types.Error](witTypes.Unit{})
	}
	message := "unknown config key `" + config[0].F0 + "` (this plugin takes no config keys)"
	if config[0].F0 == "field" {
		message = "`field` (a JSON field) is not supported by the Go average: use the Rust `average`"
	}
	return witTypes.Err[witTypes.Unit](types.MakeErrorInvalidConfig(message))
}

// One key's running sum.
type group struct {
	key    []byte // into the input batch
	sum    float64
	count  uint64
	latest uint64
}

// Process emits each key's mean.
func Process(info types.BatchInfo, input types.Batch) witTypes.Result[types.Output, types.Error] {
	defer gc.Call()()
	n := len(input.Timestamps)
	values, keys := input.Values, input.Keys
	hasKeys := len(keys.Offsets) > 1
	var groups []group
	index := make(map[string]int)
	var failures []types.RecordFailure
	for r := 0; r < n; r++ {
		number, ok := readNumber(values.Data[values.Offsets[r]:values.Offsets[r+1]])
		if !ok {
			failures = append(failures, types.RecordFailure{
				Index:   uint32(r),
				Message: notANumber(values.Data[values.Offsets[r]:values.Offsets[r+1]]),
			})
			continue
		}
		var key []byte
		absent := !hasKeys ||
			(r/8 < len(input.KeysAbsent) && input.KeysAbsent[r/8]>>(r%8)&1 == 1)
		if !absent {
			key = keys.Data[keys.Offsets[r]:keys.Offsets[r+1]]
		}
		timestamp := input.Timestamps[r]
		g, seen := index[string(key)]
		if !seen {
			g = len(groups)
			index[string(key)] = g
			groups = append(groups, group{key: key, latest: timestamp})
		}
		groups[g].sum += number
		groups[g].count++
		groups[g].latest = max(groups[g].latest, timestamp)
	}

	output := types.Output{Failures: failures}
	if len(groups) > 0 { // an empty column has no offsets at all
		b := &output.Batch
		b.Values.Offsets = make([]uint32, 1, len(groups)+1)
		b.Keys.Offsets = make([]uint32, 1, len(groups)+1)
		for _, g := range groups {
			b.Values.Data = appendF64(b.Values.Data, g.sum/float64(g.count))
			b.Keys.Data = append(b.Keys.Data, g.key...)
			b.Values.Offsets = append(b.Values.Offsets, uint32(len(b.Values.Data)))
			b.Keys.Offsets = append(b.Keys.Offsets, uint32(len(b.Keys.Data)))
			b.Timestamps = append(b.Timestamps, g.latest)
		}
	}
	return witTypes.Ok[types.Output, types.Error](output)
}

// readNumber reads value as Rust's `str::trim` and `f64::from_str` do (after
// `String::from_utf8_lossy`), keeping only finite numbers.
func readNumber(value []byte) (float64, bool) {
	// Trim whitespace at both ends, by characters.
	start, end := -1, 0
	for i := 0; i < len(value); {
		at := i
		var c rune
		c, i = text.Next(value, i)
		if !text.IsWhitespace(c) {
			if start < 0 {
				start = at
			}
			end = i
		}
	}
	if start < 0 || !isDecimal(value[start:end]) {
		return 0, false
	}
	// Correctly rounded, as Rust's; out of range is ±Inf, not finite.
	number, err := strconv.ParseFloat(string(value[start:end]), 64)
	return number, err == nil && !math.IsInf(number, 0)
}

// isDecimal says whether s is a decimal number in Rust's `f64` syntax: an
// optional sign, digits with at most one `.` (at least one digit), an
// optional exponent `e`/`E`, optional sign, digits. Go's ParseFloat also
// reads hex, `_` separators, `inf` and `nan`, which Rust does not (or which
// are not finite), so they are ruled out here first.
func isDecimal(s []byte) bool {
	i, digits := 0, 0
	isDigit := func() bool { return i < len(s) && s[i] >= '0' && s[i] <= '9' }
	if i < len(s) && (s[i] == '+' || s[i] == '-') {
		i++
	}
	for ; isDigit(); i++ {
		digits++
	}
	if i < len(s) && s[i] == '.' {
		for i++; isDigit(); i++ {
			digits++
		}
	}
	if digits == 0 {
		return false
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		expDigits := 0
		for ; isDigit(); i++ {
			expDigits++
		}
		if expDigits == 0 {
			return false
		}
	}
	return i == len(s)
}

// notANumber is the failure message for value: the untrimmed value, read
// lossily and cut to excerptChars characters, as Rust's.
func notANumber(value []byte) string {
	message := []byte("value `")
	i := 0
	for chars := 0; i < len(value) && chars < excerptChars; chars++ {
		var c rune
		c, i = text.Next(value, i)
		message = utf8.AppendRune(message, c)
	}
	if i < len(value) {
		message = append(message, "…"...)
	}
	return string(append(message, "` is not a number"...))
}

// appendF64 appends x as Rust's `Display` for `f64` prints it: the fewest
// significant digits that read back as x (the nearest such), positional,
// never an exponent. strconv's shortest 'f' format is the same but for the
// names of the infinities.
func appendF64(out []byte, x float64) []byte {
	switch {
	case math.IsInf(x, 1):
		return append(out, "inf"...)
	case math.IsInf(x, -1):
		return append(out, "-inf"...)
	}
	return strconv.AppendFloat(out, x, 'f', -1, 64)
}
