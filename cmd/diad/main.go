// Command diad trains, evaluates and serves DiAD anomaly detection models.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/diad-project/diad/backend/torchrt"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Every command runs inside the libtorch error boundary: a tensor
	// failure (a bad checkpoint, an impossible allocation) ends the command
	// with libtorch's message and a non-zero status, not a log.Fatal.
	err := torchrt.Do(func() error { return newRootCmd().ExecuteContext(ctx) })
	if err != nil {
		fmt.Fprintln(os.Stderr, "diad:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "diad",
		Short:         "Diffusion-based multi-class visual anomaly detection (DiAD) on libtorch",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newVersionCmd(), newServeCmd(), newInspectCmd(), newSynthCmd(), newPhotosCmd(), newTrainCmd(), newTestCmd(), newPredictCmd(), newExportCmd(), newBenchCmd(), newConvertCmd(), newMergeCmd(), newRunIDCmd(), newTrajectoryCmd(), newDoctorCmd())
	return root
}

func newLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
