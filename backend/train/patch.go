package train

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/diad-project/diad/backend/patchmemory"
	"github.com/diad-project/diad/backend/scoring"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/shared"
)

// buildPatchMemory fills the model's patch memory from the training images
// (not the held-out ones, which the calibration then scores with it).
func (t *trainer) buildPatchMemory(ctx context.Context, samples []datasets.Sample) error {
	if t.m.Patch == nil {
		return nil
	}
	start := time.Now()
	size := t.m.Config.ImageSize
	ld, err := datasets.NewLoader(samples, datasets.LoaderConfig{Size: size, BatchSize: t.cfg.BatchSize, Workers: t.cfg.Data.Workers, Seed: t.cfg.Seed})
	if err != nil {
		return fmt.Errorf("train: patch memory: %w", err)
	}
	t.emit(Event{Kind: shared.EventStage, Message: fmt.Sprintf("patch memory: %d patches from %d training images", t.m.Patch.Config().Size, len(samples))})
	batches := func(yield func(patchmemory.Batch) error) error {
		for r := range ld.Epoch(ctx, 0, 0) {
			if r.Err != nil {
				return r.Err
			}
			groups := make([]string, len(r.Batch.Items))
			for i, it := range r.Batch.Items {
				groups[i] = it.Sample.Category
			}
			x := toTensor(r.Batch, size, t.m.Device())
			err := yield(patchmemory.Batch{Images: x, Groups: groups})
			x.MustDrop()
			if err != nil {
				return err
			}
		}
		return ctx.Err()
	}
	unlock := torchrt.LockCompute()
	err = t.m.Patch.Build(batches, len(samples), t.cfg.Seed)
	unlock()
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	t.m.Config.PatchMemory = t.m.Patch.Config() // with the groups the build chose
	t.log.Info("patch memory", "groups", len(t.m.Patch.Config().Groups), "images", len(samples), "size", t.m.Patch.Config().Size, "seconds", time.Since(start).Seconds())
	return nil
}

// patchKinds reports whether a scorer kind uses the patch memory (false for
// a kind that does not parse, which Validate reports on its own).
func patchKinds(kind string) bool {
	terms, err := scoring.ParseKind(kind)
	return err == nil && slices.Contains(terms, scoring.KindPatch)
}
