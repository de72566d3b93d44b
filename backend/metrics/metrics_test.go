package metrics

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
)

const tol = 1e-9

// --- brute-force references, written for clarity rather than speed ---------

func bruteAUROC(scores []float32, labels []bool) float64 {
	var u float64
	var p, n int
	for i := range scores {
		if !labels[i] {
			continue
		}
		p++
		for j := range scores {
			if labels[j] {
				continue
			}
			switch {
			case scores[i] > scores[j]:
				u++
			case scores[i] == scores[j]:
				u += 0.5
			}
		}
	}
	for _, l := range labels {
		if !l {
			n++
		}
	}
	return u / float64(p*n)
}

// bruteSweep tries every distinct score as a threshold (predict score >= t).
func bruteSweep(scores []float32, labels []bool) (ap, f1max float64) {
	th := slices.Clone(scores)
	sort.Slice(th, func(a, b int) bool { return th[a] > th[b] })
	th = slices.Compact(th)
	P := 0
	for _, l := range labels {
		if l {
			P++
		}
	}
	prevRecall := 0.0
	for _, t := range th {
		tp, fp := 0, 0
		for i, s := range scores {
			if s >= t {
				if labels[i] {
					tp++
				} else {
					fp++
				}
			}
		}
		prec := float64(tp) / float64(tp+fp)
		rec := float64(tp) / float64(P)
		ap += (rec - prevRecall) * prec
		prevRecall = rec
		if prec+rec > 0 {
			f1max = math.Max(f1max, 2*prec*rec/(prec+rec))
		}
	}
	return ap, f1max
}

// bruteLabel labels 8-connected regions by flood fill.
func bruteLabel(mask []bool, w, h int) [][]int {
	seen := make([]bool, len(mask))
	var regions [][]int
	for start := range mask {
		if !mask[start] || seen[start] {
			continue
		}
		var region []int
		stack := []int{start}
		seen[start] = true
		for len(stack) > 0 {
			p := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			region = append(region, p)
			x, y := p%w, p/w
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					nx, ny := x+dx, y+dy
					if nx < 0 || ny < 0 || nx >= w || ny >= h {
						continue
					}
					q := ny*w + nx
					if mask[q] && !seen[q] {
						seen[q] = true
						stack = append(stack, q)
					}
				}
			}
		}
		regions = append(regions, region)
	}
	return regions
}

// brutePRO follows compute_pro literally: for each threshold binarise, overlap
// per region, FPR over normal pixels; keep FPR < maxFPR, divide by the max, trapezoid.
func brutePRO(maps []Map, nth int, maxFPR float64) float64 {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, m := range maps {
		for _, s := range m.Scores {
			lo, hi = math.Min(lo, float64(s)), math.Max(hi, float64(s))
		}
	}
	delta := (hi - lo) / float64(nth)
	var fprs, pros []float64
	for i := 0; i < int(math.Ceil((hi-lo)/delta)); i++ {
		th := lo + float64(i)*delta
		var overlaps []float64
		fp, neg := 0, 0
		for _, m := range maps {
			for _, r := range bruteLabel(m.Mask, m.Width, m.Height) {
				tp := 0
				for _, p := range r {
					if float64(m.Scores[p]) > th {
						tp++
					}
				}
				overlaps = append(overlaps, float64(tp)/float64(len(r)))
			}
			for p, l := range m.Mask {
				if !l {
					neg++
					if float64(m.Scores[p]) > th {
						fp++
					}
				}
			}
		}
		sum := 0.0
		for _, o := range overlaps {
			sum += o
		}
		fprs = append(fprs, float64(fp)/float64(neg))
		pros = append(pros, sum/float64(len(overlaps)))
	}
	var xs, ys []float64
	for i := range fprs {
		if fprs[i] < maxFPR {
			xs, ys = append(xs, fprs[i]), append(ys, pros[i])
		}
	}
	fmax := slices.Max(xs)
	area := 0.0
	for i := 1; i < len(xs); i++ {
		area += (xs[i-1] - xs[i]) / fmax * (ys[i-1] + ys[i]) / 2
	}
	return math.Abs(area)
}

// --- helpers ------------------------------------------------------------

// randomScores draws scores from a small set of values so that ties are common.
func randomScores(r *rand.Rand, n, levels int, labels []bool, shift float32) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.IntN(levels)) / float32(levels)
		if labels[i] {
			s[i] += shift * r.Float32()
		}
	}
	return s
}

func randomLabels(r *rand.Rand, n int, p float64) []bool {
	l := make([]bool, n)
	for i := range l {
		l[i] = r.Float64() < p
	}
	l[0], l[n-1] = true, false // both classes
	return l
}

// randomMap makes a map with a few blob defects and scores that are higher on them.
func randomMap(r *rand.Rand, w, h int, levels int) Map {
	m := Map{Width: w, Height: h, Scores: make([]float32, w*h), Mask: make([]bool, w*h)}
	for b := r.IntN(4); b > 0; b-- {
		cx, cy, rad := r.IntN(w), r.IntN(h), 1+r.IntN(3)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				if (x-cx)*(x-cx)+(y-cy)*(y-cy) <= rad*rad {
					m.Mask[y*w+x] = true
				}
			}
		}
	}
	// sprinkle single pixels (diagonal neighbours test 8-connectivity)
	for k := r.IntN(5); k > 0; k-- {
		m.Mask[r.IntN(w*h)] = true
	}
	for i := range m.Scores {
		m.Scores[i] = float32(r.IntN(levels))
		if m.Mask[i] {
			m.Scores[i] += float32(r.IntN(levels))
		}
	}
	return m
}

func near(a, b float64) bool { return math.Abs(a-b) <= tol }

// --- tests --------------------------------------------------------------------

func TestSortKeyOrder(t *testing.T) {
	vals := []float32{float32(math.Inf(-1)), -3.5, -1e-30, 0, 1e-30, 2, float32(math.Inf(1))}
	for i := 1; i < len(vals); i++ {
		if sortKey(vals[i-1]) >= sortKey(vals[i]) {
			t.Fatalf("key(%g) >= key(%g)", vals[i-1], vals[i])
		}
		if keyValue(sortKey(vals[i])) != vals[i] {
			t.Fatalf("keyValue(sortKey(%g)) = %g", vals[i], keyValue(sortKey(vals[i])))
		}
	}
	if sortKey(float32(math.Copysign(0, -1))) != sortKey(0) {
		t.Fatal("-0 and +0 must tie")
	}
}

func TestRadixSortMatchesSort(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 5, 63, 64, 1000, 100000} {
		keys := make([]uint32, n)
		for i := range keys {
			keys[i] = sortKey(float32(r.NormFloat64() * 100))
		}
		want := slices.Clone(keys)
		slices.Sort(want)
		radixSort(keys, make([]uint32, n))
		if !slices.Equal(keys, want) {
			t.Fatalf("n=%d: radix sort differs from sort", n)
		}
	}
}

func TestBinaryMatchesBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for trial := 0; trial < 200; trial++ {
		n := 2 + r.IntN(300)
		labels := randomLabels(r, n, 0.1+0.8*r.Float64())
		scores := randomScores(r, n, 1+r.IntN(20), labels, r.Float32())
		got, err := BinaryMetrics(scores, labels)
		if err != nil {
			t.Fatal(err)
		}
		ap, f1 := bruteSweep(scores, labels)
		if auc := bruteAUROC(scores, labels); !near(got.AUROC, auc) {
			t.Fatalf("trial %d: AUROC %v, brute force %v", trial, got.AUROC, auc)
		}
		if !near(got.AP, ap) || !near(got.F1Max, f1) {
			t.Fatalf("trial %d: AP %v F1 %v, brute force %v %v", trial, got.AP, got.F1Max, ap, f1)
		}
	}
}

func TestBinaryHandComputed(t *testing.T) {
	// sklearn's documentation example: roc_auc 0.75, average_precision 0.8333...
	b, err := BinaryMetrics([]float32{0.1, 0.4, 0.35, 0.8}, []bool{false, false, true, true})
	if err != nil {
		t.Fatal(err)
	}
	if !near(b.AUROC, 0.75) || !near(b.AP, 5.0/6) || !near(b.F1Max, 0.8) {
		t.Fatalf("got %+v, want AUROC .75 AP .8333 F1max .8", b)
	}
	// Ties across classes: pairs (1,1) tie, (1,0) win, (0,1) loss, (0,0) tie -> 0.5.
	// Threshold 1: P=.5 R=.5; threshold 0: P=.5 R=1 -> AP .5, F1max 2/3.
	b, err = BinaryMetrics([]float32{1, 1, 0, 0}, []bool{true, false, true, false})
	if err != nil {
		t.Fatal(err)
	}
	if !near(b.AUROC, 0.5) || !near(b.AP, 0.5) || !near(b.F1Max, 2.0/3) {
		t.Fatalf("tied case: got %+v", b)
	}
}

func TestBinaryDegenerate(t *testing.T) {
	if _, err := BinaryMetrics([]float32{1, 2}, []bool{true, true}); !errors.Is(err, ErrOneClass) {
		t.Fatalf("one class: err = %v", err)
	}
	if _, err := BinaryMetrics([]float32{1, float32(math.NaN())}, []bool{true, false}); !errors.Is(err, ErrNaN) {
		t.Fatalf("NaN: err = %v", err)
	}
	if _, err := BinaryMetrics([]float32{1}, []bool{true, false}); err == nil {
		t.Fatal("length mismatch accepted")
	}
	// Constant scores: chance AUROC, AP = prevalence, F1 = 2P/(2P+N).
	b, err := BinaryMetrics([]float32{3, 3, 3, 3, 3}, []bool{true, false, false, false, true})
	if err != nil {
		t.Fatal(err)
	}
	if !near(b.AUROC, 0.5) || !near(b.AP, 0.4) || !near(b.F1Max, 4.0/7) {
		t.Fatalf("constant scores: %+v", b)
	}
	// Infinite scores are ordered, not errors.
	b, err = BinaryMetrics([]float32{float32(math.Inf(1)), float32(math.Inf(-1))}, []bool{true, false})
	if err != nil || b.AUROC != 1 {
		t.Fatalf("infinite scores: %+v %v", b, err)
	}
}

func TestLabelRegionsMatchesFloodFill(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for trial := 0; trial < 300; trial++ {
		w, h := 1+r.IntN(20), 1+r.IntN(20)
		mask := make([]bool, w*h)
		p := r.Float64()
		for i := range mask {
			mask[i] = r.Float64() < p
		}
		labels := make([]int32, w*h)
		n, areas := labelRegions(mask, w, h, labels)
		want := bruteLabel(mask, w, h)
		if n != len(want) {
			t.Fatalf("trial %d (%dx%d): %d regions, flood fill %d", trial, w, h, n, len(want))
		}
		for _, region := range want {
			l := labels[region[0]]
			for _, q := range region {
				if labels[q] != l {
					t.Fatalf("trial %d: region split", trial)
				}
			}
			if areas[l] != len(region) {
				t.Fatalf("trial %d: area %d, flood fill %d", trial, areas[l], len(region))
			}
		}
	}
}

func TestPROMatchesBruteForce(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for trial := 0; trial < 40; trial++ {
		var maps []Map
		for k := 1 + r.IntN(4); k > 0; k-- {
			maps = append(maps, randomMap(r, 8+r.IntN(12), 8+r.IntN(12), 2+r.IntN(30)))
		}
		maps[0].Mask[0] = true // at least one region
		nth := []int{200, 7, 50}[trial%3]
		got, err := PRO(maps, PROConfig{Thresholds: nth, MaxFPR: 0.3})
		if err != nil {
			t.Fatalf("trial %d: %v", trial, err)
		}
		if want := brutePRO(maps, nth, 0.3); !near(got, want) {
			t.Fatalf("trial %d: PRO %v, brute force %v", trial, got, want)
		}
	}
}

func TestPROHandComputed(t *testing.T) {
	// One 2x2 map: a 1-pixel region scoring 1, normal pixels 0, 0, 0.5.
	// 2 thresholds: 0 and 0.5. th=0: region covered, FPR 1/3; th=0.5: covered, FPR 0.
	// Kept (FPR < 0.5): both; normalised FPR 1 and 0; PRO 1 at both -> area 1.
	m := Map{Width: 2, Height: 2, Scores: []float32{1, 0, 0, 0.5}, Mask: []bool{true, false, false, false}}
	got, err := PRO([]Map{m}, PROConfig{Thresholds: 2, MaxFPR: 0.5})
	if err != nil || !near(got, 1) {
		t.Fatalf("PRO = %v, %v; want 1", got, err)
	}
	c, err := ComputePROCurve([]Map{m}, PROConfig{Thresholds: 2, MaxFPR: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.FPR, []float64{1.0 / 3, 0}) || !slices.Equal(c.PRO, []float64{1, 1}) {
		t.Fatalf("curve %+v", c)
	}
}

func TestPRODegenerate(t *testing.T) {
	clean := Map{Width: 2, Height: 1, Scores: []float32{0, 1}, Mask: []bool{false, false}}
	if _, err := PRO([]Map{clean}, ReferencePRO); !errors.Is(err, ErrNoRegions) {
		t.Fatalf("no regions: %v", err)
	}
	flat := Map{Width: 2, Height: 1, Scores: []float32{1, 1}, Mask: []bool{true, false}}
	if _, err := PRO([]Map{flat}, ReferencePRO); err == nil {
		t.Fatal("constant maps accepted")
	}
	bad := Map{Width: 3, Height: 1, Scores: []float32{1, 1}, Mask: []bool{true, false}}
	if _, err := PRO([]Map{bad}, ReferencePRO); err == nil {
		t.Fatal("malformed map accepted")
	}
	nan := Map{Width: 2, Height: 1, Scores: []float32{float32(math.NaN()), 1}, Mask: []bool{true, false}}
	if _, err := PRO([]Map{nan}, ReferencePRO); !errors.Is(err, ErrNaN) {
		t.Fatalf("NaN: %v", err)
	}
}

func TestPixelMetricsEqualsConcatenation(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	maps := []Map{randomMap(r, 16, 16, 10), randomMap(r, 16, 16, 10)}
	maps[0].Mask[3] = true
	var scores []float32
	var labels []bool
	for _, m := range maps {
		scores = append(scores, m.Scores...)
		labels = append(labels, m.Mask...)
	}
	a, err := PixelMetrics(maps)
	if err != nil {
		t.Fatal(err)
	}
	b, err := BinaryMetrics(scores, labels)
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("pixel %+v vs flat %+v", a, b)
	}
}

func TestEvaluateTable(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	var cats []Category
	for _, name := range []string{"b", "a", "c"} {
		c := Category{Name: name}
		for i := 0; i < 10; i++ {
			m := randomMap(r, 12, 12, 8)
			if i%2 == 0 {
				clear(m.Mask)
			} else {
				m.Mask[5] = true
			}
			c.Maps = append(c.Maps, m)
			c.ImageLabels = append(c.ImageLabels, i%2 == 1)
			c.ImageScores = append(c.ImageScores, slices.Max(m.Scores))
		}
		cats = append(cats, c)
	}
	// An inverted detector in "c": the flip makes its AUROC >= 0.5.
	for i, anomalous := range cats[2].ImageLabels {
		cats[2].ImageScores[i] = float32(i) / 100
		if anomalous {
			cats[2].ImageScores[i] -= 1
		}
	}
	tab := Evaluate(cats, ReferenceEval)
	if len(tab.Rows) != 4 || tab.Rows[0].Category != "a" || tab.Mean().Category != "mean" {
		t.Fatalf("rows %v", tab.Rows)
	}
	for _, col := range PaperColumns {
		sum := 0.0
		for _, row := range tab.Rows[:3] {
			v := row.Values[col]
			if math.IsNaN(v) || v < 0 || v > 1 {
				t.Fatalf("%s %s = %v (%v)", row.Category, col, v, row.Errors)
			}
			sum += v
		}
		if !near(tab.Mean().Values[col], sum/3) {
			t.Fatalf("mean %s = %v, want %v", col, tab.Mean().Values[col], sum/3)
		}
	}
	if tab.Rows[2].Values[ImageAUROC] != 1 {
		t.Fatalf("FlipAUROC not applied: %v", tab.Rows[2].Values[ImageAUROC])
	}
	noflip := Evaluate(cats, EvalConfig{PRO: ReferencePRO})
	if got, want := noflip.Rows[2].Values[ImageAUROC], 1-tab.Rows[2].Values[ImageAUROC]; !near(got, want) {
		t.Fatalf("unflipped AUROC %v, want %v", got, want)
	}
	// A category with only good images: image metrics undefined, said so.
	only := Evaluate([]Category{{Name: "x", ImageScores: []float32{1, 2}, ImageLabels: []bool{false, false}}}, ReferenceEval)
	if row := only.Rows[0]; !math.IsNaN(row.Values[ImageAUROC]) || row.Errors[ImageAUROC] == "" || !math.IsNaN(row.Values[MAD]) {
		t.Fatalf("one-class category: %+v", row)
	}
}

// curveFixture is a curve over 400 random scores with 30% anomalies, its
// scores and labels, a direct count of the true and false positives at a
// threshold, and the distinct scores in order.
func curveFixture(t *testing.T) (c *Curve, scores []float32, labels []bool, count func(float64) (tp, fp int), distinct []float32) {
	t.Helper()
	r := rand.New(rand.NewPCG(13, 14))
	labels = randomLabels(r, 400, 0.3)
	scores = randomScores(r, 400, 40, labels, 0.7)
	c, err := NewCurve(scores, labels)
	if err != nil {
		t.Fatal(err)
	}
	count = func(th float64) (tp, fp int) {
		for i, s := range scores {
			if float64(s) >= th {
				if labels[i] {
					tp++
				} else {
					fp++
				}
			}
		}
		return
	}
	return c, scores, labels, count, slices.Compact(slices.Sorted(slices.Values(scores)))
}

func TestThresholdSelection(t *testing.T) {
	c, _, _, count, distinct := curveFixture(t)
	for _, target := range []float64{0, 0.01, 0.05, 0.2, 1} {
		k, err := c.AtMaxFPR(target)
		if err != nil {
			t.Fatal(err)
		}
		if k.FPR > target {
			t.Fatalf("AtMaxFPR(%v) has FPR %v", target, k.FPR)
		}
		// Every lower distinct score would exceed the target.
		for _, s := range distinct {
			if float64(s) < k.Threshold {
				if _, fp := count(float64(s)); float64(fp)/float64(c.N) <= target {
					t.Fatalf("AtMaxFPR(%v) = %v, but %v also meets it", target, k.Threshold, s)
				}
			}
		}
		tp, fp := count(k.Threshold)
		if tp != k.TP || fp != k.FP || k.TP+k.FN != c.P || k.FP+k.TN != c.N {
			t.Fatalf("confusion %+v, direct count tp %d fp %d", k, tp, fp)
		}
		f, err := c.AtMaxFNR(target)
		if err != nil {
			t.Fatalf("AtMaxFNR(%v): %v", target, err)
		}
		if f.FNR > target {
			t.Fatalf("AtMaxFNR(%v) has FNR %v", target, f.FNR)
		}
		for _, s := range distinct {
			if float64(s) > f.Threshold {
				if tp, _ := count(float64(s)); float64(c.P-tp)/float64(c.P) <= target {
					t.Fatalf("AtMaxFNR(%v) = %v, but higher %v also meets it", target, f.Threshold, s)
				}
			}
		}
	}
}

// TestCurvePointsAndPlots: the max-F1 point agrees with F1max, a fixed
// threshold counts what lies at or above it, and the ROC and PR curves run
// monotonically between their endpoints.
func TestCurvePointsAndPlots(t *testing.T) {
	c, scores, labels, count, distinct := curveFixture(t)
	best, err := c.AtMaxF1()
	if err != nil {
		t.Fatal(err)
	}
	b, err := BinaryMetrics(scores, labels)
	if err != nil {
		t.Fatal(err)
	}
	if !near(best.F1, b.F1Max) {
		t.Fatalf("AtMaxF1 F1 %v, F1max %v", best.F1, b.F1Max)
	}
	manual := c.At(0.5)
	tp, fp := count(0.5)
	if manual.TP != tp || manual.FP != fp {
		t.Fatalf("At(0.5) %+v, direct %d %d", manual, tp, fp)
	}
	if none := c.At(1e9); none.TP != 0 || none.FP != 0 || !math.IsNaN(none.Precision) {
		t.Fatalf("At(huge) = %+v", none)
	}
	roc := c.ROC(10)
	if len(roc) > 10 || roc[0].X != 0 || roc[0].Y != 0 || roc[len(roc)-1].X != 1 || roc[len(roc)-1].Y != 1 {
		t.Fatalf("ROC endpoints %v", roc)
	}
	for i := 1; i < len(roc); i++ {
		if roc[i].X < roc[i-1].X || roc[i].Y < roc[i-1].Y {
			t.Fatalf("ROC not monotone: %v", roc)
		}
	}
	if pr := c.PR(1000); len(pr) != len(distinct) || pr[len(pr)-1].X != 1 {
		t.Fatalf("PR has %d points for %d distinct scores", len(pr), len(distinct))
	}
}
