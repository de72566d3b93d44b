package evaluate

import (
	"fmt"
	"strings"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/features"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/scoring"
	"github.com/diad-project/diad/backend/torchrt"
)

// ResolveScorer decides which anomaly map a model is scored with. A requested
// kind wins, but a checkpoint calibrated for one scorer refuses a combination
// with a term it has no scale for (the ResNet map, which needs no
// calibration, is always allowed). Without a
// request: the paper's ResNet map whenever feature weights are given, else the
// scorer the checkpoint was calibrated for, else the ResNet map with random
// weights (as before calibrated scorers existed; the run says so).
func ResolveScorer(requested string, m model.Config, fc features.Config, checkpointPath string) (string, error) {
	if requested != "" {
		kind, err := scoring.CanonicalKind(requested)
		if err != nil {
			return "", err
		}
		if m.Scorer.Kind != "" && kind != m.Scorer.Kind {
			// Another combination works if every term of it was calibrated.
			terms, err := scoring.ParseKind(kind)
			if err != nil {
				return "", err
			}
			for _, t := range terms {
				if _, ok := m.Scorer.Scales[t]; !ok && t != scoring.KindResNet {
					return "", fmt.Errorf("evaluate: checkpoint %s (preset %s) was calibrated for scorer %q, not the requested %q (no scale for %s)", checkpointPath, m.Preset, m.Scorer.Kind, kind, t)
				}
			}
		}
		return kind, nil
	}
	if fc.Weights != "" || m.Scorer.Kind == "" {
		return scoring.KindResNet, nil
	}
	return m.Scorer.Kind, nil
}

// NewScorer builds a scorer of the given kind for model m: the ImageNet
// ResNet (built here from fc; returned so the caller frees it), the
// autoencoder's encoder features, pixel and SSIM distances. Term scales come
// from the model's calibration (1 for terms it has no scale for).
func NewScorer(m *model.DiAD, kind string, fc features.Config, sc scoring.Config) (*scoring.Scorer, *features.Extractor, error) {
	names, err := scoring.ParseKind(kind)
	if err != nil {
		return nil, nil, err
	}
	canonical := strings.Join(names, "+") // ParseKind sorts and dedupes
	if sc == (scoring.Config{}) {
		sc = scoring.ReferenceConfig.ForImageSize(m.Config.ImageSize)
	}
	if canonical == scoring.KindResNet {
		ext, err := features.New(fc, m.Device())
		if err != nil {
			return nil, nil, err
		}
		s, err := scoring.New(sc, ext)
		if err != nil {
			ext.Free()
			return nil, nil, err
		}
		return s, ext, nil
	}
	var ext *features.Extractor
	// fail frees the extractor a term before the failing one made.
	fail := func(err error) (*scoring.Scorer, *features.Extractor, error) {
		if ext != nil {
			ext.Free()
		}
		return nil, nil, err
	}
	var terms []scoring.Term
	var scales []float64
	for _, n := range names {
		switch n {
		case scoring.KindResNet:
			if ext, err = features.New(fc, m.Device()); err != nil {
				return nil, nil, err
			}
			terms = append(terms, scoring.FeatureTerm{Label: n, Forward: ext.Forward, Layers: len(fc.Layers)})
		case scoring.KindAE:
			terms = append(terms, scoring.FeatureTerm{Label: n, Forward: func(x *ts.Tensor) []*ts.Tensor {
				var out []*ts.Tensor
				torchrt.NoGrad(func() { out = m.AE.Features(x) })
				return out
			}, Layers: len(m.Config.Autoencoder.ChMult)})
		case scoring.KindPixel:
			terms = append(terms, scoring.PixelTerm{})
		case scoring.KindSSIM:
			terms = append(terms, scoring.SSIMTerm{})
		case scoring.KindSeg:
			if m.Head == nil {
				return fail(fmt.Errorf("evaluate: scorer %q needs the model's anomaly head, and this %s model has none (train one: diad train --base demo-head)", kind, m.Config.Preset))
			}
			terms = append(terms, scoring.MapTerm{Label: n, F: m.Head.Map})
		case scoring.KindPatch:
			if m.Patch == nil || !m.Patch.Built() {
				return fail(fmt.Errorf("evaluate: scorer %q needs the model's patch memory, and this %s model has none (build one: diad train --recalibrate with a config that has patch_memory)", kind, m.Config.Preset))
			}
			terms = append(terms, scoring.GroupMapTerm{Label: n, F: m.Patch.MapGroups})
		}
		scale := 1.0
		if v, ok := m.Config.Scorer.Scales[n]; ok && v > 0 {
			scale = v
		}
		scales = append(scales, scale)
	}
	s, err := scoring.NewTerms(sc, canonical, terms, scales)
	if err != nil {
		return fail(err)
	}
	return s, ext, nil
}
