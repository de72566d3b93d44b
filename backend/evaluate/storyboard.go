package evaluate

import (
	"context"
	"fmt"
	"image"
	"path/filepath"

	"github.com/diad-project/diad/backend/storyboard"
	"github.com/diad-project/diad/backend/visual"
	"github.com/diad-project/diad/datasets"
)

// LatentPicture is the step's z_t as an RGB preview (with Products.Latents).
func (f StepFrame) LatentPicture() *image.RGBA {
	return visual.LatentPreview(f.Zt, f.LatentShape[2], f.LatentShape[1])
}

// X0Picture is the step's predicted clean latent as an RGB preview.
func (f StepFrame) X0Picture() *image.RGBA {
	return visual.LatentPreview(f.X0, f.LatentShape[2], f.LatentShape[1])
}

// ImagePicture is the step's predicted image (with Products.Image).
func (f StepFrame) ImagePicture(size int) *image.RGBA { return datasets.Denormalize(f.Image, size) }

// Storyboard runs spec's trajectory with every product and keeps what a
// storyboard draws: the input, and per step z_t, the predicted image and
// its map. Its Scale is left to the caller (a threshold, or the maps'
// range); its title names the image file, the sampler and the guidance.
func (e *Engine) Storyboard(ctx context.Context, spec TrajectorySpec) (storyboard.Trajectory, Outcome, error) {
	size := e.ImageSize()
	it, err := datasets.LoadItem(datasets.Sample{Path: spec.Path}, size)
	if err != nil {
		return storyboard.Trajectory{}, Outcome{}, err
	}
	tr := storyboard.Trajectory{Size: size, Input: datasets.Denormalize(it.Image, size)}
	guidance := "SG network on"
	if spec.Unguided {
		guidance = "SG network off"
	}
	s := spec.Sampler
	tr.Title = fmt.Sprintf("%s: %s from t0 %d in %d steps, %s", filepath.Base(spec.Path), s.KindOrDefault(), s.NoiseLevel(), max(s.Steps, len(s.Timesteps)), guidance)
	if len(s.Timesteps) > 0 {
		tr.Title = fmt.Sprintf("%s: %s at t %v, %s", filepath.Base(spec.Path), s.KindOrDefault(), s.Timesteps, guidance)
	}
	out, err := e.Trajectory(ctx, spec, Products{Latents: true, Image: true, Map: true}, func(f StepFrame) error {
		tr.Steps = append(tr.Steps, storyboard.Step{T: f.T, Latent: f.LatentPicture(), Image: f.ImagePicture(size), Map: f.Map})
		return nil
	})
	if err != nil {
		return storyboard.Trajectory{}, Outcome{}, err
	}
	return tr, out, nil
}
