// Package web holds what the server needs to serve the browser client: the
// HTML page (embedded), the names of the two build outputs it loads, and
// Build, which compiles them (GOOS=js GOARCH=wasm) into a folder.
package web

import (
	"context"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Index is the page served at /.
//
//go:embed index.html
var Index []byte

// Files of a built client folder.
const (
	WasmFile = "diad.wasm" // the client (cmd/diad-web)
	// TestHookTag builds the client with window.diadState(), its state as
	// JSON for the end-to-end test (package hook).
	TestHookTag = "diadhook"
	ExecFile    = "wasm_exec.js" // Go's loader, from the toolchain that built it
)

// MainPackage is the client's main package.
const MainPackage = "github.com/diad-project/diad/cmd/diad-web"

// Built reports whether dir holds a complete client.
func Built(dir string) bool {
	for _, f := range []string{WasmFile, ExecFile} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			return false
		}
	}
	return true
}

// Build compiles the client into dir with the go command on PATH, and copies
// that toolchain's wasm_exec.js next to it (the two must match). Build tags
// select optional parts: TestHookTag adds window.diadState().
func Build(ctx context.Context, dir string, tags ...string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("build web client: %w", err)
	}
	goroot, err := exec.CommandContext(ctx, "go", "env", "GOROOT").Output()
	if err != nil {
		return fmt.Errorf("build web client: go env GOROOT: %w", err)
	}
	// -s -w: no symbol table or DWARF (measured: 24.6 -> 24.0 MB).
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-tags="+strings.Join(tags, ","), "-o", filepath.Join(dir, WasmFile), MainPackage)
	cmd.Env = append(os.Environ(), "GOOS=js", "GOARCH=wasm", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build web client: %w\n%s", err, out)
	}
	js, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(goroot)), "lib", "wasm", ExecFile))
	if err != nil {
		return fmt.Errorf("build web client: %w", err)
	}
	return os.WriteFile(filepath.Join(dir, ExecFile), js, 0o644)
}
