package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/quality"
	"github.com/diad-project/diad/backend/train"
)

func newQualityCmd() *cobra.Command {
	cfg := evaluate.DefaultConfig()
	cfg.Features.Arch = "resnet18"
	var trainOut, trainBase string
	var budget time.Duration
	var seed uint64
	var opts quality.Options
	cmd := &cobra.Command{
		Use:   "quality",
		Short: "Measure detection, reconstruction and defect removal on a labelled test split",
		Long: "quality evaluates --checkpoint on the test split of --data and prints, per category and\n" +
			"their mean: image and pixel AUROC and PRO; PSNR and SSIM of normal images' reconstructions\n" +
			"against their inputs; defect removal (mean anomaly map inside the defect masks over the mean\n" +
			"outside); and how much the predicted image changes from the first to the last sampler step.\n" +
			"With --train DIR it first trains the demo recipe from scratch into DIR (stopping at --budget)\n" +
			"and measures the model it made. --pixel-size 256 computes the pixel figures at 256x256, as the\n" +
			"reference does, whatever size the model runs at (maps upsampled, masks read at that size).\n" +
			"Example on the committed demo model:\n" +
			"  diad synth --out var/synth128 && diad bench quality --checkpoint backend/model/demo/model.safetensors --data var/synth128",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			start := time.Now()
			if trainOut != "" {
				mk, ok := train.Presets[trainBase]
				if !ok {
					return fmt.Errorf("quality: unknown --train-base %q (want one of %s)", trainBase, strings.Join(train.PresetNames(), ", "))
				}
				tc := mk()
				tc.Data = cfg.Data
				tc.OutDir = trainOut
				tc.Seed = seed
				// The budget is the whole run's: the steps after the
				// denoiser keep their share of it.
				tc.MaxDuration = budget - tc.AfterDenoiser()
				if tc.MaxDuration <= 0 {
					return fmt.Errorf("quality: --budget %v leaves no time to train (the steps after the denoiser take up to %v)", budget, tc.AfterDenoiser())
				}
				bar := &trainBar{w: cmd.ErrOrStderr()}
				sum, err := train.Run(cmd.Context(), tc, train.Options{OnEvent: bar.event})
				bar.finish()
				if err != nil {
					return err
				}
				if sum.Model == "" {
					return fmt.Errorf("quality: training stopped (%s) before it finished; nothing to measure", sum.Stopped)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "trained %s in %.0f s (%d denoiser steps, stopped: %s)\n", sum.Model, sum.Seconds, sum.Steps, sum.Stopped)
				cfg.Checkpoint = filepath.Join(trainOut, train.ModelFile)
			}
			if cfg.Checkpoint == "" {
				return fmt.Errorf("quality: --checkpoint or --train is required")
			}
			rep, err := quality.Measure(cmd.Context(), cfg, opts)
			if err != nil {
				return err
			}
			fmt.Fprint(cmd.OutOrStdout(), quality.Format(rep))
			fmt.Fprintf(cmd.OutOrStdout(), "total %.0f s\n", time.Since(start).Seconds())
			return nil
		},
	}
	addEvalFlags(cmd, &cfg)
	addDataFlags(cmd, &cfg.Data)
	f := cmd.Flags()
	f.StringVar(&trainOut, "train", "", "train the demo recipe from scratch into this folder first")
	f.DurationVar(&budget, "budget", 60*time.Minute, "time budget of --train")
	f.Uint64Var(&seed, "train-seed", 1, "training seed of --train")
	f.IntVar(&opts.PixelSize, "pixel-size", 0, "side the pixel figures (P-AUROC, PRO, in/out) are computed at (0: the model's image size; the reference: 256)")
	f.StringVar(&trainBase, "train-base", "demo", "recipe of --train: demo, or demo-head (with the anomaly head)")
	return cmd
}
