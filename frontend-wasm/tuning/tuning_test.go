package tuning

import (
	"math"
	"testing"

	"github.com/diad-project/diad/shared"
)

// run: normals 0.1 0.2 0.3 0.6, anomalies 0.5 0.7 0.8.
func run() []shared.ImageInfo {
	var out []shared.ImageInfo
	for _, s := range []float64{0.1, 0.2, 0.3, 0.6} {
		out = append(out, shared.ImageInfo{Score: s})
	}
	for _, s := range []float64{0.5, 0.7, 0.8} {
		out = append(out, shared.ImageInfo{Score: s, GroundTruth: 1})
	}
	return out
}

func TestConfusionFollowsTheThreshold(t *testing.T) {
	m, err := New(run(), 0.55, Manual)
	if err != nil {
		t.Fatal(err)
	}
	k := m.Confusion()
	if k.TP != 2 || k.FP != 1 || k.FN != 1 || k.TN != 3 {
		t.Fatalf("at 0.55: %+v", k)
	}
	// Dragging to the far left flags everything.
	m.Drag(0)
	if k := m.Confusion(); k.TP != 3 || k.FP != 4 || m.Policy != Manual {
		t.Fatalf("at left edge %v: %+v", m.Threshold, k)
	}
	m.Drag(m.Fraction(0.65))
	if k := m.Confusion(); k.TP != 2 || k.FP != 0 || math.Abs(k.Precision-1) > 1e-12 {
		t.Fatalf("at 0.65: %+v", k)
	}
	roc, at := m.ROC(100)
	if len(roc) < 2 || at.X != 0 || math.Abs(at.Y-2.0/3) > 1e-12 {
		t.Fatalf("ROC operating point %+v", at)
	}
}

func TestPresets(t *testing.T) {
	m := newModel(t, run(), 0.5, Manual)
	if err := m.Apply(MaxF1, 0); err != nil {
		t.Fatal(err)
	}
	// Best F1: threshold 0.5 gives TP 3 FP 1 -> F1 6/7.
	if k := m.Confusion(); math.Abs(k.F1-6.0/7) > 1e-9 || m.Policy != MaxF1 {
		t.Fatalf("max F1 %+v policy %s", k, m.Policy)
	}
	if err := m.Apply("fpr", 0); err != nil {
		t.Fatal(err)
	}
	if k := m.Confusion(); k.FP != 0 || k.TP != 2 || m.Policy != "fpr<=0" {
		t.Fatalf("FPR<=0: %+v %s", k, m.Policy)
	}
	if err := m.Apply("fnr", 0); err != nil {
		t.Fatal(err)
	}
	if k := m.Confusion(); k.FN != 0 || k.FP != 1 {
		t.Fatalf("FNR<=0: %+v", k)
	}
	// Every normal above every anomaly: FPR<=0 must flag nothing, with a
	// finite threshold.
	inv := []shared.ImageInfo{{Score: 0.9}, {Score: 0.1, GroundTruth: 1}}
	m2 := newModel(t, inv, 0.5, Manual)
	if err := m2.Apply("fpr", 0); err != nil {
		t.Fatal(err)
	}
	if k := m2.Confusion(); math.IsInf(m2.Threshold, 0) || k.TP+k.FP != 0 {
		t.Fatalf("flag-nothing preset: threshold %v %+v", m2.Threshold, k)
	}
	if err := m.Apply("nope", 0); err == nil {
		t.Fatal("unknown preset accepted")
	}
}

func TestHistogramCoversEveryImage(t *testing.T) {
	m := newModel(t, run(), 2, Manual) // threshold outside the scores widens the axis
	if m.Fraction(2) > 1 || m.Fraction(0.1) < 0 {
		t.Fatalf("axis %v..%v does not cover threshold and scores", m.Lo, m.Hi)
	}
	n, a := m.Histogram(10)
	sum := func(v []int) int {
		s := 0
		for _, x := range v {
			s += x
		}
		return s
	}
	if sum(n) != 4 || sum(a) != 3 {
		t.Fatalf("histogram %v %v", n, a)
	}
	if _, err := New(nil, 0, Manual); err == nil {
		t.Fatal("empty run accepted")
	}
}

// The curves' areas, by hand: 11 of the 12 anomalous-normal pairs are
// ordered right (0.5 < 0.6); the average precision at the three anomalies
// (ranks 1, 2, 4) is (1 + 1 + 3/4) / 3. One class alone has neither.
func TestAreasUnderTheCurves(t *testing.T) {
	m, err := New(run(), 0.55, Manual)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(m.AUROC-11.0/12) > 1e-12 || math.Abs(m.AP-2.75/3) > 1e-12 {
		t.Fatalf("AUROC %v, AP %v", m.AUROC, m.AP)
	}
	one, err := New(run()[:4], 0.5, Manual)
	if err != nil {
		t.Fatal(err)
	}
	if !math.IsNaN(one.AUROC) || !math.IsNaN(one.AP) {
		t.Fatalf("normal images only: AUROC %v, AP %v", one.AUROC, one.AP)
	}
}

func newModel(t *testing.T, images []shared.ImageInfo, threshold float64, policy string) *Model {
	t.Helper()
	m, err := New(images, threshold, policy)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
