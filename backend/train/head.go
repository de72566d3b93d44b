package train

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/scoring"
	"github.com/diad-project/diad/backend/seghead"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/shared"
)

// trainHead is the stage after the denoiser and the calibration: DiAD
// reconstructs every training image once at the calibrated start level, the
// anomaly head learns on those pairs with synthetic defects (package
// seghead), and the model's scorer becomes the head's map. The other terms'
// calibrated scales stay, so they can still be asked for by name.
func (t *trainer) trainHead(ctx context.Context, samples []datasets.Sample) error {
	if t.m.Head == nil || t.cfg.HeadTraining.Steps == 0 {
		return nil
	}
	start := time.Now()
	size := t.m.Config.ImageSize
	t.emit(Event{Kind: shared.EventStage, Message: fmt.Sprintf("anomaly head: reconstructing %d training images at t = %d", len(samples), t.m.Config.Sampler.StartT)})
	pairs, err := reconstructAll(ctx, t.m, samples, t.cfg.BatchSize, t.cfg.Data.Workers, t.cfg.Seed)
	if err != nil {
		return fmt.Errorf("train: anomaly head: %w", err)
	}
	recon := time.Since(start)
	t.m.SetFreeze(model.FreezeHeadOnly)
	defer t.m.SetFreeze(model.FreezeReference)
	hc := t.cfg.HeadTraining
	hc.Seed = t.cfg.Seed
	t.emit(Event{Kind: shared.EventStage, Message: fmt.Sprintf("anomaly head: %d steps of %d crops of %d px", hc.Steps, hc.BatchSize, hc.Crop)})
	last := 0.0
	began := time.Now()
	steps, err := seghead.Train(ctx, t.m.Head, t.m.Store.Trainable(), pairs, size, t.m.Device(), hc, func(s seghead.Step) {
		last = s.Loss
		rate := float64(s.Step*hc.BatchSize) / time.Since(began).Seconds()
		t.emit(Event{Kind: shared.EventStep, Stage: StageHead, Step: s.Step, TotalSteps: hc.Steps, Loss: s.Loss, ImagesPerSec: rate})
		if s.Step%50 == 0 || s.Step == hc.Steps {
			t.log.Info("step", "stage", StageHead, "step", s.Step, "loss", s.Loss, "images_per_sec", rate)
		}
	})
	if err != nil {
		return fmt.Errorf("train: anomaly head: %w", err)
	}
	scales := map[string]float64{scoring.KindSeg: 1}
	for k, v := range t.m.Config.Scorer.Scales {
		scales[k] = v
	}
	t.m.Config.Scorer = model.ScorerConfig{Kind: scoring.KindSeg, Scales: scales}
	t.log.Info("anomaly head", "steps", steps, "loss", last, "pairs", len(pairs),
		"reconstruct_seconds", recon.Seconds(), "seconds", time.Since(start).Seconds())
	if len(t.cfg.HeadScorerCandidates) > 0 && t.val != nil {
		return t.calibrateWith(ctx, []int{t.m.Config.Sampler.StartT}, "", t.cfg.HeadScorerCandidates)
	}
	return nil
}

// reconstructAll runs DiAD's inference (the model's sampler) on every sample
// once and returns image/reconstruction pairs.
func reconstructAll(ctx context.Context, m *model.DiAD, samples []datasets.Sample, batch, workers int, seed uint64) ([]seghead.Pair, error) {
	size := m.Config.ImageSize
	ld, err := datasets.NewLoader(samples, datasets.LoaderConfig{Size: size, BatchSize: batch, Workers: workers, Seed: seed})
	if err != nil {
		return nil, err
	}
	var pairs []seghead.Pair
	noise := diffusion.NewNoise(seed ^ 0x4ead)
	for r := range ld.Epoch(ctx, 0, 0) {
		if r.Err != nil {
			return nil, r.Err
		}
		n := len(r.Batch.Items)
		err := torchrt.Do(func() error {
			unlock := torchrt.LockCompute()
			defer unlock()
			x := toTensor(r.Batch, size, m.Device())
			defer x.MustDrop()
			rec, err := m.Reconstruct(ctx, x, m.Config.Sampler, noise, nil)
			if err != nil {
				return err
			}
			defer rec.Free()
			flat := torchrt.Float32s(rec.Image)
			per := 3 * size * size
			for i := 0; i < n; i++ {
				pairs = append(pairs, seghead.Pair{Image: r.Batch.Items[i].Image, Recon: flat[i*per : (i+1)*per]})
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return pairs, nil
}

// headKinds reports whether a scorer kind uses the head (false for a kind
// that does not parse, which Validate reports on its own).
func headKinds(kind string) bool {
	terms, err := scoring.ParseKind(kind)
	return err == nil && slices.Contains(terms, scoring.KindSeg)
}
