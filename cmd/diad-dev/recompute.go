package main

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/throughput"
	"github.com/diad-project/diad/backend/torchref"
	"github.com/diad-project/diad/backend/torchrt"
)

// recomputeSample is one measured training step.
type recomputeSample struct {
	seconds float64
	// peakMiB is the step's peak RSS above the RSS it started from (the
	// weights, their gradients and the optimizer state are already there):
	// its activations and temporaries.
	peakMiB float64
	baseMiB float64
}

func newRecomputeBenchCmd() *cobra.Command {
	var preset, freeze, device string
	var batch, rounds, threads int
	var optimizer bool
	var variants []string
	cmd := &cobra.Command{
		Use:   "recompute",
		Short: "Measure a training step's peak memory and time with and without gradient checkpointing",
		Long: "recompute builds --preset with random weights and times optimizer steps (forward, backward,\n" +
			"AdamW) of the denoiser under --freeze, alternating plain and recomputed steps (A B A B, after\n" +
			"one warm-up of each) for --rounds rounds. Each step's peak RSS is read above the RSS it starts\n" +
			"from (the allocator's free memory handed back first), so it is the step's activations and\n" +
			"temporaries; the weights, gradients and optimizer state are the base. It prints the medians,\n" +
			"their spread and the ratios recomputed/plain. --optimizer=false leaves AdamW out (forward and\n" +
			"backward only: no moment buffers, for a model whose optimizer state would not fit); --variants\n" +
			"recomputed measures one side alone.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dev, err := torchrt.ParseDevice(device)
			if err != nil {
				return err
			}
			if dev.IsCuda() {
				return fmt.Errorf("recompute reads the process's RSS: run it on the CPU (--device cpu)")
			}
			defer torchrt.Pin()()
			torchrt.SetThreads(threads)
			f, err := model.ParseFreeze(freeze)
			if err != nil {
				return err
			}
			m, err := model.NewPreset(preset, dev)
			if err != nil {
				return err
			}
			defer m.Free()
			cfg := m.Config
			noise := diffusion.NewNoise(1)
			s := int64(cfg.ImageSize)
			x := noise.Normal([]int64{int64(batch), 3, s, s}, dev)
			defer x.MustDrop()
			var step func() error
			if optimizer {
				var freeOpt func()
				if step, freeOpt, err = throughput.TrainStep(m, x, noise, f); err != nil {
					return err
				}
				defer freeOpt()
			} else {
				step = throughput.GradientStep(m, x, noise, f)
			}
			want := map[string]bool{}
			for _, v := range variants {
				if v != "plain" && v != "recomputed" {
					return fmt.Errorf("--variants %q: want plain and/or recomputed", v)
				}
				want[v] = true
			}
			samples, err := measureRecompute(cmd, m, step, want, rounds)
			if err != nil {
				return err
			}
			return printRecompute(cmd.OutOrStdout(), samples, cfg.Preset, optimizer, batch, f, rounds)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&preset, "preset", "small", "model preset")
	fl.StringVar(&freeze, "freeze", string(model.FreezeReference), "trained weights: reference (the paper's split) or none")
	fl.IntVar(&batch, "batch", 4, "images per batch")
	fl.IntVar(&rounds, "rounds", 3, "timed rounds (each a plain and a recomputed step)")
	fl.IntVar(&threads, "threads", 0, "libtorch threads (0 = default)")
	fl.StringVar(&device, "device", "cpu", "cpu (the peak is read from the process's RSS)")
	fl.BoolVar(&optimizer, "optimizer", true, "include the AdamW update (false: forward and backward only)")
	fl.StringSliceVar(&variants, "variants", []string{"plain", "recomputed"}, "which steps to measure: plain, recomputed")
	return cmd
}

// measureRecompute alternates the wanted steps, plain and recomputed, for
// rounds rounds after one warm-up round, reading each one's time and peak
// memory.
func measureRecompute(cmd *cobra.Command, m *model.DiAD, step func() error, want map[string]bool, rounds int) (map[string][]recomputeSample, error) {
	measure := func(recompute bool) (recomputeSample, error) {
		m.SetRecompute(recompute)
		torchrt.TrimHeap()
		base := torchrt.RSSMiB()
		if err := torchrt.ResetPeakRSS(); err != nil {
			return recomputeSample{}, err
		}
		start := time.Now()
		if err := step(); err != nil {
			return recomputeSample{}, err
		}
		return recomputeSample{seconds: time.Since(start).Seconds(), peakMiB: torchrt.PeakRSSMiB() - base, baseMiB: base}, nil
	}
	samples := map[string][]recomputeSample{}
	for round := -1; round < rounds; round++ { // round -1: warm-up
		for _, v := range []string{"plain", "recomputed"} {
			if !want[v] {
				continue
			}
			s, err := measure(v == "recomputed")
			if err != nil {
				return nil, err
			}
			if round >= 0 {
				samples[v] = append(samples[v], s)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "round %d: %s %.2f s, peak %.0f MiB above %.0f MiB\n", round+1, v, s.seconds, s.peakMiB, s.baseMiB)
		}
	}
	return samples, nil
}

// printRecompute prints the medians, their spread and the ratios.
func printRecompute(out io.Writer, samples map[string][]recomputeSample, preset string, optimizer bool, batch int, f model.Freeze, rounds int) error {
	what := "optimizer step (forward, backward, AdamW)"
	if !optimizer {
		what = "forward and backward, no optimizer"
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s, %s, batch %d, freeze %s, %d rounds (median [min, max])\n", preset, what, batch, f, rounds)
	fmt.Fprintf(tw, "step\tseconds\tpeak above base (MiB)\tbase RSS (MiB)\t\n")
	for _, v := range []string{"plain", "recomputed"} {
		if s := samples[v]; len(s) > 0 {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.0f\t\n", v, spreadOf(s, secondsOf, "%.2f"), spreadOf(s, peakOf, "%.0f"), median(s, baseOf))
		}
	}
	if p, r := samples["plain"], samples["recomputed"]; len(p) > 0 && len(r) > 0 {
		fmt.Fprintf(tw, "ratio recomputed/plain\t%.2f\t%.2f\t\t\n", median(r, secondsOf)/median(p, secondsOf), median(r, peakOf)/median(p, peakOf))
	}
	return tw.Flush()
}

func secondsOf(s recomputeSample) float64 { return s.seconds }
func peakOf(s recomputeSample) float64    { return s.peakMiB }
func baseOf(s recomputeSample) float64    { return s.baseMiB }

func values(v []recomputeSample, of func(recomputeSample) float64) []float64 {
	x := make([]float64, len(v))
	for i, s := range v {
		x[i] = of(s)
	}
	return x
}

func median(v []recomputeSample, of func(recomputeSample) float64) float64 {
	if len(v) == 0 {
		return 0
	}
	return torchref.Median(values(v, of))
}

func spreadOf(v []recomputeSample, of func(recomputeSample) float64, format string) string {
	med, lo, hi := torchref.Spread(values(v, of))
	return fmt.Sprintf(format+" ["+format+", "+format+"]", med, lo, hi)
}
