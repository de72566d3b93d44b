package seghead

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/layers"
	"github.com/diad-project/diad/backend/optim"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
)

// TrainConfig is the head's training: random crops of the training images
// and their reconstructions, half of them with a synthetic defect painted on
// the image (the reconstruction stays that of the clean image: what DiAD
// would give if it removed the defect perfectly).
type TrainConfig struct {
	Steps     int `yaml:"steps"`
	BatchSize int `yaml:"batch_size"`
	// Crop is the training crops' side (a multiple of the head's Multiple);
	// the head is fully convolutional and scores whole images.
	Crop int `yaml:"crop"`
	// DefectShare is the share of crops with a painted defect.
	DefectShare float64           `yaml:"defect_share"`
	Optim       optim.AdamWConfig `yaml:"optim"`
	// MaxDuration ends the training early (0: no limit).
	MaxDuration time.Duration `yaml:"max_duration"`
	Seed        uint64        `yaml:"seed"`
}

// DemoTraining is the demo recipe's head training.
var DemoTraining = TrainConfig{Steps: 1500, BatchSize: 16, Crop: 64, DefectShare: 0.5,
	Optim: optim.AdamWConfig{LR: 2e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 1e-4}, MaxDuration: 7 * time.Minute}

// Validate checks the settings against the head and the image side.
func (c TrainConfig) Validate(h Config, side int) error {
	if c.Steps < 1 || c.BatchSize < 1 {
		return fmt.Errorf("seghead: steps and batch size must be >= 1, got %d and %d", c.Steps, c.BatchSize)
	}
	if c.Crop < h.Multiple() || c.Crop%h.Multiple() != 0 || c.Crop > side {
		return fmt.Errorf("seghead: crop %d must be a multiple of %d and at most the image side %d", c.Crop, h.Multiple(), side)
	}
	if c.DefectShare < 0 || c.DefectShare > 1 {
		return fmt.Errorf("seghead: defect_share %v is not in [0, 1]", c.DefectShare)
	}
	return nil
}

// Pair is one training image and DiAD's reconstruction of it, both
// ImageNet-normalised, channel-major 3*side*side.
type Pair struct{ Image, Recon []float32 }

// Step is one training step's outcome, for progress and logs.
type Step struct {
	Step int
	Loss float64
}

// Train fits the head's parameters (params: its trainable parameters, e.g.
// the model store's under Prefix) on the pairs, whose images have the given
// side. It stops after cfg.Steps, at cfg.MaxDuration or when ctx ends (an
// error), and reports each step to onStep (may be nil).
func Train(ctx context.Context, net *Net, params []*layers.Param, pairs []Pair, side int, dev gotch.Device, cfg TrainConfig, onStep func(Step)) (steps int, err error) {
	if err := cfg.Validate(net.cfg, side); err != nil {
		return 0, err
	}
	if len(pairs) < 2 {
		return 0, fmt.Errorf("seghead: need at least 2 training images, have %d", len(pairs))
	}
	for i, p := range pairs {
		if len(p.Image) != 3*side*side || len(p.Recon) != 3*side*side {
			return 0, fmt.Errorf("seghead: pair %d has %d and %d values, want %d", i, len(p.Image), len(p.Recon), 3*side*side)
		}
	}
	opt, err := optim.NewAdamW(params, cfg.Optim)
	if err != nil {
		return 0, err
	}
	defer opt.Free()
	r := rand.New(rand.NewPCG(cfg.Seed, 0x5e6))
	start := time.Now()
	for step := 1; step <= cfg.Steps; step++ {
		if err := ctx.Err(); err != nil {
			return step - 1, err
		}
		if cfg.MaxDuration > 0 && time.Since(start) >= cfg.MaxDuration {
			return step - 1, nil
		}
		imgs, recs, masks := drawBatch(pairs, side, cfg, r)
		var loss float64
		err := torchrt.Do(func() error {
			unlock := torchrt.LockCompute()
			defer unlock()
			x := torchrt.ImageBatch(imgs, cfg.BatchSize, cfg.Crop, dev)
			defer x.MustDrop()
			y := torchrt.ImageBatch(recs, cfg.BatchSize, cfg.Crop, dev)
			defer y.MustDrop()
			m := ts.MustOfSlice(masks).MustView([]int64{int64(cfg.BatchSize), 1, int64(cfg.Crop), int64(cfg.Crop)}, true).MustTo(dev, true)
			defer m.MustDrop()
			opt.ZeroGrad()
			var l *ts.Tensor
			torchrt.WithGrad(func() {
				logits := net.Logits(x, y)
				l = Loss(logits, m)
				logits.MustDrop()
			})
			defer l.MustDrop()
			if err := torchrt.Backward(l, false); err != nil {
				return err
			}
			opt.Update()
			loss = torchrt.Float64s(l)[0]
			return nil
		})
		if err != nil {
			return step - 1, fmt.Errorf("seghead: step %d: %w", step, err)
		}
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return step, fmt.Errorf("seghead: loss is %v at step %d", loss, step)
		}
		if onStep != nil {
			onStep(Step{Step: step, Loss: loss})
		}
	}
	return cfg.Steps, nil
}

// drawBatch cuts cfg.BatchSize random crops (same place, same flip and
// rotation in image and reconstruction) and paints defects on a share of the
// images. It returns ImageNet-normalised images, reconstructions and masks.
func drawBatch(pairs []Pair, side int, cfg TrainConfig, r *rand.Rand) (imgs, recs, masks []float32) {
	c := cfg.Crop
	plane := c * c
	imgs = make([]float32, 0, cfg.BatchSize*3*plane)
	recs = make([]float32, 0, cfg.BatchSize*3*plane)
	masks = make([]float32, 0, cfg.BatchSize*plane)
	for b := 0; b < cfg.BatchSize; b++ {
		i := r.IntN(len(pairs))
		x0, y0, orient := r.IntN(side-c+1), r.IntN(side-c+1), r.IntN(8)
		img := cropUnit(pairs[i].Image, side, c, x0, y0, orient)
		rec := cropUnit(pairs[i].Recon, side, c, x0, y0, orient)
		mask := make([]float32, plane)
		if r.Float64() < cfg.DefectShare {
			j := r.IntN(len(pairs) - 1)
			if j >= i {
				j++
			}
			donor := cropUnit(pairs[j].Image, side, c, r.IntN(side-c+1), r.IntN(side-c+1), r.IntN(8))
			mask = Paint(img, donor, r)
		}
		imgs = append(imgs, normalise(img.Pix, plane)...)
		recs = append(recs, normalise(rec.Pix, plane)...)
		masks = append(masks, mask...)
	}
	return imgs, recs, masks
}

// cropUnit cuts a c x c crop at (x0, y0) from a normalised image of the given
// side, in one of the eight flips and quarter turns, back in [0, 1] RGB.
func cropUnit(img []float32, side, c, x0, y0, orient int) Crop {
	out := Crop{Side: c, Pix: make([]float32, 3*c*c)}
	for k := 0; k < 3; k++ {
		for y := 0; y < c; y++ {
			for x := 0; x < c; x++ {
				u, v := x, y
				if orient&1 != 0 {
					u = c - 1 - u
				}
				if orient&2 != 0 {
					v = c - 1 - v
				}
				if orient&4 != 0 {
					u, v = v, u
				}
				val := img[k*side*side+(y0+v)*side+x0+u]
				out.Pix[k*c*c+y*c+x] = val*datasets.ImageNetStd[k] + datasets.ImageNetMean[k]
			}
		}
	}
	return out
}

func normalise(pix []float32, plane int) []float32 {
	out := make([]float32, len(pix))
	for k := 0; k < 3; k++ {
		for p := 0; p < plane; p++ {
			out[k*plane+p] = (pix[k*plane+p] - datasets.ImageNetMean[k]) / datasets.ImageNetStd[k]
		}
	}
	return out
}
