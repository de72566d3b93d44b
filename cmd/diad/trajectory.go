package main

import (
	"fmt"
	"io"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/diad-project/diad/backend/atomicfile"
	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/storyboard"
	"github.com/diad-project/diad/backend/visual"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

// trajectoryFlags are what `diad trajectory` draws and where it writes.
type trajectoryFlags struct {
	gif, strip, panels, stripSteps, threshold, category string
	side, delayMS                                       int
	noSG                                                bool
}

// options are the drawing options and the map threshold (0: the maps' own
// range) the flags ask for.
func (tf trajectoryFlags) options() (opts storyboard.Options, threshold float64, err error) {
	opts = storyboard.Options{Side: tf.side, DelayMS: tf.delayMS}
	if opts.Panels, err = storyboard.ParsePanels(tf.panels); err != nil {
		return opts, 0, fmt.Errorf("--panels: %w", err)
	}
	if opts.Steps, err = storyboard.ParseSteps(tf.stripSteps); err != nil {
		return opts, 0, fmt.Errorf("--strip-steps: %w", err)
	}
	if tf.threshold != "" {
		if threshold, err = strconv.ParseFloat(tf.threshold, 64); err != nil || !(threshold > 0) {
			return opts, 0, fmt.Errorf("--threshold: want a positive number, got %q", tf.threshold)
		}
	}
	return opts, threshold, nil
}

func newTrajectoryCmd() *cobra.Command {
	cfg := evaluate.DefaultConfig()
	var tf trajectoryFlags
	cmd := &cobra.Command{
		Use:   "trajectory IMAGE",
		Short: "Draw one image's denoising for slides: an animated GIF and/or a PNG strip of chosen panels",
		Long: `Reconstructs IMAGE step by step as the explorer shows it (the same noise as
diad predict --seed S and a dropped image with seed S) and draws the steps:
--gif writes an animated GIF with a frame per step, --strip a PNG with a row
per chosen step. Panels: input, latent (z_t), image (the predicted image),
map (its anomaly map over the input). --no-sg switches the SG network off, to
show what it adds.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cfg.Checkpoint == "" {
				return fmt.Errorf("--checkpoint is required")
			}
			if tf.gif == "" && tf.strip == "" {
				return fmt.Errorf("give --gif FILE, --strip FILE or both")
			}
			opts, threshold, err := tf.options()
			if err != nil {
				return err
			}
			e, err := evaluate.Load(cfg)
			if err != nil {
				return err
			}
			defer e.Free()
			sampler, err := e.Sampler(nil, shared.SamplerOverride{})
			if err != nil {
				return err
			}
			spec := evaluate.TrajectorySpec{Path: args[0], Category: tf.category, Sampler: sampler, Seed: results.ImageSeed(cfg.Seed, 0), Unguided: tf.noSG}
			tr, out, err := e.Storyboard(cmd.Context(), spec)
			if err != nil {
				return err
			}
			tr.Scale = tr.MapRange()
			if threshold > 0 {
				tr.Scale = visual.ThresholdScale(threshold)
			}
			for _, o := range []struct {
				path   string
				render func(io.Writer) error
			}{
				{tf.gif, func(w io.Writer) error { return storyboard.GIF(w, tr, opts) }},
				{tf.strip, func(w io.Writer) error { return storyboard.Strip(w, tr, opts) }},
			} {
				if o.path == "" {
					continue
				}
				if err := atomicfile.Write(o.path, o.render); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "wrote %s\n", o.path)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d steps (%s), final score %.6g\n", args[0], len(tr.Steps), tr.Title, out.Score)
			return nil
		},
	}
	addEvalFlags(cmd, &cfg)
	f := cmd.Flags()
	f.StringVar(&tf.gif, "gif", "", "write an animated GIF here")
	f.StringVar(&tf.strip, "strip", "", "write a PNG strip here")
	f.StringVar(&tf.panels, "panels", "", "comma-separated panels among input, latent, image, map (default input,image,map)")
	f.StringVar(&tf.stripSteps, "strip-steps", "", "1-based steps the strip shows, comma-separated (default: six spread over the trajectory)")
	f.IntVar(&tf.side, "side", 0, "each panel's side in pixels (default 160)")
	f.IntVar(&tf.delayMS, "delay", 0, "milliseconds per GIF frame (default 400; the last holds 4 times as long)")
	f.StringVar(&tf.threshold, "threshold", "", "colour the maps with this threshold at mid-scale (default: the maps' own range)")
	f.BoolVar(&tf.noSG, "no-sg", false, "switch the SG network off (what DiAD's guidance adds)")
	f.StringVar(&tf.category, "category", "", "the image's category: a patch memory compares it with that category's patches (default: with every category's)")
	return cmd
}
