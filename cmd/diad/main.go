// Command diad trains, evaluates and serves DiAD anomaly detection models.
package main

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/diad-project/diad/backend/cli"
)

func main() { cli.Main("diad", newRootCmd()) }

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
