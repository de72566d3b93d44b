// Command diad-dev holds the developers' measuring harnesses, apart from the
// product CLI: diad against PyTorch eager on the same weights (bench torch),
// processes sharing a machine (bench sharing), gradient checkpointing's
// memory and time (bench recompute), the denoiser pass per block (bench
// profile) and the CPU kernels per library setting (bench kernels). `diad
// bench` stays the user's view of speed and quality.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/diad-project/diad/backend/torchrt"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := torchrt.Do(func() error { return newRootCmd().ExecuteContext(ctx) })
	if err != nil {
		fmt.Fprintln(os.Stderr, "diad-dev:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "diad-dev",
		Short:         "Measuring harnesses for diad's developers",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	bench := &cobra.Command{
		Use:   "bench",
		Short: "Side-by-side and per-block measurements (diad bench is the user's view)",
		Args:  cobra.NoArgs,
	}
	bench.AddCommand(newSharingCmd(), newSharingWorkerCmd(), newRecomputeBenchCmd(), newProfileBenchCmd(), newTorchBenchCmd(), newKernelsBenchCmd(), newKernelsWorkerCmd())
	root.AddCommand(bench)
	return root
}
