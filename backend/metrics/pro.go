package metrics

import (
	"errors"
	"fmt"
	"math"
)

// Map is one image's anomaly map with its ground-truth mask, row-major.
type Map struct {
	Width, Height int
	Scores        []float32 // len Width*Height
	Mask          []bool    // true = anomalous pixel; len Width*Height
}

func (m Map) check() error {
	if m.Width <= 0 || m.Height <= 0 || len(m.Scores) != m.Width*m.Height || len(m.Mask) != len(m.Scores) {
		return fmt.Errorf("metrics: map %dx%d has %d scores and %d mask pixels", m.Width, m.Height, len(m.Scores), len(m.Mask))
	}
	return nil
}

// PROConfig is how the PRO curve is sampled and integrated; the reference
// (compute_pro in eval_helper.py) uses 200 thresholds and FPR below 0.3.
type PROConfig struct {
	Thresholds int     `yaml:"thresholds"`
	MaxFPR     float64 `yaml:"max_fpr"`
}

// ReferencePRO is compute_pro's setting.
var ReferencePRO = PROConfig{Thresholds: 200, MaxFPR: 0.3}

// ErrNoRegions is returned by PRO when no mask has an anomalous pixel.
var ErrNoRegions = errors.New("metrics: PRO needs at least one anomalous region")

// PROCurve is the sampled per-region-overlap curve.
type PROCurve struct {
	Thresholds []float64 `json:"thresholds"` // ascending
	FPR        []float64 `json:"fpr"`
	PRO        []float64 `json:"pro"`
	Regions    int       `json:"regions"`
}

// proThresholds reproduces np.arange(min, max, (max-min)/n).
func proThresholds(lo, hi float64, n int) ([]float64, error) {
	if !(hi > lo) {
		return nil, fmt.Errorf("metrics: PRO undefined for constant anomaly maps (all scores %g)", lo)
	}
	delta := (hi - lo) / float64(n)
	count := int(math.Ceil((hi - lo) / delta))
	th := make([]float64, count)
	for i := range th {
		th[i] = lo + float64(i)*delta
	}
	return th, nil
}

// countBelow returns how many thresholds are strictly below s, i.e. at how many
// thresholds the pixel is predicted anomalous (reference: amap > th). The guess
// from the uniform spacing is corrected against the actual threshold values.
func countBelow(th []float64, lo, delta float64, s float64) int {
	g := int(math.Ceil((s - lo) / delta))
	g = min(max(g, 0), len(th))
	for g > 0 && th[g-1] >= s {
		g--
	}
	for g < len(th) && th[g] < s {
		g++
	}
	return g
}

// ComputePROCurve samples the PRO curve of a set of maps: for each threshold,
// the mean over all 8-connected ground-truth regions of the fraction of the
// region above the threshold, and the false positive rate over all normal pixels.
func ComputePROCurve(maps []Map, cfg PROConfig) (PROCurve, error) {
	if cfg.Thresholds <= 0 {
		return PROCurve{}, fmt.Errorf("metrics: PRO needs a positive threshold count, got %d", cfg.Thresholds)
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for i, m := range maps {
		if err := m.check(); err != nil {
			return PROCurve{}, fmt.Errorf("map %d: %w", i, err)
		}
		for _, s := range m.Scores {
			if s != s {
				return PROCurve{}, fmt.Errorf("map %d: %w", i, ErrNaN)
			}
			lo = math.Min(lo, float64(s))
			hi = math.Max(hi, float64(s))
		}
	}
	if len(maps) == 0 {
		return PROCurve{}, errors.New("metrics: PRO of no maps")
	}
	th, err := proThresholds(lo, hi, cfg.Thresholds)
	if err != nil {
		return PROCurve{}, err
	}
	delta := (hi - lo) / float64(cfg.Thresholds)
	n := len(th)
	negAbove := make([]int64, n+1) // negAbove[c]: normal pixels above exactly c thresholds
	proSum := make([]float64, n)
	regionHist := make([]int, n+1)
	var negatives int64
	regions := 0
	var labels []int32
	for _, m := range maps {
		if cap(labels) < len(m.Mask) {
			labels = make([]int32, len(m.Mask))
		}
		labels = labels[:len(m.Mask)]
		nr, areas := labelRegions(m.Mask, m.Width, m.Height, labels)
		// counts[c] per region, gathered region by region from one scan.
		perRegion := make([][]int, nr+1)
		for p, s := range m.Scores {
			c := countBelow(th, lo, delta, float64(s))
			if l := labels[p]; l != 0 {
				if perRegion[l] == nil {
					perRegion[l] = make([]int, n+1)
				}
				perRegion[l][c]++
			} else {
				negAbove[c]++
				negatives++
			}
		}
		for r := 1; r <= nr; r++ {
			copy(regionHist, perRegion[r])
			// tp at threshold i = pixels above more than i thresholds.
			tp := 0
			for i := n - 1; i >= 0; i-- {
				tp += regionHist[i+1]
				proSum[i] += float64(tp) / float64(areas[r])
			}
		}
		regions += nr
	}
	if regions == 0 {
		return PROCurve{}, ErrNoRegions
	}
	if negatives == 0 {
		return PROCurve{}, fmt.Errorf("%w: PRO needs normal pixels for its FPR", ErrOneClass)
	}
	curve := PROCurve{Thresholds: th, FPR: make([]float64, n), PRO: make([]float64, n), Regions: regions}
	var fp int64
	for i := n - 1; i >= 0; i-- {
		fp += negAbove[i+1]
		curve.FPR[i] = float64(fp) / float64(negatives)
		curve.PRO[i] = proSum[i] / float64(regions)
	}
	return curve, nil
}

// AUPRO integrates a PRO curve as the reference does: keep points with FPR
// below cfg.MaxFPR, divide FPR by the largest kept FPR, trapezoid rule.
func (c PROCurve) AUPRO(maxFPR float64) (float64, error) {
	fmax := 0.0
	kept := 0
	for _, f := range c.FPR {
		if f < maxFPR {
			kept++
			fmax = math.Max(fmax, f)
		}
	}
	if kept < 2 || fmax == 0 {
		return math.NaN(), fmt.Errorf("metrics: AU-PRO undefined: %d curve points below FPR %g (largest %g)", kept, maxFPR, fmax)
	}
	area := 0.0
	prev := -1
	for i, f := range c.FPR {
		if f >= maxFPR {
			continue
		}
		if prev >= 0 {
			area += (c.FPR[prev] - f) / fmax * (c.PRO[prev] + c.PRO[i]) / 2
		}
		prev = i
	}
	return math.Abs(area), nil
}

// PRO computes the AU-PRO of a set of maps with the given configuration.
func PRO(maps []Map, cfg PROConfig) (float64, error) {
	c, err := ComputePROCurve(maps, cfg)
	if err != nil {
		return math.NaN(), err
	}
	return c.AUPRO(cfg.MaxFPR)
}
