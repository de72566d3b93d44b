package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/torchref"
	"github.com/diad-project/diad/backend/torchrt"
)

// profileBench is `diad-dev bench profile`.
type profileBench struct {
	preset                       string
	batches                      []int
	iters, threads, profileBatch int
	m                            *model.DiAD
	noise                        *diffusion.Noise
}

func newProfileBenchCmd() *cobra.Command {
	var pb profileBench
	cmd := &cobra.Command{
		Use:   "profile",
		Short: "Time the guided denoiser pass (UNet + SG network) per batch size and per block",
		Long: "profile builds --preset with random weights on the CPU and times the guided denoiser pass\n" +
			"(SG network, then the UNet with its controls; no gradients) on random latents and images:\n" +
			"the median of --iters passes after a warm-up, per batch size, as seconds per pass and\n" +
			"images/s. Then, at --profile-batch, each block's share of the pass (input/middle/output\n" +
			"blocks of both networks and the SG hint block; the rest - time embeddings, zero convs, SFF,\n" +
			"the output head - is \"outside blocks\").",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			defer torchrt.Pin()()
			torchrt.SetThreads(pb.threads)
			m, err := model.NewPreset(pb.preset, gotch.CPU)
			if err != nil {
				return err
			}
			defer m.Free()
			pb.m, pb.noise = m, diffusion.NewNoise(1)
			if err := pb.perBatch(cmd); err != nil {
				return err
			}
			return pb.perBlock(cmd.OutOrStdout())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&pb.preset, "preset", "paper", "model preset")
	fl.IntSliceVar(&pb.batches, "batches", []int{1, 2, 4, 8}, "batch sizes")
	fl.IntVar(&pb.iters, "iters", 3, "timed passes per batch size (after one warm-up)")
	fl.IntVar(&pb.profileBatch, "profile-batch", 1, "batch size of the per-block profile")
	fl.IntVar(&pb.threads, "threads", 0, "libtorch threads (0 = default)")
	return cmd
}

// pass returns a function running one guided pass at batch b on random
// inputs, and one freeing them.
func (pb *profileBench) pass(b int) (run func(), free func()) {
	cfg := pb.m.Config
	l, s := int64(cfg.LatentSize()), int64(cfg.ImageSize)
	z := pb.noise.Normal([]int64{int64(b), 4, l, l}, gotch.CPU)
	img := pb.noise.Normal([]int64{int64(b), 3, s, s}, gotch.CPU)
	t := make([]int, b)
	for i := range t {
		t[i] = cfg.Schedule.Timesteps - 1
	}
	run = func() {
		torchrt.NoGrad(func() { pb.m.PredictEps(z, t, img).MustDrop() })
	}
	return run, func() { z.MustDrop(); img.MustDrop() }
}

// timed runs run once to warm up, then --iters times, and returns the
// seconds of each.
func (pb *profileBench) timed(run func()) []float64 {
	run()
	out := make([]float64, pb.iters)
	for i := range out {
		start := time.Now()
		run()
		out[i] = time.Since(start).Seconds()
	}
	return out
}

// perBatch prints the pass's time per batch size.
func (pb *profileBench) perBatch(cmd *cobra.Command) error {
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s, guided denoiser pass, %d threads, median of %d\n", pb.m.Config.Preset, torchrt.Threads(), pb.iters)
	fmt.Fprintf(tw, "batch\ts/pass [min, max]\timages/s\tvs batch 1\t\n")
	var perImage1 float64
	for _, b := range pb.batches {
		if b < 1 {
			return fmt.Errorf("--batches: %d is not a batch size", b)
		}
		run, free := pb.pass(b)
		sec := pb.timed(run)
		free()
		med, lo, hi := torchref.Spread(sec)
		ips := float64(b) / med
		if perImage1 == 0 {
			perImage1 = ips
		}
		fmt.Fprintf(tw, "%d\t%.3f [%.3f, %.3f]\t%.2f\t%.2f\t\n", b, med, lo, hi, ips, ips/perImage1)
		fmt.Fprintf(cmd.ErrOrStderr(), "batch %d: %.3f s per pass\n", b, med)
	}
	return tw.Flush()
}

// perBlock prints each block's share of the pass at --profile-batch.
func (pb *profileBench) perBlock(out io.Writer) error {
	blocks := map[string]time.Duration{}
	var order []string
	timer := func(name string, d time.Duration) {
		if _, ok := blocks[name]; !ok {
			order = append(order, name)
		}
		blocks[name] += d
	}
	run, free := pb.pass(pb.profileBatch)
	defer free()
	run() // warm-up, untimed
	pb.m.UNet.SetBlockTimer(timer)
	pb.m.SG.SetBlockTimer(timer)
	var total time.Duration
	for range pb.iters {
		start := time.Now()
		run()
		total += time.Since(start)
	}
	pb.m.UNet.SetBlockTimer(nil)
	pb.m.SG.SetBlockTimer(nil)
	var inBlocks time.Duration
	for _, d := range blocks {
		inBlocks += d
	}
	sort.SliceStable(order, func(i, j int) bool { return blocks[order[i]] > blocks[order[j]] })
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "\nper block, batch %d (ms per pass, share of the pass %.0f ms)\n", pb.profileBatch, ms(total)/float64(pb.iters))
	fmt.Fprintf(tw, "block\tms\tshare\t\n")
	row := func(name string, d time.Duration) {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f%%\t\n", name, ms(d)/float64(pb.iters), 100*float64(d)/float64(total))
	}
	for _, name := range order {
		row(shortBlock(name), blocks[name])
	}
	row("outside blocks", total-inBlocks)
	return tw.Flush()
}

// shortBlock names a block by its network and place: unet.input_blocks.3,
// sg.input_hint_block.
func shortBlock(prefix string) string {
	name := strings.TrimSuffix(prefix, ".")
	for _, p := range []struct{ full, short string }{{model.PrefixUNet, "unet."}, {model.PrefixSG, "sg."}} {
		if rest, ok := strings.CutPrefix(name, p.full); ok {
			return p.short + rest
		}
	}
	return name
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
