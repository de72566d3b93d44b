package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/optim"
	"github.com/diad-project/diad/backend/torchref"
	"github.com/diad-project/diad/backend/torchrt"
)

// torchBench is `diad-dev bench torch`: its flags, and the table and rates
// it collects.
type torchBench struct {
	preset, trainPreset, attention, work string
	batches                              []int
	trainBatch, rounds, threads          int
	flops                                bool
	variants, ops                        []string

	tw    *tabwriter.Writer
	rates []string
	mm    float64 // the measured matmul rate (matmulRate), once
}

func newTorchBenchCmd() *cobra.Command {
	var tb torchBench
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
		RunE: func(cmd *cobra.Command, _ []string) error { return tb.run(cmd) },
	}
	tb.register(cmd.Flags())
	return cmd
}

func (tb *torchBench) register(fl *pflag.FlagSet) {
	fl.StringVar(&tb.preset, "preset", "paper", "model preset of the inference computations")
	fl.IntSliceVar(&tb.batches, "batches", []int{1, 4}, "batch sizes of the denoiser pass (the other computations run at the first)")
	fl.StringSliceVar(&tb.ops, "ops", torchref.Ops, "inference computations (empty: none)")
	fl.StringVar(&tb.trainPreset, "train-preset", "small", "model preset of the optimizer step (empty: none)")
	fl.IntVar(&tb.trainBatch, "train-batch", 4, "batch size of the optimizer step")
	fl.IntVar(&tb.rounds, "rounds", 3, "alternating rounds per computation (after a warm-up call each)")
	fl.IntVar(&tb.threads, "threads", 0, "intra-op threads on both sides (0: libtorch's default)")
	fl.StringVar(&tb.attention, "attention", torchref.AttentionSDPA, "PyTorch's attention: sdpa (fused, what diad calls) or einsum (the reference's modules without xformers)")
	fl.StringSliceVar(&tb.variants, "torch-variants", nil, "change PyTorch's side to measure a candidate speed-up: channels_last, bf16 (autocast)")
	fl.BoolVar(&tb.flops, "flops", true, "count the FLOPs of the denoiser pass, encode and decode (one more PyTorch call each) and report GFLOP/s against the cores' estimated peak and the rate a large matmul reaches on them")
	fl.StringVar(&tb.work, "work", "", "folder for the model file and the inputs (default: a temporary folder, removed after)")
}

func (tb *torchBench) run(cmd *cobra.Command) error {
	defer torchrt.Pin()()
	if tb.threads <= 0 {
		torchrt.FitThreads() // the machine's share, as a diad process computing now gets
		tb.threads = torchrt.Threads()
	}
	torchrt.SetThreads(tb.threads)
	if tb.work == "" {
		dir, err := os.MkdirTemp("", "diad-bench-torch-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		tb.work = dir
	} else if err := os.MkdirAll(tb.work, 0o755); err != nil {
		return err
	}
	out := cmd.OutOrStdout()
	tb.tw = tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tb.tw, "preset\tcomputation\tbatch\tdiad s [min, max]\tPyTorch s [min, max]\tdiad/PyTorch\tdiad MiB\tPyTorch MiB\tmax rel. diff\t\n")
	fmt.Fprintf(out, "diad against PyTorch eager (%s attention%s), %d threads, median of %d alternating rounds\n", tb.attention, variantNote(tb.variants), tb.threads, tb.rounds)
	if len(tb.ops) > 0 {
		if err := tb.side(cmd, tb.preset, tb.inference); err != nil {
			return err
		}
	}
	if tb.trainPreset != "" {
		if err := tb.side(cmd, tb.trainPreset, tb.training); err != nil {
			return err
		}
	}
	if err := tb.tw.Flush(); err != nil {
		return err
	}
	return tb.printRates(out)
}

// side builds a preset, starts its worker and runs each case.
func (tb *torchBench) side(cmd *cobra.Command, name string, run func(cmd *cobra.Command, m *model.DiAD, w *torchref.Worker) error) (err error) {
	m, err := model.NewPreset(name, gotch.CPU)
	if err != nil {
		return err
	}
	defer m.Free()
	if err := torchref.FillZeroInit(m); err != nil {
		return err
	}
	path := filepath.Join(tb.work, name+".safetensors")
	if err := m.Save(path, nil); err != nil {
		return err
	}
	defer os.Remove(path)
	fmt.Fprintf(cmd.ErrOrStderr(), "%s: loading the model in PyTorch\n", name)
	w, err := torchref.Start(cmd.Context(), path, torchref.Options{Threads: tb.threads, Attention: tb.attention, Variants: tb.variants})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, w.Close()) }()
	if w.Threads != torchrt.Threads() {
		return fmt.Errorf("PyTorch runs %d threads, diad %d", w.Threads, torchrt.Threads())
	}
	return run(cmd, m, w)
}

// inference compares the inference computations: the denoiser pass at
// every batch size, the rest at the first.
func (tb *torchBench) inference(cmd *cobra.Command, m *model.DiAD, w *torchref.Worker) error {
	fmt.Fprintf(cmd.OutOrStdout(), "PyTorch %s\n", w.Torch)
	for _, b := range tb.batches {
		want := []string{}
		for _, op := range tb.ops {
			if op == torchref.OpDenoise || b == tb.batches[0] {
				want = append(want, op)
			}
		}
		cases, free, err := torchref.InferenceCases(cmd.Context(), m, want, b, tb.work, 1)
		if err != nil {
			return err
		}
		for _, c := range cases {
			if err := tb.compare(cmd, tb.preset, w, c); err != nil {
				free()
				return err
			}
		}
		free()
	}
	return nil
}

// training compares an optimizer step with the reference freezing.
func (tb *torchBench) training(cmd *cobra.Command, m *model.DiAD, w *torchref.Worker) error {
	m.SetFreeze(model.FreezeReference)
	c, free, err := torchref.TrainCase(m, tb.trainBatch, tb.work, 1, optim.ReferenceAdamW)
	if err != nil {
		return err
	}
	defer free()
	return tb.compare(cmd, tb.trainPreset, w, c)
}

// counted are the computations whose arithmetic rate is reported (a
// reconstruction is 10 passes, an encode and a decode).
var counted = map[string]bool{torchref.OpDenoise: true, torchref.OpEncode: true, torchref.OpDecode: true}

// compare runs one case on both sides, adds its row, and with --flops its
// arithmetic rate against the cores' peak.
func (tb *torchBench) compare(cmd *cobra.Command, name string, w *torchref.Worker, c torchref.Case) error {
	fmt.Fprintf(cmd.ErrOrStderr(), "%s %s batch %d: %d rounds\n", name, c.Name, c.Batch, tb.rounds)
	r, err := torchref.Compare(w, c, tb.rounds, tb.work)
	if err != nil {
		return err
	}
	d, p := torchref.Seconds(r.Diad), torchref.Seconds(r.Torch)
	dm, dl, dh := torchref.Spread(d)
	pm, pl, ph := torchref.Spread(p)
	fmt.Fprintf(tb.tw, "%s\t%s\t%d\t%.3f [%.3f, %.3f]\t%.3f [%.3f, %.3f]\t%.2f\t%.0f\t%.0f\t%.1e\t\n", name, r.Name, r.Batch,
		dm, dl, dh, pm, pl, ph, r.Ratio(),
		torchref.Median(torchref.ExtraMiB(r.Diad)), torchref.Median(torchref.ExtraMiB(r.Torch)), r.RelDiff)
	if !counted[c.Name] || !tb.flops {
		return nil
	}
	n, err := w.Flops(c)
	if err != nil {
		return err
	}
	peak, _, err := cpuPeak(tb.threads)
	if err != nil {
		return err
	}
	if tb.mm == 0 {
		if tb.mm, err = matmulRate(); err != nil {
			return err
		}
	}
	mm := tb.mm
	dr, pr := n/1e9/torchref.Median(d), n/1e9/torchref.Median(p)
	tb.rates = append(tb.rates, fmt.Sprintf("%s %s batch %d: %.1f GFLOP per call; diad %.1f GFLOP/s (%.0f%% of the estimated peak, %.0f%% of the matmul's rate), PyTorch %.1f GFLOP/s (%.0f%%, %.0f%%); at the peak %.2f s",
		name, c.Name, c.Batch, n/1e9, dr, 100*dr/peak, 100*dr/mm, pr, 100*pr/peak, 100*pr/mm, n/1e9/peak))
	return nil
}

// printRates prints the arithmetic rates collected, after the peak and the
// matmul's rate they are measured against.
func (tb *torchBench) printRates(out io.Writer) error {
	if len(tb.rates) == 0 {
		return nil
	}
	peak, how, err := cpuPeak(tb.threads)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nFLOPs counted by torch's FlopCounterMode; estimated peak %.1f GFLOP/s = %s\n", peak, how)
	fmt.Fprintf(out, "measured: a %d^3 float32 matmul in libtorch (BLAS on the same threads) runs at %.1f GFLOP/s, %.0f%% of the estimate (a lower bound on the peak: above 100%%, the cores run faster than the clock /proc/cpuinfo reports)\n",
		matmulSide, tb.mm, 100*tb.mm/peak)
	for _, r := range tb.rates {
		fmt.Fprintln(out, r)
	}
	return nil
}

func variantNote(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return ", " + strings.Join(v, ", ")
}
