package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/diad-project/diad/backend/train"
)

// trainFlags are the flags of `diad train`.
type trainFlags struct {
	configPath, base, recalibrate                 string
	resume, quiet, force                          bool
	data, out, preset, device, freeze, layout     string
	categories                                    []string
	steps, aeSteps, batch, accum, threads, epochs int
	lr, aeLR                                      float64
	scorer                                        string
	duration                                      time.Duration
	seed                                          uint64
	checkpointing                                 bool
}

func newTrainCmd() *cobra.Command {
	var f trainFlags
	cmd := &cobra.Command{
		Use:   "train",
		Short: "Train a DiAD model (stage 1 autoencoder, stage 2 denoiser)",
		Long: "train fine-tunes the autoencoder (if --ae-steps > 0) and trains the SG network and UNet.\n" +
			"Settings come from --config (YAML over a base: cpu, demo, demo-head or reference) and flags, which win.\n" +
			"It writes checkpoint.safetensors (resumable), best.safetensors, model.safetensors and\n" +
			"train.log.jsonl into --out; --resume continues an interrupted run exactly.\n" +
			"--recalibrate MODEL trains no denoiser: it repeats the calibration (start level, scorer) and, with\n" +
			"--base demo-head, trains the anomaly head (adding one to a model without).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return f.run(cmd) },
	}
	f.register(cmd.Flags())
	return cmd
}

// run trains (or recalibrates) and prints the run's summary as JSON.
func (f *trainFlags) run(cmd *cobra.Command) error {
	cfg, err := f.config(cmd.Flags())
	if err != nil {
		return err
	}
	if f.resume && f.force {
		return fmt.Errorf("--resume continues the run in --out and --force replaces it: give one")
	}
	opts := train.Options{Resume: f.resume, Force: f.force}
	if !f.quiet {
		bar := &trainBar{w: os.Stderr}
		defer bar.finish()
		opts.OnEvent = bar.event
	}
	run := train.Run
	if f.recalibrate != "" {
		if f.resume {
			return fmt.Errorf("--recalibrate trains nothing, so --resume has no meaning with it")
		}
		run = func(ctx context.Context, cfg train.Config, opts train.Options) (train.Summary, error) {
			return train.Recalibrate(ctx, cfg, f.recalibrate, opts)
		}
	}
	sum, err := run(cmd.Context(), cfg, opts)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(sum)
}

// config is the training config: --config's file or --base's preset, with
// the flags given on top.
func (f *trainFlags) config(fl *pflag.FlagSet) (train.Config, error) {
	var cfg train.Config
	if f.configPath != "" {
		c, err := train.Load(f.configPath)
		if err != nil {
			return cfg, err
		}
		cfg = c
	} else {
		mk, ok := train.Presets[f.base]
		if !ok {
			return cfg, fmt.Errorf("--base %q: want one of %s", f.base, strings.Join(train.PresetNames(), ", "))
		}
		cfg = mk()
	}
	set := func(name string, apply func()) {
		if fl.Changed(name) {
			apply()
		}
	}
	set("data", func() { cfg.Data.Root = f.data })
	set("out", func() { cfg.OutDir = f.out })
	set("preset", func() { cfg.Preset = f.preset })
	set("device", func() { cfg.Device = f.device })
	set("freeze", func() { cfg.Freeze = f.freeze })
	set("steps", func() { cfg.MaxSteps = f.steps })
	set("epochs", func() { cfg.MaxEpochs = f.epochs })
	set("duration", func() { cfg.MaxDuration = f.duration })
	set("ae-steps", func() { cfg.AutoencoderSteps = f.aeSteps })
	set("batch", func() { cfg.BatchSize = f.batch })
	set("accum", func() { cfg.GradAccum = f.accum })
	set("lr", func() { cfg.Optim.LR = f.lr })
	set("ae-lr", func() { cfg.AutoencoderOptim.LR = f.aeLR })
	set("scorer", func() { cfg.Scorer = f.scorer })
	set("threads", func() { cfg.Threads = f.threads })
	set("gradient-checkpointing", func() { cfg.GradientCheckpointing = f.checkpointing })
	set("seed", func() { cfg.Seed = f.seed })
	set("layout", func() { cfg.Data.Layout = f.layout })
	set("categories", func() { cfg.Data.Categories = f.categories })
	return cfg, nil
}

// register declares the flags.
func (f *trainFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&f.configPath, "config", "", "training config (YAML)")
	fl.StringVar(&f.base, "base", "cpu", "base settings without --config: cpu (tiny model from scratch in minutes), demo (the demo model, under an hour on 2 cores), demo-head (the same with the anomaly head) or reference (the paper's)")
	fl.BoolVar(&f.resume, "resume", false, "continue from <out>/checkpoint.safetensors if present")
	fl.BoolVar(&f.force, "force", false, "replace a training run already in --out (without it, or --resume, such a folder is refused)")
	fl.BoolVar(&f.quiet, "quiet", false, "no progress bar")
	fl.StringVar(&f.data, "data", "", "dataset root")
	fl.StringVar(&f.layout, "layout", "auto", "dataset layout")
	fl.StringSliceVar(&f.categories, "categories", nil, "categories (default all)")
	fl.StringVar(&f.recalibrate, "recalibrate", "", "train nothing: choose the start level and scorer of this trained model again on the config's held-out images and write <out>/model.safetensors")
	fl.StringVar(&f.out, "out", "", "output folder")
	fl.StringVar(&f.preset, "preset", "", "model preset: paper, small, tiny, demo")
	fl.StringVar(&f.device, "device", "", "cpu, cuda, cuda:N or auto")
	fl.StringVar(&f.freeze, "freeze", "", "denoiser training split: reference or none")
	fl.IntVar(&f.steps, "steps", 0, "denoiser optimizer steps")
	fl.IntVar(&f.epochs, "epochs", 0, "denoiser epochs")
	fl.DurationVar(&f.duration, "duration", 0, "time budget (e.g. 30m)")
	fl.IntVar(&f.aeSteps, "ae-steps", 0, "autoencoder fine-tuning steps")
	fl.IntVar(&f.batch, "batch", 0, "batch size")
	fl.IntVar(&f.accum, "accum", 0, "gradient accumulation")
	fl.Float64Var(&f.lr, "lr", 0, "denoiser learning rate")
	fl.Float64Var(&f.aeLR, "ae-lr", 0, "autoencoder learning rate")
	fl.StringVar(&f.scorer, "scorer", "", "scorer to calibrate for use without ImageNet weights (e.g. ae+ssim)")
	fl.IntVar(&f.threads, "threads", 0, "libtorch threads")
	fl.BoolVar(&f.checkpointing, "gradient-checkpointing", false, "recompute the UNet's and SG network's activations in backward: same gradients, less memory, ~1 more forward pass per step")
	fl.Uint64Var(&f.seed, "seed", 0, "seed")
}
