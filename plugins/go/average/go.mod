// The module's path is the one the bindings import the exported functions
// from (`sluice/stage/export_sluice_plugin_processor`), as every Go plugin's.
module sluice/stage

go 1.25

require (
	go.bytecodealliance.org/pkg v0.2.3
	sluice v0.0.0
)

// Both from this repository: nothing is fetched.
replace (
	go.bytecodealliance.org/pkg => ../third_party/go-pkg
	sluice => ..
)
