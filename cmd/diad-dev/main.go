// Command diad-dev holds the developers' measuring harnesses, apart from the
// product CLI: diad against PyTorch eager on the same weights (bench torch),
// processes sharing a machine (bench sharing), gradient checkpointing's
// memory and time (bench recompute), the denoiser pass per block (bench
// profile) and the CPU kernels per library setting (bench kernels). `diad
// bench` stays the user's view of speed and quality.
package main

import (
	"github.com/spf13/cobra"

	"github.com/diad-project/diad/backend/cli"
)

func main() { cli.Main("diad-dev", newRootCmd()) }

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
