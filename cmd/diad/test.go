package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/scoring"
)

// addEvalFlags binds the flags shared by test and predict.
func addEvalFlags(cmd *cobra.Command, c *evaluate.Config) {
	f := cmd.Flags()
	f.StringVar(&c.Checkpoint, "checkpoint", c.Checkpoint, "model checkpoint (.safetensors from diad train)")
	f.StringVar(&c.Features.Arch, "features", c.Features.Arch, "feature extractor: resnet18/34/50/101, wide_resnet50_2/101_2")
	f.StringVar(&c.Features.Weights, "features-weights", c.Features.Weights, "torchvision/timm weights of the extractor (random if empty)")
	f.IntSliceVar(&c.Features.Layers, "layers", c.Features.Layers, "feature layers compared")
	f.IntVar(&c.BatchSize, "batch", c.BatchSize, "images per batch")
	f.Uint64Var(&c.Seed, "seed", c.Seed, "noise seed")
	f.StringVar(&c.Device, "device", c.Device, "cpu, cuda, cuda:N or auto")
	f.IntVar(&c.Threads, "threads", c.Threads, "libtorch threads (0 = default)")
	f.Var(optString(&c.Sampler.Kind), "sampler", "sampler: "+strings.Join(diffusion.Kinds, ", ")+" (default the model's, ddim)")
	f.Var(optInt(&c.Sampler.StartT), "start-t", "forward-noise level (default the model's: 999 for paper, the calibrated level for demo)")
	f.Var(optInt(&c.Sampler.Steps), "steps", "denoising steps (default the model's, 10)")
	f.Var(optFloat(&c.Sampler.Eta), "eta", "DDIM eta (default the model's, 0)")
	f.StringVar(&c.ResultsDir, "results", c.ResultsDir, "results folder (one sub-folder per run)")
	f.StringVar(&c.Scorer, "scorer", c.Scorer, "anomaly map: resnet (the paper's), or terms joined by + among ae, pixel, ssim, resnet, seg (the anomaly head), patch (the patch memory)\n(default: resnet with --features-weights, else the scorer the checkpoint was calibrated for)")
	f.StringVar(&c.Preset, "preset", c.Preset, "refuse a checkpoint of any other preset (e.g. demo)")
}

func newTestCmd() *cobra.Command {
	cfg := evaluate.DefaultConfig()
	var quiet bool
	var sf shardFlags
	cmd := &cobra.Command{
		Use:   "test",
		Short: "Evaluate a model on a test split: metrics table and a Parquet results run",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.Checkpoint == "" || cfg.Data.Root == "" {
				return fmt.Errorf("--checkpoint and --data are required")
			}
			if err := sf.resolve(&cfg); err != nil {
				return err
			}
			var bar *progressbar.ProgressBar
			progress := func(done, total int) {
				if quiet {
					return
				}
				if bar == nil {
					bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(cmd.ErrOrStderr()), progressbar.OptionSetDescription("test"),
						progressbar.OptionShowCount(), progressbar.OptionShowIts(), progressbar.OptionSetItsString("img"), progressbar.OptionClearOnFinish())
				}
				bar.Set(done)
			}
			rep, err := evaluate.Test(cmd.Context(), cfg, progress)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if rep.Shard != nil {
				fmt.Fprintf(out, "shard %s of run %s: %d images, %.2f images/s, partition %s\n", rep.Shard, rep.RunID, rep.Images, rep.ImagesPerSec, rep.Partition)
				fmt.Fprintf(out, "when every shard has finished: diad merge %s --results %s\n", rep.RunID, cfg.ResultsDir)
				return nil
			}
			fmt.Fprint(out, evaluate.FormatTable(rep.Table))
			fmt.Fprintf(out, "run %s: %d images, %.2f images/s, threshold %s\n", rep.RunID, rep.Images, rep.ImagesPerSec, rep.Threshold)
			fmt.Fprintf(out, "scorer: %s\n", rep.Scorer)
			if !rep.Pretrained && strings.Contains(rep.Scorer, scoring.KindResNet) {
				fmt.Fprintln(out, "note: the feature extractor has random weights (--features-weights not given); scores are not comparable to the paper's")
			}
			return nil
		},
	}
	addEvalFlags(cmd, &cfg)
	addDataFlags(cmd, &cfg.Data)
	cmd.Flags().StringVar(&cfg.Threshold, "threshold", cfg.Threshold, "decision threshold: max-f1, fpr<=x, fnr<=x (on the test labels) or a number; max-f1/category (or fpr<=x/category, ...) also gives each category its own by that policy")
	cmd.Flags().BoolVar(&cfg.RecordSteps, "record-steps", false, "also score every sampler step's predicted image")
	cmd.Flags().BoolVar(&quiet, "quiet", false, "no progress bar")
	addShardFlags(cmd, &sf)
	return cmd
}

func newPredictCmd() *cobra.Command {
	cfg := evaluate.PredictConfig{Config: evaluate.DefaultConfig()}
	cfg.Threshold = ""
	var sf shardFlags
	cmd := &cobra.Command{
		Use:   "predict IMAGE|FOLDER...",
		Short: "Score new images with a chosen threshold and write heatmap overlays",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.Checkpoint == "" {
				return fmt.Errorf("--checkpoint is required")
			}
			if err := sf.resolve(&cfg.Config); err != nil {
				return err
			}
			preds, runID, err := evaluate.Predict(cmd.Context(), cfg, args)
			var partial *evaluate.PartialError
			if err != nil && !errors.As(err, &partial) {
				return err
			}
			out := cmd.OutOrStdout()
			for _, p := range preds {
				if p.Error != "" {
					fmt.Fprintf(out, "%-10s %s: %s\n", "ERROR", p.Path, p.Error)
					continue
				}
				verdict := "normal"
				if p.Anomalous {
					verdict = "ANOMALOUS"
				}
				fmt.Fprintf(out, "%-10s score %.6g (threshold %.6g)  %s", verdict, p.Score, p.Threshold, p.Path)
				if p.Overlay != "" {
					fmt.Fprintf(out, "  -> %s", p.Overlay)
				}
				fmt.Fprintln(out)
			}
			switch {
			case cfg.Shard != nil:
				fmt.Fprintf(out, "shard %s of run %s written; when every shard has finished: diad merge %s --results %s\n", cfg.Shard, runID, runID, cfg.ResultsDir)
			case runID != "":
				fmt.Fprintf(out, "run %s\n", runID)
			}
			// Every readable image was scored; the exit status still says
			// that some were not.
			return err
		},
	}
	addEvalFlags(cmd, &cfg.Config)
	cmd.Flags().StringVar(&cfg.Threshold, "threshold", "", "decision threshold (a number, e.g. from a test run)")
	cmd.Flags().StringVar(&cfg.OverlayDir, "overlays", "", "folder for <name>_heatmap.png overlays")
	cmd.Flags().BoolVar(&cfg.Store, "store", false, "also write a results run of kind predict")
	addShardFlags(cmd, &sf)
	return cmd
}
