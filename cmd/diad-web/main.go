//go:build js && wasm

// Command diad-web is the browser client of diad, compiled with
// GOOS=js GOARCH=wasm and served by `diad serve` at /.
package main

import (
	"log"

	"github.com/diad-project/diad/frontend-wasm/ui"
)

func main() {
	if err := ui.Run(); err != nil {
		log.Fatal(err)
	}
}
