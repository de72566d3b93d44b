// Package cli is what diad's commands share around cobra: running a root
// command inside the libtorch error boundary with a context that ends on
// SIGINT/SIGTERM, and the child side of running the real main() in a test
// (package clitest is the parent's).
package cli

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/diad-project/diad/backend/torchrt"
)

// Main runs root and exits: 0, or 1 with the error on stderr. The command
// runs inside the libtorch error boundary: a tensor failure (a bad
// checkpoint, an impossible allocation) ends it with libtorch's message and a
// non-zero status, not a crash.
func Main(name string, root *cobra.Command) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := torchrt.Do(func() error { return root.ExecuteContext(ctx) })
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// ChildEnv marks the test binary re-executed as the command (clitest.RunMain
// sets it).
const ChildEnv = "DIAD_CLI_TEST_CHILD"

// ServeChild, called first in a command's TestMain, runs main as the command
// named name (and exits) when this process is a child started by
// clitest.RunMain.
func ServeChild(name string, main func()) {
	if os.Getenv(ChildEnv) != "1" {
		return
	}
	os.Args = append([]string{name}, os.Args[1:]...)
	main()
	os.Exit(0)
}
