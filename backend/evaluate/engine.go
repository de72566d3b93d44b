package evaluate

import (
	"context"
	"fmt"
	"math"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/shared"
)

// Engine is a loaded model with its scorer, serving per-image work to the
// server in plain Go values, so that the server holds no tensors and imports
// no tensor package. It does not change after Load; its methods may run from
// several goroutines (they take the compute lane per step).
type Engine struct {
	det  *Detector
	path string
}

// Load opens cfg's checkpoint and scorer (see Open).
func Load(cfg Config) (*Engine, error) {
	det, err := Open(cfg)
	if err != nil {
		return nil, err
	}
	return &Engine{det: det, path: cfg.Checkpoint}, nil
}

// Free releases the model. No call may be running.
func (e *Engine) Free() { e.det.Free() }

// Path is the checkpoint the engine was loaded from.
func (e *Engine) Path() string { return e.path }

// SignalCurve is sqrt(abar_t) at t = 0, stride, 2*stride, ... and the
// last timestep: the model's noise schedule as the explorer draws it.
func (e *Engine) SignalCurve(stride int) []float32 {
	abar := e.det.Model.Schedule.AlphasCumprod
	stride = max(stride, 1)
	var out []float32
	for t := 0; t < len(abar); t += stride {
		out = append(out, float32(math.Sqrt(abar[t])))
	}
	if (len(abar)-1)%stride != 0 {
		out = append(out, float32(math.Sqrt(abar[len(abar)-1])))
	}
	return out
}

// ImageSize is the side of the model's square input.
func (e *Engine) ImageSize() int { return e.det.Model.Config.ImageSize }

// Scorer names the anomaly map's terms.
func (e *Engine) Scorer() string { return e.det.Scorer.Kind() }

// Sampler is base (nil: the engine's default) changed by o, validated
// against the model's schedule.
func (e *Engine) Sampler(base *shared.SamplerConfig, o shared.SamplerOverride) (shared.SamplerConfig, error) {
	c := e.det.Sampler
	if base != nil {
		c = *base
	}
	c = c.With(o)
	if err := c.Validate(e.det.Model.Schedule.T()); err != nil {
		return shared.SamplerConfig{}, err
	}
	return c, nil
}

// Products selects what a trajectory computes at every step.
type Products struct {
	Latents bool // z_t and the predicted clean latent
	Image   bool // the decoded predicted image
	Map     bool // the anomaly map and score of the predicted image
}

// StepFrame is one step of a trajectory.
type StepFrame struct {
	Index, Total, T int
	// LatentShape is [channels, height, width] of Zt and X0.
	LatentShape [3]int
	Zt, X0      []float32 // with Products.Latents
	Image       []float32 // 3*S*S ImageNet-normalised, with Products.Image
	Map         []float32 // S*S, with Products.Map
	Score       float64   // with Products.Map
}

// Outcome is a trajectory's result: what `diad predict` computes for the
// same image, sampler and seed.
type Outcome struct {
	Score float64
	Map   []float32 // S*S smoothed anomaly map
	Recon []float32 // 3*S*S reconstruction, ImageNet-normalised
}

// TrajectorySpec is the reconstruction a trajectory shows: an image file,
// the sampler and the image's noise seed, and whether the SG network steers
// the denoiser.
type TrajectorySpec struct {
	Path string
	// Category is the image's ("" when not known: an upload); a scorer
	// with a patch memory compares the image with its category's patches.
	Category string
	Sampler  shared.SamplerConfig
	Seed     uint64
	// Unguided switches the SG network off (model.WithoutGuidance), to show
	// what it adds.
	Unguided bool
}

// groups is the spec's image's category as scoring takes it.
func (s TrajectorySpec) groups() []string { return []string{s.Category} }

// Trajectory reconstructs spec's image with its sampler and noise seed,
// calls emit after every step with what want asks for, and returns the
// final map and score. The compute lane is held for one step at a time and
// released before emit, so a long trajectory lets others' steps in and
// emit may encode at leisure.
func (e *Engine) Trajectory(ctx context.Context, spec TrajectorySpec, want Products, emit func(StepFrame) error) (out Outcome, err error) {
	path := spec.Path
	size := e.ImageSize()
	it, err := datasets.LoadItem(datasets.Sample{Path: path}, size)
	if err != nil {
		return Outcome{}, err
	}
	err = torchrt.Do(func() error {
		m, sc := e.det.Model, e.det.Scorer
		x := torchrt.ImageBatch(it.Image, 1, size, m.Device())
		defer x.MustDrop()
		hook := func(st diffusion.Step) error {
			f := StepFrame{Index: st.Index, Total: st.Total, T: st.T}
			shape := st.Zt.MustSize()
			f.LatentShape = [3]int{int(shape[1]), int(shape[2]), int(shape[3])}
			if err := e.stepProducts(x, spec.groups(), st, want, &f); err != nil {
				return err
			}
			return emit(f) // outside the lane: the caller may encode at leisure
		}
		opts := []model.ReconstructOption{model.PerStepLane()}
		if spec.Unguided {
			opts = append(opts, model.WithoutGuidance())
		}
		rec, err := m.Reconstruct(ctx, x, spec.Sampler, diffusion.NewNoise(spec.Seed), hook, opts...)
		if err != nil {
			return err
		}
		defer rec.Free()
		unlock := torchrt.LockCompute()
		defer unlock()
		res, err := sc.ScoreGroups(x, rec.Image, spec.groups(), false)
		if err != nil {
			return err
		}
		defer res.Free()
		out = Outcome{Score: res.Scores[0], Map: torchrt.Float32s(res.Map), Recon: torchrt.Float32s(rec.Image)}
		return nil
	})
	if err != nil {
		return Outcome{}, fmt.Errorf("trajectory %s: %w", path, err)
	}
	return out, nil
}

// stepProducts fills f with what want asks of one step, holding the compute
// lane meanwhile.
func (e *Engine) stepProducts(x *ts.Tensor, groups []string, st diffusion.Step, want Products, f *StepFrame) error {
	defer torchrt.LockCompute()()
	if want.Latents {
		f.Zt, f.X0 = torchrt.Float32s(st.Zt), torchrt.Float32s(st.X0)
	}
	if !want.Image && !want.Map {
		return nil
	}
	dec := e.det.PredictedImage(st)
	defer dec.MustDrop()
	if want.Image {
		f.Image = torchrt.Float32s(dec)
	}
	if want.Map {
		res, err := e.det.Scorer.ScoreGroups(x, dec, groups, false)
		if err != nil {
			return err
		}
		defer res.Free()
		f.Map, f.Score = torchrt.Float32s(res.Map), res.Scores[0]
	}
	return nil
}
