// Command diad trains, evaluates and serves DiAD anomaly detection models.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/diad-project/diad/backend/shard"
	"github.com/diad-project/diad/backend/torchrt"
)

func main() {
	passiveWaitForShards()
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
	root.AddCommand(newVersionCmd(), newServeCmd(), newInspectCmd(), newSynthCmd(), newTrainCmd(), newTestCmd(), newPredictCmd(), newExportCmd(), newBenchCmd(), newConvertCmd(), newMergeCmd(), newRunIDCmd())
	return root
}

// passiveWaitForShards re-executes a shard's process with
// OMP_WAIT_POLICY=PASSIVE unless the variable is set. Shards usually share
// a node's cores, and libtorch's OpenMP threads, which spin while they wait
// by default, then take each other's cores: four shards on 2 cores took
// 3 min 19 s spinning against 34 s passive (the same 51 images; one
// process alone took 31 s). libgomp reads the variable when the process
// loads it, before main, hence the re-execution. A single process alone
// keeps the default (passive waiting cost it ~20% here).
func passiveWaitForShards() {
	if os.Getenv("OMP_WAIT_POLICY") != "" || !isShard(os.Args[1:], os.Getenv) {
		return
	}
	exe, err := os.Executable()
	if err != nil {
		return // run as we are: slower beside other shards, still correct
	}
	env := append(os.Environ(), "OMP_WAIT_POLICY=PASSIVE")
	// Exec replaces the process and returns only on failure, when the
	// command runs on with the default policy.
	if err := syscall.Exec(exe, os.Args, env); err != nil {
		fmt.Fprintln(os.Stderr, "diad: could not set OMP_WAIT_POLICY=PASSIVE for this shard:", err)
	}
}

// isShard reports whether a command line scores one shard: test or predict
// with --shard, or under a Slurm array task or a Kubernetes Indexed Job.
func isShard(args []string, getenv func(string) string) bool {
	if len(args) == 0 || (args[0] != "test" && args[0] != "predict") {
		return false
	}
	for _, a := range args[1:] {
		if a == "--no-shard-env" {
			return false
		}
	}
	for _, a := range args[1:] {
		if a == "--shard" || strings.HasPrefix(a, "--shard=") {
			return true
		}
	}
	return getenv(shard.EnvSlurmID) != "" || getenv(shard.EnvK8sIndex) != ""
}

func newLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}
