package main

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/merge"
	"github.com/diad-project/diad/backend/shard"
	"github.com/diad-project/diad/results"
)

// EnvRunID names the run a shard writes into when --run-id is not given.
const EnvRunID = shard.EnvRunID

// shardFlags are the sharding flags of test and predict.
type shardFlags struct {
	spec   string
	count  int
	runID  string
	invar  bool
	noEnv  bool
	getenv func(string) string
	flags  *pflag.FlagSet
}

func addShardFlags(cmd *cobra.Command, f *shardFlags) {
	fl := cmd.Flags()
	f.flags = fl
	fl.StringVar(&f.spec, "shard", "", "score only shard INDEX/COUNT (0-based, e.g. 3/16) into a partition of --run-id;\n"+
		"default from the engine: Slurm's SLURM_ARRAY_TASK_ID/_MIN/_COUNT, Kubernetes' JOB_COMPLETION_INDEX with --shards or "+shard.EnvCount)
	fl.IntVar(&f.count, "shards", 0, "shard count for Kubernetes Indexed Jobs (JOB_COMPLETION_INDEX gives only the index)")
	fl.StringVar(&f.runID, "run-id", "", "run id (the same for every shard; `diad run-id` makes one; default $"+EnvRunID+")")
	fl.BoolVar(&f.invar, "batch-invariant", false, "compute each image alone inside its batch, so that runs and shards equal each other bit for bit\n"+
		"(at the speed of batch size 1; on by default for a shard, --batch-invariant=false trades that for speed)")
	fl.BoolVar(&f.noEnv, "no-shard-env", false, "ignore the engine's shard variables (score everything in this process)")
}

// resolve applies the flags to an evaluation config.
func (f *shardFlags) resolve(c *evaluate.Config) error {
	getenv := f.getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	c.BatchInvariant = f.invar
	c.RunID = f.runID
	if c.RunID == "" {
		c.RunID = getenv(EnvRunID)
	}
	switch {
	case f.spec != "":
		s, err := shard.Parse(f.spec)
		if err != nil {
			return err
		}
		c.Shard = &s
	case !f.noEnv:
		s, found, err := shard.FromEnv(getenv, f.count)
		if err != nil {
			return err
		}
		if found {
			c.Shard = &s
		}
	}
	if f.count > 0 && c.Shard != nil && c.Shard.Count != f.count {
		return fmt.Errorf("--shards %d disagrees with shard %s", f.count, c.Shard)
	}
	if c.Shard != nil && (f.flags == nil || !f.flags.Changed("batch-invariant")) {
		c.BatchInvariant = true
	}
	return nil
}

func newMergeCmd() *cobra.Command {
	var root string
	cmd := &cobra.Command{
		Use:   "merge RUN-ID",
		Short: "Merge the shard partitions of a run into one run: checks, exact metrics over all shards",
		Long: "Merge checks that every shard of the run has finished, that all come from the same checkpoint,\n" +
			"scorer, sampler, seed and split, computes the metrics over all images exactly as a single-process\n" +
			"`diad test --batch-invariant` would, and writes the run beside its partitions. Merging again\n" +
			"(after a shard was re-run) keeps the analysts' labels and a threshold set by hand.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rep, err := merge.Run(results.Store{Root: root}, args[0], time.Now())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			for _, in := range rep.Ignored {
				fmt.Fprintf(out, "ignored %s: %s\n", in.Dir, in.Reason)
			}
			if len(rep.Table.Rows) > 0 {
				fmt.Fprint(out, evaluate.FormatTable(rep.Table))
			}
			fmt.Fprintf(out, "run %s: %d images from %d shards, threshold %s, merged in %.2f s\n",
				rep.RunID, rep.Images, rep.Shards, rep.Threshold, rep.Seconds)
			return nil
		},
	}
	cmd.Flags().StringVar(&root, "results", "results/runs", "results folder")
	return cmd
}

func newRunIDCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "run-id",
		Short: "Print a new run id (for the shards of one run: --run-id or $" + EnvRunID + ")",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(cmd.OutOrStdout(), results.NewRunID(time.Now()))
			return nil
		},
	}
}
