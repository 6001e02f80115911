// Package export_sluice_plugin_processor is word-split in Go: the same stage
// as `plugins/word-split` (Rust). One record per word of each value, split on
// Unicode whitespace, with the input's timestamp and no key;
// `lowercase = "true"` lowercases the words exactly as Rust's
// `str::to_lowercase` does; a value that is not UTF-8 fails that record
// alone (it is dead-lettered).
//
// The bindings (`sluice/bindings/...`) are in `../../bindings`, made by
// `wit-bindgen go`; they call Init and Process. `unicode.go` holds the Rust
// toolchain's lowercase tables: Go's `strings.ToLower` has no final-sigma
// rule, lowercases İ to a plain i, and follows Go's Unicode version rather
// than Rust's.
package export_sluice_plugin_processor

import (
	"strconv"
	"unicode/utf8"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	types "sluice/bindings/sluice_plugin_types"
	"sluice/gc"
	"sluice/text"
)

type result = witTypes.Result[types.Output, types.Error]

var lowercase bool

// Init reads the config: `lowercase`, `true` or `false`. As the Rust SDK
// does, it reports an unknown key before a bad value.
func Init(config []witTypes.Tuple2[string, string]) witTypes.Result[witTypes.Unit, types.Error] {
	defer gc.Call()()
	invalid := func(message string) witTypes.Result[witTypes.Unit, types.Error] {
		return witTypes.Err[witTypes.Unit](types.MakeErrorInvalidConfig(message))
	}
	lowercase = false
	for _, kv := range config {
		if kv.F0 != "lowercase" {
			return invalid("unknown config key `" + kv.F0 + "` (allowed keys: `lowercase`)")
		}
	}
	for _, kv := range config {
		switch kv.F1 {
		case "true", "false":
			lowercase = kv.F1 == "true"
		default:
			return invalid("`lowercase`: `" + kv.F1 +
				"` is not a valid boolean (provided string was not `true` or `false`)")
		}
	}
	return witTypes.Ok[witTypes.Unit, types.Error](witTypes.Unit{})
}

// The output batch being built: one value column, timestamps, no keys.
type out struct {
	data       []byte
	offsets    []uint32
	timestamps []uint64
	chars      []rune // scratch: a non-ASCII word's characters
}

// Process emits one record per word of each value.
func Process(info types.BatchInfo, input types.Batch) result {
	defer gc.Call()()
	values := input.Values
	n := len(input.Timestamps)
	o := out{
		data:       make([]byte, 0, len(values.Data)),
		offsets:    make([]uint32, 1, n*8+1),
		timestamps: make([]uint64, 0, n*8),
	}
	var failures []types.RecordFailure
	for r := 0; r < n; r++ {
		value := values.Data[values.Offsets[r]:values.Offsets[r+1]]
		if bad := text.ValidUpTo(value); bad >= 0 {
			failures = append(failures, types.RecordFailure{
				Index:   uint32(r),
				Message: "value is not valid UTF-8 at byte " + strconv.Itoa(bad),
			})
			continue
		}
		timestamp := input.Timestamps[r]
		start, ascii := -1, true // the current word's first byte, if any
		for i := 0; i < len(value); {
			c, size := rune(value[i]), 1
			if c >= utf8.RuneSelf {
				c, size = utf8.DecodeRune(value[i:])
			}
			if text.IsWhitespace(c) {
				if start >= 0 {
					o.emit(value[start:i], ascii, timestamp)
					start = -1
				}
			} else if start < 0 {
				start, ascii = i, size == 1
			} else {
				ascii = ascii && size == 1
			}
			i += size
		}
		if start >= 0 {
			o.emit(value[start:], ascii, timestamp)
		}
	}
	output := types.Output{Failures: failures}
	if len(o.timestamps) > 0 { // an empty column has no offsets at all
		output.Batch.Timestamps = o.timestamps
		output.Batch.Values = types.Column{Data: o.data, Offsets: o.offsets}
	}
	return witTypes.Ok[types.Output, types.Error](output)
}

// emit appends word (valid UTF-8; ascii says whether it is all ASCII),
// lowercased if asked, as one record.
func (o *out) emit(word []byte, ascii bool, timestamp uint64) {
	switch {
	case !lowercase:
		o.data = append(o.data, word...)
	case ascii:
		for _, b := range word {
			if b >= 'A' && b <= 'Z' {
				b += 'a' - 'A'
			}
			o.data = append(o.data, b)
		}
	default:
		o.chars = o.chars[:0]
		for _, c := range string(word) {
			o.chars = append(o.chars, c)
		}
		for i, c := range o.chars {
			switch c {
			case 'Σ': // ς at the end of a word, else σ
				if ignorableThenCased(o.chars, i-1, -1) && !ignorableThenCased(o.chars, i+1, 1) {
					c = 'ς'
				} else {
					c = 'σ'
				}
			case 'İ': // i + combining dot above
				o.data = append(o.data, 'i')
				c = 0x307
			default:
				c = lowerChar(c)
			}
			o.data = utf8.AppendRune(o.data, c)
		}
	}
	o.offsets = append(o.offsets, uint32(len(o.data)))
	o.timestamps = append(o.timestamps, timestamp)
}

// lowerChar is c lowercased, by the generated table of runs.
func lowerChar(c rune) rune {
	u := uint32(c)
	lo, hi := 0, len(lowerRuns)
	for lo < hi {
		mid := (lo + hi) / 2
		if lowerRuns[mid].first <= u {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == 0 {
		return c
	}
	run := &lowerRuns[lo-1]
	if u <= run.last && (u-run.first)%run.stride == 0 {
		return rune(int32(u) + run.delta)
	}
	return c
}

// sigmaClass is how c counts for the final-sigma rule: sigmaCased,
// sigmaIgnorable or 0.
func sigmaClass(c rune) uint8 {
	u := uint32(c)
	lo, hi := 0, len(sigmaRanges)
	for lo < hi {
		mid := (lo + hi) / 2
		if sigmaRanges[mid].first <= u {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo > 0 && u <= sigmaRanges[lo-1].last {
		return sigmaRanges[lo-1].class
	}
	return 0
}

// ignorableThenCased says whether, skipping case-ignorable characters of
// chars from at in steps of step (±1), the next character is cased.
func ignorableThenCased(chars []rune, at, step int) bool {
	for ; at >= 0 && at < len(chars); at += step {
		if class := sigmaClass(chars[at]); class != sigmaIgnorable {
			return class == sigmaCased
		}
	}
	return false
}
