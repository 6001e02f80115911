// Package export_sluice_plugin_processor is `{{name}}`, a Sluice stage in Go:
// each record's value with the config's `suffix` (default `!`) appended, with
// its timestamp (keys are not kept); a value that is not UTF-8 goes to the
// dead letters on its own.
//
// Every exported function starts with `defer gc.Call()()`: Go's garbage
// collector must not run while the host copies a batch in (see sluice/gc).
package export_sluice_plugin_processor

import (
	"strconv"

	witTypes "go.bytecodealliance.org/pkg/wit/types"
	types "sluice/bindings/sluice_plugin_types"
	"sluice/gc"
	"sluice/text"
)

var suffix = "!"

// Init takes the stage's config: `suffix` only.
func Init(config []witTypes.Tuple2[string, string]) witTypes.Result[witTypes.Unit, types.Error] {
	defer gc.Call()()
	suffix = "!"
	for _, kv := range config {
		if kv.F0 != "suffix" {
			message := "unknown config key `" + kv.F0 + "` (allowed keys: `suffix`)"
			return witTypes.Err[witTypes.Unit](types.MakeErrorInvalidConfig(message))
		}
		suffix = kv.F1
	}
	return witTypes.Ok[witTypes.Unit, types.Error](witTypes.Unit{})
}

// Process emits each UTF-8 value with the suffix appended.
func Process(info types.BatchInfo, input types.Batch) witTypes.Result[types.Output, types.Error] {
	defer gc.Call()()
	values := input.Values
	var data []byte
	offsets := []uint32{0}
	var timestamps []uint64
	var failures []types.RecordFailure
	for r := range input.Timestamps {
		value := values.Data[values.Offsets[r]:values.Offsets[r+1]]
		if bad := text.ValidUpTo(value); bad >= 0 {
			failures = append(failures, types.RecordFailure{
				Index:   uint32(r),
				Message: "value is not valid UTF-8 at byte " + strconv.Itoa(bad),
			})
			continue
		}
		data = append(append(data, value...), suffix...)
		offsets = append(offsets, uint32(len(data)))
		timestamps = append(timestamps, input.Timestamps[r])
	}
	output := types.Output{Failures: failures}
	if len(timestamps) > 0 { // an empty column has no offsets at all
		output.Batch.Timestamps = timestamps
		output.Batch.Values = types.Column{Data: data, Offsets: offsets}
	}
	return witTypes.Ok[types.Output, types.Error](output)
}
