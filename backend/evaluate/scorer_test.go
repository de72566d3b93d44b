package evaluate

import (
	"strings"
	"testing"

	"github.com/diad-project/diad/backend/features"
	"github.com/diad-project/diad/backend/model"
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
