package train

import (
	"fmt"
	"math"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/calibrate"
	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/scoring"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
)

// loss computes the current stage's loss on a batch.
func (t *trainer) loss(images *ts.Tensor, noise *diffusion.Noise) (*ts.Tensor, error) {
	if t.st.Stage == StageAutoencoder {
		return t.autoencoderLoss(images, noise)
	}
	if t.cfg.RemoveFraction > 0 {
		return t.removingLoss(images, noise)
	}
	if p := t.cfg.GuidanceDropout; p > 0 {
		loss, err := t.m.TrainLossDropping(images, drawShare(noise, int(images.MustSize()[0]), p), noise)
		if err != nil {
			return nil, fmt.Errorf("denoiser loss: %w", err)
		}
		return loss, nil
	}
	if c := t.cfg.LossWeightCap; c > 0 {
		ac := t.m.Schedule.AlphasCumprod
		return t.m.TrainLossWeighted(images, noise, func(ti int) float64 {
			return math.Min(math.Max((1-ac[ti])/ac[ti], 1), c)
		})
	}
	return t.m.TrainLoss(images, noise)
}

// drawShare marks each of n images with probability share, from the
// training noise (so a resumed run draws the same marks).
func drawShare(noise *diffusion.Noise, n int, share float64) []bool {
	marked := make([]bool, n)
	for i := range marked {
		marked[i] = float64(noise.Uint64()>>11)/(1<<53) < share
	}
	return marked
}

// removingLoss gives RemoveFraction of the batch a synthetic defect for the
// SG network to see, with the clean images as the target.
func (t *trainer) removingLoss(images *ts.Tensor, noise *diffusion.Noise) (loss *ts.Tensor, err error) {
	err = torchrt.Do(func() error {
		size := t.m.Config.ImageSize
		b := int(images.MustSize()[0])
		flat := torchrt.Float32s(images)
		hw3 := 3 * size * size
		clean := make([]calibrate.Image, b)
		for i := range clean {
			clean[i] = flat[i*hw3 : (i+1)*hw3]
		}
		bad, _ := calibrate.Corrupt(clean, size, noise.Uint64()) // the masks are not needed here
		removing := drawShare(noise, b, t.cfg.RemoveFraction)
		cond := make([]float32, 0, len(flat))
		for i := range clean {
			if removing[i] {
				cond = append(cond, bad[i]...)
			} else {
				cond = append(cond, clean[i]...)
			}
		}
		c := torchrt.ImageBatch(cond, b, size, images.MustDevice())
		defer c.MustDrop()
		loss, err = t.m.TrainLossRemoving(c, images, removing, noise)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("denoiser loss: %w", err)
	}
	return loss, nil
}

// autoencoderLoss is stage 1: L1 reconstruction of a posterior sample plus
// KLWeight times the KL divergence.
func (t *trainer) autoencoderLoss(images *ts.Tensor, noise *diffusion.Noise) (loss *ts.Tensor, err error) {
	err = torchrt.Do(func() error {
		loss, err = t.autoencoderLossOf(images, noise)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("autoencoder loss: %w", err)
	}
	return loss, nil
}

func (t *trainer) autoencoderLossOf(images *ts.Tensor, noise *diffusion.Noise) (loss *ts.Tensor, err error) {
	if c := int64(t.cfg.AutoencoderCrop); c > 0 && c < images.MustSize()[2] {
		// A random square crop (the same for the whole batch): the
		// autoencoder is convolutional, so crops teach it the same
		// mapping at a fraction of the cost.
		size := images.MustSize()
		oy := int64(noise.Uint64() % uint64(size[2]-c+1))
		ox := int64(noise.Uint64() % uint64(size[3]-c+1))
		images = images.MustNarrow(2, oy, c, false).MustNarrow(3, ox, c, true)
		defer images.MustDrop()
	}
	post := t.m.AE.Encode(images)
	defer post.Free()
	eps := noise.Normal(post.Mean.MustSize(), t.m.Device())
	z := post.Sample(eps)
	eps.MustDrop()
	rec := t.m.AE.DecodeRaw(z)
	z.MustDrop()
	var ssim *ts.Tensor
	if w := t.cfg.AutoencoderSSIMWeight; w > 0 {
		a, b := scoring.ToUnit(images), scoring.ToUnit(rec)
		m := scoring.SSIMMap(a, b)
		a.MustDrop()
		b.MustDrop()
		ssim = m.MustMean(m.DType(), true).MustNeg(true).MustAddScalar(ts.FloatScalar(1), true).MustMulScalar(ts.FloatScalar(w), true)
	}
	l1 := rec.MustL1Loss(images, 1, true)
	kl := post.KL().MustMulScalar(ts.FloatScalar(t.cfg.KLWeight), true)
	out := l1.MustAdd(kl, true)
	kl.MustDrop()
	if ssim != nil {
		out = out.MustAdd(ssim, true)
		ssim.MustDrop()
	}
	return out, nil
}

func toTensor(b datasets.Batch, size int, dev gotch.Device) *ts.Tensor {
	return torchrt.ImageBatch(b.Images(), len(b.Items), size, dev)
}
