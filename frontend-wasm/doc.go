// Package frontend is the browser client of diad, written with ebiten and
// compiled to WebAssembly (GOOS=js GOARCH=wasm); the server serves it at /.
package frontend
