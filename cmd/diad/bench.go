package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/optim"
	"github.com/diad-project/diad/backend/torchrt"
)

// benchResult is one preset's throughput.
type benchResult struct {
	Preset              string
	TrainImagesPerSec   float64
	ReconImagesPerSec   float64
	TrainPeakRSSMiB     float64
	ReconPeakRSSMiB     float64
	Params              int64
	Batch, Iters, Steps int
}

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
				r, err := bench(cmd.Context(), cfg, dev, batch, iters, func(phase string) {
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
	cmd.AddCommand(newQualityCmd(), newSharingCmd(), newSharingWorkerCmd(), newRecomputeBenchCmd(), newProfileBenchCmd(), newTorchBenchCmd(), newKernelsBenchCmd(), newKernelsWorkerCmd())
	cmd.Flags().StringSliceVar(&presets, "presets", []string{"tiny", "small", "demo"}, "presets to measure")
	cmd.Flags().IntVar(&batch, "batch", 4, "images per batch")
	cmd.Flags().IntVar(&iters, "iters", 5, "timed iterations")
	cmd.Flags().IntVar(&threads, "threads", 0, "libtorch threads (0 = default)")
	cmd.Flags().StringVar(&device, "device", "auto", "cpu, cuda, cuda:N or auto")
	return cmd
}

// bench measures one preset; done is called after each iteration, warm-ups
// included, with the phase's name.
func bench(ctx context.Context, cfg model.Config, d gotch.Device, batch, iters int, done func(phase string)) (benchResult, error) {
	m, err := model.New(cfg, d)
	if err != nil {
		return benchResult{}, err
	}
	defer m.Free()
	res := benchResult{Preset: cfg.Preset, Batch: batch, Iters: iters, Params: m.Store.Count("")}
	noise := diffusion.NewNoise(1)
	s := int64(cfg.ImageSize)
	x := noise.Normal([]int64{int64(batch), 3, s, s}, d)
	defer x.MustDrop()
	step, freeOpt, err := trainStep(m, x, noise, model.FreezeNone)
	if err != nil {
		return res, err
	}
	defer freeOpt()
	recon := func() error { return reconstructOnce(ctx, m, x, noise) }
	for _, phase := range []struct {
		name string
		run  func() error
		ips  *float64
		peak *float64
	}{{"train step", step, &res.TrainImagesPerSec, &res.TrainPeakRSSMiB}, {"reconstruction", recon, &res.ReconImagesPerSec, &res.ReconPeakRSSMiB}} {
		if err := phase.run(); err != nil { // warm-up
			return res, err
		}
		done(phase.name + " (warm-up)")
		if err := torchrt.ResetPeakRSS(); err != nil {
			return res, err
		}
		start := time.Now()
		for i := 0; i < iters; i++ {
			if err := phase.run(); err != nil {
				return res, err
			}
			done(phase.name)
		}
		*phase.ips = float64(iters*batch) / time.Since(start).Seconds()
		*phase.peak = torchrt.PeakRSSMiB()
	}
	return res, nil
}

// randomModel builds a preset with random weights on dev: what the
// benchmarks measure (their speed and memory do not depend on the values).
func randomModel(preset string, dev gotch.Device) (*model.DiAD, error) {
	cfg, err := model.Preset(preset)
	if err != nil {
		return nil, err
	}
	return model.New(cfg, dev)
}

// trainStep prepares optimizer steps of m's weights trained under freeze on
// the batch x (forward, backward, AdamW), as the benchmarks time them.
func trainStep(m *model.DiAD, x *ts.Tensor, noise *diffusion.Noise, freeze model.Freeze) (step func() error, free func(), err error) {
	m.SetFreeze(freeze)
	opt, err := optim.NewAdamW(m.Store.Trainable(), optim.ReferenceAdamW)
	if err != nil {
		return nil, nil, err
	}
	step = func() error {
		opt.ZeroGrad()
		loss, err := m.TrainLoss(x, noise)
		if err != nil {
			return err
		}
		if err := m.Backward(loss); err != nil {
			return err
		}
		loss.MustDrop()
		opt.Update()
		return nil
	}
	return step, opt.Free, nil
}

// gradientStep is trainStep without the optimizer: forward and backward of
// m's weights trained under freeze, the gradients zeroed first.
func gradientStep(m *model.DiAD, x *ts.Tensor, noise *diffusion.Noise, freeze model.Freeze) func() error {
	m.SetFreeze(freeze)
	return func() error {
		for _, p := range m.Store.Trainable() {
			g := p.Tensor.MustGrad(false)
			if g.MustDefined() {
				torchrt.Zero_(g)
			}
			g.MustDrop()
		}
		loss, err := m.TrainLoss(x, noise)
		if err != nil {
			return err
		}
		defer loss.MustDrop()
		return m.Backward(loss)
	}
}

// reconstructOnce runs the model's reference reconstruction of x and frees it.
func reconstructOnce(ctx context.Context, m *model.DiAD, x *ts.Tensor, noise *diffusion.Noise) error {
	rec, err := m.Reconstruct(ctx, x, m.Config.Sampler, noise, nil)
	if err != nil {
		return err
	}
	rec.Free()
	return nil
}
