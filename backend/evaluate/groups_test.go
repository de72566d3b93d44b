package evaluate

import (
	"context"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/features"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/patchmemory"
	"github.com/diad-project/diad/backend/scoring"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
)

// The scoring loop hands each image's category to the patch memory: the
// same grey image scores low as a grey one and high as a noise one.
func TestScoreEachComparesEachImageWithItsCategory(t *testing.T) {
	m, err := model.NewPreset("tiny", gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	mem := patchmemory.Config{Stride: 2, Scales: []int64{1, 2}, Patch: 3, Dims: 8, Size: 200, QueryChunk: 64, BankChunk: 64}
	if err := m.AddPatchMemory(mem); err != nil {
		t.Fatal(err)
	}
	side := int64(m.Config.ImageSize)
	n := int(3 * side * side)
	grey := make([]float32, n) // ImageNet-normalised 0: a plain grey
	err = torchrt.Do(func() error {
		g := ts.MustZeros([]int64{2, 3, side, side}, gotch.Float, gotch.CPU)
		defer g.MustDrop()
		noise := ts.MustRandn([]int64{2, 3, side, side}, gotch.Float, gotch.CPU)
		defer noise.MustDrop()
		return m.Patch.Build(func(yield func(patchmemory.Batch) error) error {
			if err := yield(patchmemory.Batch{Images: g, Groups: []string{"grey", "grey"}}); err != nil {
				return err
			}
			return yield(patchmemory.Batch{Images: noise, Groups: []string{"noise", "noise"}})
		}, 4, 1)
	})
	if err != nil {
		t.Fatal(err)
	}
	sc, _, err := NewScorer(m, "patch", features.ReferenceConfig, scoring.Config{})
	if err != nil {
		t.Fatal(err)
	}
	d := &Detector{Model: m, Scorer: sc, Sampler: m.Config.Sampler}
	items := []datasets.Item{
		{Sample: datasets.Sample{Path: "a.png", Category: "grey"}, Image: grey},
		{Sample: datasets.Sample{Path: "b.png", Category: "noise"}, Image: grey},
	}
	batches := func(yield func(Batch, error) bool) { yield(Batch{Items: items, IDs: []int64{0, 1}}, nil) }
	var scores []float64
	err = d.ScoreEach(context.Background(), batches, ScoreOptions{Seed: 1}, func(b ScoredBatch) error {
		for _, s := range b.Scored {
			scores = append(scores, s.Score)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(scores) != 2 || !(scores[1] > 10*scores[0]) {
		t.Fatalf("scores %v: want a grey image as a noise one far above the same image as a grey one", scores)
	}
}
