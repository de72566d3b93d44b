// Package throughput measures a model preset's speed and peak memory on
// random data: optimizer steps (forward, backward, AdamW) and reference
// reconstructions. `diad bench` reports it; the developers' harnesses
// (cmd/diad-dev) time the same steps in other settings.
package throughput

import (
	"context"
	"time"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/optim"
	"github.com/diad-project/diad/backend/torchrt"
)

// Result is one preset's throughput.
type Result struct {
	Preset              string
	TrainImagesPerSec   float64
	ReconImagesPerSec   float64
	TrainPeakRSSMiB     float64
	ReconPeakRSSMiB     float64
	Params              int64
	Batch, Iters, Steps int
}

// Measure measures one preset; done is called after each iteration, warm-ups
// included, with the phase's name.
func Measure(ctx context.Context, cfg model.Config, d gotch.Device, batch, iters int, done func(phase string)) (Result, error) {
	m, err := model.New(cfg, d)
	if err != nil {
		return Result{}, err
	}
	defer m.Free()
	res := Result{Preset: cfg.Preset, Batch: batch, Iters: iters, Params: m.Store.Count("")}
	noise := diffusion.NewNoise(1)
	s := int64(cfg.ImageSize)
	x := noise.Normal([]int64{int64(batch), 3, s, s}, d)
	defer x.MustDrop()
	step, freeOpt, err := TrainStep(m, x, noise, model.FreezeNone)
	if err != nil {
		return res, err
	}
	defer freeOpt()
	recon := func() error { return ReconstructOnce(ctx, m, x, noise) }
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

// TrainStep prepares optimizer steps of m's weights trained under freeze on
// the batch x (forward, backward, AdamW), as the benchmarks time them.
func TrainStep(m *model.DiAD, x *ts.Tensor, noise *diffusion.Noise, freeze model.Freeze) (step func() error, free func(), err error) {
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

// GradientStep is TrainStep without the optimizer: forward and backward of
// m's weights trained under freeze, the gradients zeroed first.
func GradientStep(m *model.DiAD, x *ts.Tensor, noise *diffusion.Noise, freeze model.Freeze) func() error {
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

// ReconstructOnce runs the model's reference reconstruction of x and frees it.
func ReconstructOnce(ctx context.Context, m *model.DiAD, x *ts.Tensor, noise *diffusion.Noise) error {
	rec, err := m.Reconstruct(ctx, x, m.Config.Sampler, noise, nil)
	if err != nil {
		return err
	}
	rec.Free()
	return nil
}
