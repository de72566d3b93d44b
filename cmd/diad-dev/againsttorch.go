package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/optim"
	"github.com/diad-project/diad/backend/torchref"
	"github.com/diad-project/diad/backend/torchrt"
)

func newTorchBenchCmd() *cobra.Command {
	var preset, trainPreset, attention, work string
	var batches []int
	var trainBatch, rounds, threads int
	var flops bool
	var variants []string
	var ops []string
	cmd := &cobra.Command{
		Use:   "torch",
		Short: "Time diad against PyTorch eager on the same weights and inputs, side by side",
		Long: "torch builds --preset with random weights (every layer, zero-initialised ones too), saves it,\n" +
			"and starts a PyTorch worker (the build root's python3-torch, the same libtorch) that builds\n" +
			"the same networks from that file. Then, per computation, it alternates one call in diad and\n" +
			"one in PyTorch (after a warm-up call each) for --rounds rounds, with the same thread count\n" +
			"and inputs, and prints the median time and its spread, the peak memory the call needed\n" +
			"(peak resident memory above that before the call), the ratio diad/PyTorch, and the largest\n" +
			"difference between the two sides' outputs relative to their scale. Computations: the guided\n" +
			"denoiser pass (SG network + UNet) per --batches, the autoencoder's encode and decode and the\n" +
			"reference reconstruction (encode, noise to t = 999, 10 DDIM steps, decode) at batch 1, and an\n" +
			"optimizer step (forward, backward, AdamW) of --train-preset with the reference freezing.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			defer torchrt.Pin()()
			if threads <= 0 {
				threads = torchrt.Threads()
			}
			torchrt.SetThreads(threads)
			if work == "" {
				dir, err := os.MkdirTemp("", "diad-bench-torch-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				work = dir
			} else if err := os.MkdirAll(work, 0o755); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "preset\tcomputation\tbatch\tdiad s [min, max]\tPyTorch s [min, max]\tdiad/PyTorch\tdiad MiB\tPyTorch MiB\tmax rel. diff\t\n")
			row := func(preset string, r torchref.Result) {
				d, p := torchref.Seconds(r.Diad), torchref.Seconds(r.Torch)
				dm, dl, dh := torchref.Spread(d)
				pm, pl, ph := torchref.Spread(p)
				fmt.Fprintf(tw, "%s\t%s\t%d\t%.3f [%.3f, %.3f]\t%.3f [%.3f, %.3f]\t%.2f\t%.0f\t%.0f\t%.1e\t\n", preset, r.Name, r.Batch,
					dm, dl, dh, pm, pl, ph, r.Ratio(),
					torchref.Median(torchref.ExtraMiB(r.Diad)), torchref.Median(torchref.ExtraMiB(r.Torch)), r.RelDiff)
			}
			// side builds a preset, starts its worker and runs each case.
			side := func(name string, run func(m *model.DiAD, w *torchref.Worker) error) (err error) {
				m, err := model.NewPreset(name, gotch.CPU)
				if err != nil {
					return err
				}
				defer m.Free()
				if err := torchref.FillZeroInit(m); err != nil {
					return err
				}
				path := filepath.Join(work, name+".safetensors")
				if err := m.Save(path, nil); err != nil {
					return err
				}
				defer os.Remove(path)
				fmt.Fprintf(cmd.ErrOrStderr(), "%s: loading the model in PyTorch\n", name)
				w, err := torchref.Start(cmd.Context(), path, torchref.Options{Threads: threads, Attention: attention, Variants: variants})
				if err != nil {
					return err
				}
				defer func() { err = errors.Join(err, w.Close()) }()
				if w.Threads != torchrt.Threads() {
					return fmt.Errorf("PyTorch runs %d threads, diad %d", w.Threads, torchrt.Threads())
				}
				return run(m, w)
			}
			// The arithmetic rate of the denoiser pass and the autoencoder,
			// against the cores' peak (a reconstruction is 10 passes, an
			// encode and a decode).
			var rates []string
			var mm float64 // the measured matmul rate (matmulRate), once
			counted := map[string]bool{torchref.OpDenoise: true, torchref.OpEncode: true, torchref.OpDecode: true}
			compare := func(name string, w *torchref.Worker, c torchref.Case) error {
				fmt.Fprintf(cmd.ErrOrStderr(), "%s %s batch %d: %d rounds\n", name, c.Name, c.Batch, rounds)
				r, err := torchref.Compare(w, c, rounds, work)
				if err != nil {
					return err
				}
				row(name, r)
				if counted[c.Name] && flops {
					n, err := w.Flops(c)
					if err != nil {
						return err
					}
					peak, _, err := cpuPeak(threads)
					if err != nil {
						return err
					}
					if mm == 0 {
						if mm, err = matmulRate(); err != nil {
							return err
						}
					}
					d, p := n/1e9/torchref.Median(torchref.Seconds(r.Diad)), n/1e9/torchref.Median(torchref.Seconds(r.Torch))
					rates = append(rates, fmt.Sprintf("%s %s batch %d: %.1f GFLOP per call; diad %.1f GFLOP/s (%.0f%% of the estimated peak, %.0f%% of the matmul's rate), PyTorch %.1f GFLOP/s (%.0f%%, %.0f%%); at the peak %.2f s",
						name, c.Name, c.Batch, n/1e9, d, 100*d/peak, 100*d/mm, p, 100*p/peak, 100*p/mm, n/1e9/peak))
				}
				return nil
			}
			fmt.Fprintf(out, "diad against PyTorch eager (%s attention%s), %d threads, median of %d alternating rounds\n", attention, variantNote(variants), threads, rounds)
			if len(ops) > 0 {
				err := side(preset, func(m *model.DiAD, w *torchref.Worker) error {
					fmt.Fprintf(out, "PyTorch %s\n", w.Torch)
					for _, b := range batches {
						// The denoiser pass at every batch size; the rest at batch 1.
						want := []string{}
						for _, op := range ops {
							if op == torchref.OpDenoise || b == batches[0] {
								want = append(want, op)
							}
						}
						cases, free, err := torchref.InferenceCases(cmd.Context(), m, want, b, work, 1)
						if err != nil {
							return err
						}
						for _, c := range cases {
							if err := compare(preset, w, c); err != nil {
								free()
								return err
							}
						}
						free()
					}
					return nil
				})
				if err != nil {
					return err
				}
			}
			if trainPreset != "" {
				err := side(trainPreset, func(m *model.DiAD, w *torchref.Worker) error {
					m.SetFreeze(model.FreezeReference)
					c, free, err := torchref.TrainCase(m, trainBatch, work, 1, optim.ReferenceAdamW)
					if err != nil {
						return err
					}
					defer free()
					return compare(trainPreset, w, c)
				})
				if err != nil {
					return err
				}
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(rates) > 0 {
				peak, how, err := cpuPeak(threads)
				if err != nil {
					return err
				}
				fmt.Fprintf(out, "\nFLOPs counted by torch's FlopCounterMode; estimated peak %.1f GFLOP/s = %s\n", peak, how)
				fmt.Fprintf(out, "measured: a %d^3 float32 matmul in libtorch (BLAS on the same threads) runs at %.1f GFLOP/s, %.0f%% of the estimate (a lower bound on the peak: above 100%%, the cores run faster than the clock /proc/cpuinfo reports)\n",
					matmulSide, mm, 100*mm/peak)
				for _, r := range rates {
					fmt.Fprintln(out, r)
				}
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&preset, "preset", "paper", "model preset of the inference computations")
	fl.IntSliceVar(&batches, "batches", []int{1, 4}, "batch sizes of the denoiser pass (the other computations run at the first)")
	fl.StringSliceVar(&ops, "ops", torchref.Ops, "inference computations (empty: none)")
	fl.StringVar(&trainPreset, "train-preset", "small", "model preset of the optimizer step (empty: none)")
	fl.IntVar(&trainBatch, "train-batch", 4, "batch size of the optimizer step")
	fl.IntVar(&rounds, "rounds", 3, "alternating rounds per computation (after a warm-up call each)")
	fl.IntVar(&threads, "threads", 0, "intra-op threads on both sides (0: libtorch's default)")
	fl.StringVar(&attention, "attention", torchref.AttentionSDPA, "PyTorch's attention: sdpa (fused, what diad calls) or einsum (the reference's modules without xformers)")
	fl.StringSliceVar(&variants, "torch-variants", nil, "change PyTorch's side to measure a candidate speed-up: channels_last, bf16 (autocast)")
	fl.BoolVar(&flops, "flops", true, "count the FLOPs of the denoiser pass, encode and decode (one more PyTorch call each) and report GFLOP/s against the cores' estimated peak and the rate a large matmul reaches on them")
	fl.StringVar(&work, "work", "", "folder for the model file and the inputs (default: a temporary folder, removed after)")
	return cmd
}

func variantNote(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return ", " + strings.Join(v, ", ")
}
