package metrics

import (
	"fmt"
	"math"
	"sort"
)

// Curve is the full operating curve of a scored item set (for example the image
// scores of a validation split), for choosing and explaining thresholds.
// Convention: an item is predicted anomalous when score >= threshold.
type Curve struct {
	// Distinct scores in descending order, and the cumulative true and false
	// positives when the threshold is that score.
	scores []float32
	tp, fp []int
	P, N   int
}

// Confusion is the outcome of one threshold.
type Confusion struct {
	Threshold float64 `json:"threshold"`
	TP        int     `json:"tp"`
	FP        int     `json:"fp"`
	TN        int     `json:"tn"`
	FN        int     `json:"fn"`
	// Rates are NaN when undefined (e.g. precision with no predicted positive).
	Precision float64 `json:"precision"`
	Recall    float64 `json:"recall"`
	F1        float64 `json:"f1"`
	FPR       float64 `json:"fpr"`
	FNR       float64 `json:"fnr"`
	Accuracy  float64 `json:"accuracy"`
}

// Point is a curve point for plotting (ROC: X=FPR, Y=TPR; PR: X=recall, Y=precision).
type Point struct {
	X         float64 `json:"x"`
	Y         float64 `json:"y"`
	Threshold float64 `json:"threshold"`
}

// NewCurve builds the curve of scores against labels (true = anomalous).
func NewCurve(scores []float32, labels []bool) (*Curve, error) {
	pos, neg, err := splitKeys(scores, labels)
	if err != nil {
		return nil, err
	}
	c := &Curve{P: len(pos), N: len(neg)}
	tpCum, fpCum := 0, 0
	walkDescending(pos, neg, func(k uint32, tp, fp int) {
		tpCum += tp
		fpCum += fp
		c.scores = append(c.scores, keyValue(k))
		c.tp = append(c.tp, tpCum)
		c.fp = append(c.fp, fpCum)
	})
	return c, nil
}

func ratio(a, b int) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}

func (c *Curve) confusion(th float64, tp, fp int) Confusion {
	return RatesOf(Confusion{Threshold: th, TP: tp, FP: fp, FN: c.P - tp, TN: c.N - fp})
}

// RatesOf fills in the rates of a confusion matrix from its counts (e.g.
// of one summed over categories judged by different thresholds).
func RatesOf(k Confusion) Confusion {
	p, n := k.TP+k.FN, k.FP+k.TN
	k.Precision = ratio(k.TP, k.TP+k.FP)
	k.Recall = ratio(k.TP, p)
	k.F1 = ratio(2*k.TP, k.TP+k.FP+p)
	k.FPR = ratio(k.FP, n)
	k.FNR = ratio(k.FN, p)
	k.Accuracy = ratio(k.TP+k.TN, p+n)
	return k
}

// At is the confusion matrix at a manual threshold.
func (c *Curve) At(threshold float64) Confusion {
	// Number of distinct scores >= threshold.
	n := sort.Search(len(c.scores), func(i int) bool { return float64(c.scores[i]) < threshold })
	if n == 0 {
		return c.confusion(threshold, 0, 0)
	}
	return c.confusion(threshold, c.tp[n-1], c.fp[n-1])
}

// AtMaxFPR is the lowest threshold (most detections) whose FPR is <= maxFPR.
// With maxFPR below every achievable FPR > 0 it flags nothing.
func (c *Curve) AtMaxFPR(maxFPR float64) (Confusion, error) {
	if c.N == 0 {
		return Confusion{}, fmt.Errorf("%w: FPR needs normal items", ErrOneClass)
	}
	best := -1
	for i := range c.scores {
		if float64(c.fp[i])/float64(c.N) <= maxFPR {
			best = i
		}
	}
	if best < 0 {
		return c.confusion(math.Inf(1), 0, 0), nil
	}
	return c.confusion(float64(c.scores[best]), c.tp[best], c.fp[best]), nil
}

// AtMaxFNR is the highest threshold (fewest false alarms) whose FNR is <= maxFNR.
func (c *Curve) AtMaxFNR(maxFNR float64) (Confusion, error) {
	if c.P == 0 {
		return Confusion{}, fmt.Errorf("%w: FNR needs anomalous items", ErrOneClass)
	}
	for i := range c.scores {
		if float64(c.P-c.tp[i])/float64(c.P) <= maxFNR {
			return c.confusion(float64(c.scores[i]), c.tp[i], c.fp[i]), nil
		}
	}
	return Confusion{}, fmt.Errorf("metrics: no threshold reaches FNR <= %g", maxFNR) // unreachable: the lowest score gives FNR 0
}

// AtMaxF1 is the threshold with the highest F1 (the highest such threshold on ties).
func (c *Curve) AtMaxF1() (Confusion, error) {
	if c.P == 0 {
		return Confusion{}, fmt.Errorf("%w: F1 needs anomalous items", ErrOneClass)
	}
	best, bestF1 := 0, -1.0
	for i := range c.scores {
		if f := float64(2*c.tp[i]) / float64(c.tp[i]+c.fp[i]+c.P); f > bestF1 {
			best, bestF1 = i, f
		}
	}
	return c.confusion(float64(c.scores[best]), c.tp[best], c.fp[best]), nil
}

// pick returns at most n indices of 0..m-1, evenly spaced, always the first and last.
func pick(m, n int) []int {
	if n <= 1 || m <= n {
		idx := make([]int, m)
		for i := range idx {
			idx[i] = i
		}
		return idx
	}
	idx := make([]int, 0, n)
	for j := 0; j < n; j++ {
		i := int(math.Round(float64(j) * float64(m-1) / float64(n-1)))
		if len(idx) == 0 || idx[len(idx)-1] != i {
			idx = append(idx, i)
		}
	}
	return idx
}

// ROC returns at most maxPoints (FPR, TPR) points from (0,0) to (1,1).
func (c *Curve) ROC(maxPoints int) []Point {
	pts := make([]Point, 0, len(c.scores)+1)
	pts = append(pts, Point{X: 0, Y: 0, Threshold: math.Inf(1)})
	for i, s := range c.scores {
		pts = append(pts, Point{X: ratio(c.fp[i], c.N), Y: ratio(c.tp[i], c.P), Threshold: float64(s)})
	}
	return downsample(pts, maxPoints)
}

// PR returns at most maxPoints (recall, precision) points, highest threshold first.
func (c *Curve) PR(maxPoints int) []Point {
	pts := make([]Point, 0, len(c.scores))
	for i, s := range c.scores {
		pts = append(pts, Point{X: ratio(c.tp[i], c.P), Y: ratio(c.tp[i], c.tp[i]+c.fp[i]), Threshold: float64(s)})
	}
	return downsample(pts, maxPoints)
}

func downsample(pts []Point, n int) []Point {
	idx := pick(len(pts), n)
	if len(idx) == len(pts) {
		return pts
	}
	out := make([]Point, len(idx))
	for j, i := range idx {
		out[j] = pts[i]
	}
	return out
}
