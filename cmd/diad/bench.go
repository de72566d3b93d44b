package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/throughput"
	"github.com/diad-project/diad/backend/torchrt"
)

func newBenchCmd() *cobra.Command {
	var presets []string
	var batch, iters, threads int
	var device string
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure training-step and reconstruction throughput per preset",
		Long: "bench builds each preset with random weights and times optimizer steps (forward, backward,\n" +
			"AdamW) and full reference reconstructions (encode, noise to t=999, 10 DDIM steps with SG\n" +
			"guidance, decode) on random images, after one warm-up iteration each.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dev, err := torchrt.ParseDevice(device)
			if err != nil {
				return err
			}
			defer torchrt.Pin()()
			torchrt.SetThreads(threads)
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "preset\tparams\tlatent\tbatch\ttrain img/s\ttrain peak RSS\trecon img/s\ts/image\trecon peak RSS\t\n")
			for _, name := range presets {
				cfg, err := model.Preset(strings.TrimSpace(name))
				if err != nil {
					return err
				}
				// A paper-size iteration takes minutes on a CPU: show where
				// the measurement is (on stderr, so stdout stays the table).
				bar := progressbar.NewOptions(2*(iters+1), progressbar.OptionSetWriter(cmd.ErrOrStderr()),
					progressbar.OptionSetDescription("bench "+cfg.Preset), progressbar.OptionShowCount(),
					progressbar.OptionSetPredictTime(true), progressbar.OptionClearOnFinish())
				r, err := throughput.Measure(cmd.Context(), cfg, dev, batch, iters, func(phase string) {
					bar.Describe(fmt.Sprintf("bench %s: %s", cfg.Preset, phase))
					bar.Add(1)
				})
				bar.Finish()
				if err != nil {
					return err
				}
				fmt.Fprintf(tw, "%s\t%.2fM\t%dx%d\t%d\t%.2f\t%.0f MiB\t%.2f\t%.3f\t%.0f MiB\t\n", r.Preset, float64(r.Params)/1e6, cfg.LatentSize(), cfg.LatentSize(), r.Batch,
					r.TrainImagesPerSec, r.TrainPeakRSSMiB, r.ReconImagesPerSec, 1/r.ReconImagesPerSec, r.ReconPeakRSSMiB)
			}
			return tw.Flush()
		},
	}
	cmd.AddCommand(newQualityCmd())
	cmd.Flags().StringSliceVar(&presets, "presets", []string{"tiny", "small", "demo"}, "presets to measure")
	cmd.Flags().IntVar(&batch, "batch", 4, "images per batch")
	cmd.Flags().IntVar(&iters, "iters", 5, "timed iterations")
	cmd.Flags().IntVar(&threads, "threads", 0, "libtorch threads (0 = default)")
	cmd.Flags().StringVar(&device, "device", "auto", "cpu, cuda, cuda:N or auto")
	return cmd
}
