// The component's main package: it links in the generated exports, which
// call Init and Process in ./export_sluice_plugin_processor. Built with
// -buildmode=c-shared, main itself is never run.
package main

import _ "sluice/bindings/wit_exports"

func main() {}
