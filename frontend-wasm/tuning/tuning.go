// Package tuning is the threshold-tuning model of the browser client: the
// image scores of a run split by ground truth, a histogram of each class, the
// confusion matrix and rates at a threshold, ROC and PR curves with the
// operating point, and the presets max F1, FPR <= x and FNR <= x. The
// numbers come from backend/metrics (pure Go), the same code `diad test`
// uses, so the browser and the CLI agree.
package tuning

import (
	"errors"
	"fmt"
	"math"

	"github.com/diad-project/diad/backend/metrics"
	"github.com/diad-project/diad/shared"
)

// Policy names, as the server stores them with a run's threshold.
const (
	Manual = "manual"
	MaxF1  = "max-f1"
)

// FPRPolicy and FNRPolicy name the rate presets, e.g. "fpr<=0.05".
func FPRPolicy(x float64) string { return fmt.Sprintf("fpr<=%g", x) }
func FNRPolicy(x float64) string { return fmt.Sprintf("fnr<=%g", x) }

// Model holds a run's scores and the threshold being tuned.
type Model struct {
	curve     *metrics.Curve
	normal    []float64
	anomalous []float64
	Lo, Hi    float64 // score axis range shown (covers every score)
	Threshold float64
	Policy    string
	// AUROC and AP summarise the ROC and PR curves over all the run's
	// images pooled (NaN with one class only): the areas the charts show,
	// not the per-category mean of the run's metrics table.
	AUROC, AP float64
}

// ErrNoScores is returned for a run without images.
var ErrNoScores = errors.New("tuning: the run has no scored images")

// New builds the model of a run's images at its current threshold.
func New(images []shared.ImageInfo, threshold float64, policy string) (*Model, error) {
	if len(images) == 0 {
		return nil, ErrNoScores
	}
	scores := make([]float32, len(images))
	labels := make([]bool, len(images))
	m := &Model{Lo: math.Inf(1), Hi: math.Inf(-1), Threshold: threshold, Policy: policy}
	for i, im := range images {
		scores[i], labels[i] = float32(im.Score), im.GroundTruth == 1
		if labels[i] {
			m.anomalous = append(m.anomalous, im.Score)
		} else {
			m.normal = append(m.normal, im.Score)
		}
		m.Lo, m.Hi = math.Min(m.Lo, im.Score), math.Max(m.Hi, im.Score)
	}
	c, err := metrics.NewCurve(scores, labels)
	if err != nil {
		return nil, fmt.Errorf("tuning: %w", err)
	}
	m.curve = c
	m.AUROC, m.AP = math.NaN(), math.NaN()
	if b, err := metrics.BinaryMetrics(scores, labels); err == nil {
		m.AUROC, m.AP = b.AUROC, b.AP
	}
	// A margin so the extreme scores are not on the edge, and the
	// threshold always on the axis.
	m.Lo, m.Hi = math.Min(m.Lo, threshold), math.Max(m.Hi, threshold)
	pad := 0.05 * (m.Hi - m.Lo)
	if pad == 0 {
		pad = math.Max(math.Abs(m.Hi)*0.05, 1e-6)
	}
	m.Lo, m.Hi = m.Lo-pad, m.Hi+pad
	return m, nil
}

// Counts are the numbers of normal and anomalous images.
func (m *Model) Counts() (normal, anomalous int) { return len(m.normal), len(m.anomalous) }

// Confusion is the outcome at the current threshold.
func (m *Model) Confusion() metrics.Confusion { return m.curve.At(m.Threshold) }

// Fraction is where a score lies on the axis, 0 at Lo and 1 at Hi.
func (m *Model) Fraction(score float64) float64 { return (score - m.Lo) / (m.Hi - m.Lo) }

// ScoreAt is the score at an axis fraction (clamped to the axis).
func (m *Model) ScoreAt(frac float64) float64 {
	return m.Lo + math.Min(math.Max(frac, 0), 1)*(m.Hi-m.Lo)
}

// Drag sets a manual threshold from an axis fraction (a mouse position).
func (m *Model) Drag(frac float64) {
	m.Threshold, m.Policy = m.ScoreAt(frac), Manual
}

// Histogram bins both classes over the axis into n bins.
func (m *Model) Histogram(n int) (normal, anomalous []int) {
	normal, anomalous = make([]int, n), make([]int, n)
	bin := func(s float64) int { return min(max(int(m.Fraction(s)*float64(n)), 0), n-1) }
	for _, s := range m.normal {
		normal[bin(s)]++
	}
	for _, s := range m.anomalous {
		anomalous[bin(s)]++
	}
	return normal, anomalous
}

// Apply sets the threshold by a preset: MaxF1, FPRPolicy(x) with x = rate,
// or FNRPolicy(x). A preset that would flag nothing (FPR below every
// achievable rate) puts the threshold just above the highest score, so it
// stays a finite number the server can store.
func (m *Model) Apply(preset string, rate float64) error {
	var k metrics.Confusion
	var err error
	switch preset {
	case MaxF1:
		k, err = m.curve.AtMaxF1()
	case "fpr":
		k, err = m.curve.AtMaxFPR(rate)
		preset = FPRPolicy(rate)
	case "fnr":
		k, err = m.curve.AtMaxFNR(rate)
		preset = FNRPolicy(rate)
	default:
		return fmt.Errorf("tuning: unknown preset %q (max-f1, fpr, fnr)", preset)
	}
	if err != nil {
		return fmt.Errorf("tuning: %s: %w", preset, err)
	}
	th := k.Threshold
	if math.IsInf(th, 1) {
		top := math.Max(maxOf(m.normal), maxOf(m.anomalous))
		th = math.Nextafter(float64(float32(top)), math.Inf(1))
	}
	m.Threshold, m.Policy = th, preset
	return nil
}

func maxOf(v []float64) float64 {
	out := math.Inf(-1)
	for _, x := range v {
		out = math.Max(out, x)
	}
	return out
}

// ROC and PR are the curves (at most n points) with the operating point of
// the current threshold.
func (m *Model) ROC(n int) (curve []metrics.Point, at metrics.Point) {
	k := m.Confusion()
	return m.curve.ROC(n), metrics.Point{X: k.FPR, Y: 1 - k.FNR, Threshold: m.Threshold}
}

// PR is the precision-recall curve and the operating point.
func (m *Model) PR(n int) (curve []metrics.Point, at metrics.Point) {
	k := m.Confusion()
	return m.curve.PR(n), metrics.Point{X: k.Recall, Y: k.Precision, Threshold: m.Threshold}
}
