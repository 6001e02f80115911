// Package gc keeps Go's garbage collector out of `cabi_realloc`, where it
// would trap the instance.
//
// The host calls `cabi_realloc` to copy a call's arguments (the config, the
// batch) into the plugin's memory, and the component model forbids the
// plugin to call the host from there. Any allocation may run a step of a
// collection, and Go's collector reads the clocks and polls, all calls to
// the host; the bindings' runtime pauses only the monotonic clock around its
// allocation. A collection that finishes inside `cabi_realloc` reads the
// wall clock and traps (seen after some twenty batches of a thousand lines
// in `word-split`).
//
// So automatic collection is off outside the exported functions: importing
// this package turns it off, and each exported function (Init, Process)
// starts with `defer gc.Call()()`, which turns it on for the call and, as
// the call returns, off again once any collection in progress has finished.
// A collection then runs only inside an exported call, as often as it would
// otherwise (GOGC, 100 by default): what `cabi_realloc` allocates counts
// towards the next one.
package gc

import "runtime/debug"

// percent is GOGC, for the exported calls.
var percent = debug.SetGCPercent(-1)

// Call turns automatic collection on and returns the function that turns it
// off again, finishing any collection in progress first (which
// `debug.SetGCPercent(-1)` does). Use: `defer gc.Call()()`.
func Call() func() {
	debug.SetGCPercent(percent)
	return off
}

func off() { debug.SetGCPercent(-1) }
