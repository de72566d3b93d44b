package model

import (
	"context"
	"fmt"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/torchrt"

	"github.com/diad-project/diad/backend/diffusion"
)

// checkImages validates a batch against the model's input size.
func (m *DiAD) checkImages(images *ts.Tensor) error {
	s := images.MustSize()
	want := int64(m.Config.ImageSize)
	if len(s) != 4 || s[1] != m.Config.Autoencoder.InChannels || s[2] != want || s[3] != want {
		return fmt.Errorf("model: images must be [B, %d, %d, %d], got %v", m.Config.Autoencoder.InChannels, want, want, s)
	}
	return nil
}

// EncodeLatent is z0 = ScaleFactor * sample(posterior(images)), without gradient.
func (m *DiAD) EncodeLatent(images *ts.Tensor, noise *diffusion.Noise) *ts.Tensor {
	b := images.MustSize()[0]
	eps := noise.Normal(m.AE.LatentShape(b, int64(m.Config.ImageSize)), m.Device())
	defer eps.MustDrop()
	var z0 *ts.Tensor
	torchrt.NoGrad(func() { z0 = m.AE.EncodeLatent(images, eps) })
	return z0
}

// TrainLoss is the reference objective: encode the batch to z0 (frozen
// autoencoder), draw t ~ U{0..T-1} and eps ~ N(0, I) per image, noise z0 to z_t,
// and return the mean squared error between the guided denoiser's output and
// its target (eps, or v for a v-prediction schedule). The caller backpropagates and frees the loss.
func (m *DiAD) TrainLoss(images *ts.Tensor, noise *diffusion.Noise) (loss *ts.Tensor, err error) {
	return m.trainLoss(images, images, noise, nil, nil)
}

// TrainLossDropping is TrainLoss with the SG network's controls zeroed for
// the images whose unguided[i] is true: the UNet then learns to rebuild
// those from z_t alone - a picture of normal images of its own, as
// classifier-free guidance trains one - which it otherwise never needs
// beside the SG network.
func (m *DiAD) TrainLossDropping(images *ts.Tensor, unguided []bool, noise *diffusion.Noise) (loss *ts.Tensor, err error) {
	if b := images.MustSize()[0]; int64(len(unguided)) != b {
		return nil, fmt.Errorf("model: %d guidance flags for a batch of %d", len(unguided), b)
	}
	return m.trainLoss(images, images, noise, nil, unguided)
}

// TrainLossWeighted is TrainLoss with each image's squared error multiplied
// by weight(t) of its timestep before the mean (nil: all 1, the reference).
func (m *DiAD) TrainLossWeighted(images *ts.Tensor, noise *diffusion.Noise, weight func(t int) float64) (loss *ts.Tensor, err error) {
	if weight == nil {
		return m.trainLoss(images, images, noise, nil, nil)
	}
	return m.trainLoss(images, images, noise, func(_, t int) float64 { return weight(t) }, nil)
}

// TrainLossRemoving is the training objective for removing defects: the SG
// network sees cond (some images with synthetic defects), z_t is noised from
// cond's latent, and the target leads back to the latent of clean (the
// same images without the defects). Images whose removing[i] is false have
// cond == clean and get TrainLoss's error; the others are weighted by
// 1-abar_t, which makes theirs the squared error of the clean latent the
// prediction implies (the v error scaled back; unweighted it grows as
// 1/(1-abar) toward t = 0, where nothing can be removed).
func (m *DiAD) TrainLossRemoving(cond, clean *ts.Tensor, removing []bool, noise *diffusion.Noise) (loss *ts.Tensor, err error) {
	if b := cond.MustSize()[0]; int64(len(removing)) != b {
		return nil, fmt.Errorf("model: %d removal flags for a batch of %d", len(removing), b)
	}
	return m.trainLoss(cond, clean, noise, func(i, t int) float64 {
		if removing[i] {
			return 1 - m.Schedule.AlphasCumprod[t]
		}
		return 1
	}, nil)
}

// trainLoss is the one denoiser objective: the SG network sees cond, z_t is
// noised from cond's latent, the target leads back to clean's latent (when
// cond is clean, the same tensor, the target is the reference's: eps or v
// of the drawn noise). weight(i, t), when not nil, scales image i's squared
// error before the mean; unguided, when not nil, zeroes the SG network's
// controls of the images it marks.
func (m *DiAD) trainLoss(cond, clean *ts.Tensor, noise *diffusion.Noise, weight func(i, t int) float64, unguided []bool) (loss *ts.Tensor, err error) {
	defer torchrt.Pin()()
	defer torchrt.Recover(&err, "train loss")
	for _, x := range []*ts.Tensor{cond, clean} {
		if err := m.checkImages(x); err != nil {
			return nil, err
		}
	}
	same := cond == clean
	b := int(cond.MustSize()[0])
	// One posterior sample for both, so that an unchanged image has the
	// same latent either way.
	post := noise.Normal(m.AE.LatentShape(int64(b), int64(m.Config.ImageSize)), m.Device())
	defer post.MustDrop()
	var zc, z0 *ts.Tensor
	torchrt.NoGrad(func() {
		zc = m.AE.EncodeLatent(cond, post)
		z0 = zc
		if !same {
			z0 = m.AE.EncodeLatent(clean, post)
		}
	})
	defer zc.MustDrop()
	if !same {
		defer z0.MustDrop()
	}
	t := noise.Timesteps(b, m.Schedule.T())
	eps := noise.Normal(z0.MustSize(), m.Device())
	defer eps.MustDrop()
	zt, err := m.Schedule.AddNoise(zc, eps, t)
	if err != nil {
		return nil, err
	}
	defer zt.MustDrop()
	defer m.startTape()()
	var keep *ts.Tensor
	if unguided != nil {
		k := make([]float32, b)
		for i, u := range unguided {
			if !u {
				k[i] = 1
			}
		}
		keep = ts.MustOfSlice(k).MustView([]int64{int64(b), 1, 1, 1}, true).MustTo(m.Device(), true)
		defer keep.MustDrop()
	}
	pred := m.predictScaled(zt, t, cond, keep)
	defer pred.MustDrop()
	back := eps
	if !same {
		back = m.Schedule.NoiseOf(zt, z0, t)
		defer back.MustDrop()
	}
	target := m.Schedule.Target(z0, back, t)
	defer target.MustDrop()
	if weight == nil {
		return pred.MustMseLoss(target, 1, false), nil // reduction 1 = mean
	}
	w := make([]float32, b)
	for i, ti := range t {
		w[i] = float32(weight(i, ti))
	}
	wt := ts.MustOfSlice(w).MustTo(m.Device(), true)
	defer wt.MustDrop()
	d := pred.MustSub(target, false)
	sq := d.MustSquare(true)
	per := sq.MustMeanDim([]int64{1, 2, 3}, false, gotch.Float, true)
	weighted := per.MustMul(wt, true)
	return weighted.MustMean(gotch.Float, true), nil
}

// Reconstruction is the result of one reconstruction.
type Reconstruction struct {
	// Image is the decoded reconstruction, ImageNet-normalised [B, 3, H, W].
	Image *ts.Tensor
	// Latent is the sampler's final latent [B, 4, h, w].
	Latent *ts.Tensor
}

// Free releases the reconstruction.
func (r Reconstruction) Free() {
	r.Image.MustDrop()
	r.Latent.MustDrop()
}

// ReconstructOption changes how Reconstruct runs.
type ReconstructOption func(*reconstructOptions)

type reconstructOptions struct{ perStepLane, unguided bool }

// PerStepLane makes Reconstruct take the process's compute lane
// (torchrt.LockCompute) itself, separately for the encoding, each denoiser
// call and the decoding, so that a long trajectory lets other work in
// between its steps. The callback runs outside the lane. Without it the
// caller holds the lane for the whole batch, if it wants one.
func PerStepLane() ReconstructOption {
	return func(o *reconstructOptions) { o.perStepLane = true }
}

// WithoutGuidance switches the SG network off: the UNet denoises without
// its controls (as if they were zero), the same image, noise and sampler
// otherwise. It shows what the SG network adds; DiAD never runs this way.
func WithoutGuidance() ReconstructOption {
	return func(o *reconstructOptions) { o.unguided = true }
}

// Reconstruct runs DiAD's inference on a batch of ImageNet-normalised images:
// z0 from the encoder (a posterior sample), forward noise to the sampler's
// noise level, the sampler's steps guided by the SG network on the images,
// decode. callback (may be nil) sees every step. Everything runs without
// gradient.
func (m *DiAD) Reconstruct(ctx context.Context, images *ts.Tensor, cfg diffusion.SamplerConfig, noise *diffusion.Noise, callback diffusion.Callback, opts ...ReconstructOption) (rec Reconstruction, err error) {
	defer torchrt.Pin()()
	defer torchrt.Recover(&err, "reconstruct")
	if err := m.checkImages(images); err != nil {
		return Reconstruction{}, err
	}
	var o reconstructOptions
	for _, f := range opts {
		f(&o)
	}
	lane := func() func() { return func() {} }
	if o.perStepLane {
		lane = torchrt.LockCompute
	}
	base, err := diffusion.NewScheduler(m.Schedule, cfg)
	if err != nil {
		return Reconstruction{}, err
	}
	defer base.Free()
	// The scheduler's update is libtorch work too: outside the lane its
	// thread team would spin against another caller's.
	sch := lanedScheduler{Scheduler: base, lane: lane}
	torchrt.NoGrad(func() {
		b := int(images.MustSize()[0])
		var zT *ts.Tensor
		func() {
			defer lane()() // deferred: a libtorch panic must not keep the lane
			z0 := m.EncodeLatent(images, noise)
			defer z0.MustDrop()
			start := make([]int, b)
			for i := range start {
				start[i] = cfg.NoiseLevel()
			}
			eps := noise.Normal(z0.MustSize(), m.Device())
			defer eps.MustDrop()
			zT, err = m.Schedule.AddNoise(z0, eps, start)
		}()
		if err != nil {
			return
		}
		defer zT.MustDrop()
		denoise := func(z *ts.Tensor, t int) *ts.Tensor {
			defer lane()()
			tb := make([]int, b)
			for i := range tb {
				tb[i] = t
			}
			if o.unguided {
				return m.PredictEpsUnguided(z, tb)
			}
			return m.PredictEps(z, tb, images)
		}
		var final *ts.Tensor
		if final, err = diffusion.Sample(ctx, sch, zT, denoise, noise, callback); err != nil {
			return
		}
		defer lane()()
		rec = Reconstruction{Image: m.AE.Decode(final), Latent: final}
	})
	return rec, err
}

// lanedScheduler runs each step of a scheduler inside the compute lane.
type lanedScheduler struct {
	diffusion.Scheduler
	lane func() (unlock func())
}

func (l lanedScheduler) Step(eps, zt *ts.Tensor, i int, rnd *diffusion.Noise) (*ts.Tensor, *ts.Tensor, error) {
	defer l.lane()()
	return l.Scheduler.Step(eps, zt, i, rnd)
}
