// The module path is the one the bindings import the exported functions
// from (`sluice/stage/export_sluice_plugin_processor`): keep it.
module sluice/stage

go 1.25

require (
	go.bytecodealliance.org/pkg v0.2.3
	sluice v0.0.0
)

// The bindings, the runtime package they use, and the helpers, from the
// sluice repository: nothing is fetched.
replace (
	go.bytecodealliance.org/pkg => {{go-pkg}}
	sluice => {{go}}
)
