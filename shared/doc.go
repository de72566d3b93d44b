// Package shared holds the Go types that the server and the WebAssembly client
// both compile: the versioned wire protocol of the REST API and websockets.
package shared
