// The code the Go plugins share: the generated bindings (`bindings/`) and
// UTF-8 as Rust reads it (`text/`). Each plugin is its own module beside it
// (`word-split/`, `average/`) that requires this one by path.
module sluice

go 1.25

require go.bytecodealliance.org/pkg v0.2.3

// The bindings' runtime package, committed (Go's module proxy is not used).
replace go.bytecodealliance.org/pkg => ./third_party/go-pkg
