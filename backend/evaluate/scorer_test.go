package evaluate

import (
	"math"
	"strings"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/features"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/patchmemory"
	"github.com/diad-project/diad/backend/scoring"
	"github.com/diad-project/diad/backend/torchrt"
)

func TestResolveScorer(t *testing.T) {
	calibrated := model.DemoConfig()
	calibrated.Scorer = model.ScorerConfig{Kind: "ae+ssim", Scales: map[string]float64{"ae": 0.5, "ssim": 0.2}}
	plain := model.TinyConfig()
	weights := features.Config{Arch: "resnet50", Weights: "w.pth", Layers: []int{1, 2, 3}}
	random := features.Config{Arch: "resnet50", Layers: []int{1, 2, 3}}
	for _, c := range []struct {
		name      string
		requested string
		m         model.Config
		fc        features.Config
		want, err string
	}{
		{"weights give the paper's map", "", calibrated, weights, "resnet", ""},
		{"no weights: the calibrated scorer", "", calibrated, random, "ae+ssim", ""},
		{"no weights, nothing calibrated: random resnet", "", plain, random, "resnet", ""},
		{"request in another order", "ssim+ae", calibrated, random, "ae+ssim", ""},
		{"resnet is always allowed", "resnet", calibrated, random, "resnet", ""},
		{"uncalibrated model takes any", "pixel", plain, random, "pixel", ""},
		{"another calibrated combination", "ssim", calibrated, random, "ssim", ""},
		{"an uncalibrated term is refused", "ae+pixel", calibrated, random, "", `calibrated for scorer "ae+ssim", not the requested "ae+pixel" (no scale for pixel)`},
		{"unknown term", "ae+x", plain, random, "", `unknown term "x"`},
	} {
		got, err := ResolveScorer(c.requested, c.m, c.fc, "ckpt.safetensors")
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want %q", c.name, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%s: %q, %v; want %q", c.name, got, err, c.want)
		}
	}
}

// The patch scorer needs a built memory: a model without one, or with an
// empty one, is refused with a message; a built one scores finite maps.
func TestPatchScorerNeedsABuiltMemory(t *testing.T) {
	m, err := model.NewPreset("tiny", gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	if _, _, err := NewScorer(m, "patch", features.ReferenceConfig, scoring.Config{}); err == nil || !strings.Contains(err.Error(), "patch memory") {
		t.Fatalf("no memory: %v", err)
	}
	mem := patchmemory.Config{Stride: 2, Scales: []int64{1, 2}, Patch: 3, Dims: 8, Size: 200, QueryChunk: 64, BankChunk: 64}
	if err := m.AddPatchMemory(mem); err != nil {
		t.Fatal(err)
	}
	if _, _, err := NewScorer(m, "patch+pixel", features.ReferenceConfig, scoring.Config{}); err == nil || !strings.Contains(err.Error(), "patch memory") {
		t.Fatalf("empty memory: %v", err)
	}
	side := int64(m.Config.ImageSize)
	var scores []float64
	err = torchrt.Do(func() error {
		x := ts.MustRand([]int64{2, 3, side, side}, gotch.Float, gotch.CPU)
		defer x.MustDrop()
		if err := m.Patch.Build(func(yield func(patchmemory.Batch) error) error { return yield(patchmemory.Batch{Images: x}) }, 2, 1); err != nil {
			return err
		}
		sc, ext, err := NewScorer(m, "patch+pixel", features.ReferenceConfig, scoring.Config{})
		if err != nil {
			return err
		}
		if ext != nil {
			t.Error("patch+pixel made a ResNet")
		}
		y := ts.MustRand([]int64{1, 3, side, side}, gotch.Float, gotch.CPU)
		defer y.MustDrop()
		res, err := sc.Score(y, y, false)
		if err != nil {
			return err
		}
		defer res.Free()
		scores = res.Scores
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(scores) != 1 || math.IsNaN(scores[0]) || math.IsInf(scores[0], 0) || scores[0] <= 0 {
		t.Fatalf("scores %v: want one finite positive score (another noise image is not in the memory)", scores)
	}
}
