package gallery

import (
	"math"
	"testing"

	"github.com/diad-project/diad/shared"
)

func images() []shared.ImageInfo {
	return []shared.ImageInfo{
		{ImageID: 0, Category: "disc", GroundTruth: 0, Score: 0.2},
		{ImageID: 1, Category: "disc", GroundTruth: 1, Score: 0.9},
		{ImageID: 2, Category: "woven", GroundTruth: 0, Score: 0.7},
		{ImageID: 3, Category: "woven", GroundTruth: 1, Score: 0.4, AnalystLabel: "anomalous"},
		{ImageID: 4, Category: "woven", GroundTruth: 1, Score: 0.6},
	}
}

func ids(v *View) []int64 {
	var out []int64
	for _, i := range v.Visible() {
		out = append(out, v.Images[i].ImageID)
	}
	return out
}

func eq(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestClassifyAtThreshold(t *testing.T) {
	cases := []struct {
		gt    int32
		score float64
		want  Outcome
	}{{1, 0.5, TP}, {1, 0.49, FN}, {0, 0.5, FP}, {0, 0.1, TN}}
	for _, c := range cases {
		if got := Classify(c.gt, c.score, 0.5); got != c.want {
			t.Errorf("Classify(%d, %v, 0.5) = %v, want %v", c.gt, c.score, got, c.want)
		}
	}
}

func TestFilterSortAndCounts(t *testing.T) {
	v := NewView(images(), shared.RunThreshold{Value: 0.5})
	if want := []int64{1, 2, 4, 3, 0}; !eq(ids(v), want) {
		t.Fatalf("score order %v, want %v", ids(v), want)
	}
	c := v.Counts()
	if c[TP] != 2 || c[FP] != 1 || c[FN] != 1 || c[TN] != 1 {
		t.Fatalf("counts %v", c)
	}
	v.Filter.Category = "woven"
	v.Filter.Outcome = "TP"
	v.Refresh()
	if want := []int64{4}; !eq(ids(v), want) {
		t.Fatalf("woven TP: %v", ids(v))
	}
	v.Filter = AllImages
	v.Filter.Verdict = ""
	v.Order = ScoreAsc
	v.Refresh()
	if want := []int64{0, 4, 2, 1}; !eq(ids(v), want) {
		t.Fatalf("unreviewed ascending: %v", ids(v))
	}
	v.Filter = AllImages
	v.Filter.GT = "1"
	v.Order = ByID
	v.Threshold.Value = 0.95
	v.Refresh()
	if want := []int64{1, 3, 4}; !eq(ids(v), want) || v.Counts()[FN] != 3 {
		t.Fatalf("anomalous by id: %v, counts %v", ids(v), v.Counts())
	}
}

func TestSelectionFollowsImageAcrossRefilter(t *testing.T) {
	v := NewView(images(), shared.RunThreshold{Value: 0.5})
	if im, ok := v.Selected(); !ok || im.ImageID != 1 {
		t.Fatalf("initial selection %v %v", im.ImageID, ok)
	}
	v.Move(2)
	if im, _ := v.Selected(); im.ImageID != 4 {
		t.Fatalf("after j j: %d", im.ImageID)
	}
	v.Move(10)
	if im, _ := v.Selected(); im.ImageID != 0 {
		t.Fatalf("clamped at end: %d", im.ImageID)
	}
	v.Select(4)
	v.Filter.Category = "woven"
	v.Refresh()
	if im, _ := v.Selected(); im.ImageID != 4 {
		t.Fatalf("selection lost on refilter: %d", im.ImageID)
	}
	v.Filter.Category = "disc"
	v.Refresh()
	if im, _ := v.Selected(); im.ImageID != 1 {
		t.Fatalf("hidden selection should move to first visible: %d", im.ImageID)
	}
	if v.Select(3) {
		t.Fatal("selected an image the filter hides")
	}
	upd := v.Images[1]
	upd.AnalystLabel = "unsure"
	v.Replace(upd)
	v.Filter = AllImages
	v.Filter.Verdict = "unsure"
	v.Refresh()
	if want := []int64{1}; !eq(ids(v), want) || v.Reviewed() != 2 {
		t.Fatalf("after label: %v reviewed %d", ids(v), v.Reviewed())
	}
}

func TestScoreRange(t *testing.T) {
	v := NewView(images(), shared.RunThreshold{Value: 0.5})
	if lo, hi := v.ScoreSpan(); lo != 0.2 || hi != 0.9 {
		t.Fatalf("span %v..%v", lo, hi)
	}
	v.SetScoreRange(0.75, 0.4) // handles may cross: the range is ordered
	if want := []int64{2, 4, 3}; !eq(ids(v), want) {
		t.Fatalf("0.4..0.75: %v", ids(v))
	}
	if lo, hi := v.ScoreRange(); lo != 0.4 || hi != 0.75 || !v.Filter.ScoreLimited() {
		t.Fatalf("range %v..%v", lo, hi)
	}
	if im, _ := v.Selected(); im.ImageID != 2 {
		t.Fatalf("selection %d, want the first visible", im.ImageID)
	}
	// Combined with another filter.
	v.Filter.GT = "1"
	v.Refresh()
	if want := []int64{4, 3}; !eq(ids(v), want) {
		t.Fatalf("anomalous in 0.4..0.75: %v", ids(v))
	}
	// A handle at the end of the span lifts that bound, so a later, higher
	// score is shown.
	v.Filter.GT = Any
	v.SetScoreRange(0.5, 0.9)
	if !math.IsInf(v.Filter.MaxScore, 1) {
		t.Fatalf("max bound %v, want unlimited", v.Filter.MaxScore)
	}
	v.Images = append(v.Images, shared.ImageInfo{ImageID: 5, Category: "disc", Score: 1.5})
	v.Refresh()
	if want := []int64{5, 1, 2, 4}; !eq(ids(v), want) {
		t.Fatalf("0.5..: %v", ids(v))
	}
	v.SetScoreRange(math.Inf(-1), math.Inf(1))
	if len(v.Visible()) != 6 || v.Filter.ScoreLimited() {
		t.Fatalf("reset: %d visible, limited %v", len(v.Visible()), v.Filter.ScoreLimited())
	}
	if h := v.ScoreHistogram(4); h[0] != 2 || h[1] != 2 || h[2] != 1 || h[3] != 1 {
		// span 0.2..1.5, bin width 0.325: {0.2,0.4} {0.6,0.7} {0.9} {1.5}
		t.Fatalf("histogram %v", h)
	}
	if h := NewView(nil, shared.RunThreshold{Value: 0.5}).ScoreHistogram(3); h[0]+h[1]+h[2] != 0 {
		t.Fatalf("empty histogram %v", h)
	}
}

func rangeIDs(v *View) []int64 {
	var out []int64
	for _, im := range v.Range() {
		out = append(out, im.ImageID)
	}
	return out
}

// A range runs from where it started to the selected image in the shown
// order, either way; a plain selection or a filter that hides its start
// leaves the selected image alone.
func TestRangeSelection(t *testing.T) {
	v := NewView(images(), shared.RunThreshold{Value: 0.5}) // shown: 1 2 4 3 0
	v.Select(2)
	if !eq(rangeIDs(v), []int64{2}) {
		t.Fatalf("one image: %v", rangeIDs(v))
	}
	v.SelectRange(3)
	if got := rangeIDs(v); !eq(got, []int64{2, 4, 3}) {
		t.Fatalf("range 2..3: %v", got)
	}
	if lo, hi := v.RangeSpan(); lo != 1 || hi != 3 {
		t.Fatalf("span %d..%d", lo, hi)
	}
	v.SelectRange(1) // the start stays at 2
	if got := rangeIDs(v); !eq(got, []int64{1, 2}) {
		t.Fatalf("range back to 1: %v", got)
	}
	v.ClearRange()
	if got := rangeIDs(v); !eq(got, []int64{1}) {
		t.Fatalf("cleared: %v", got)
	}
	v.Select(2)
	v.SelectRange(0)
	v.Filter.Category = "disc" // hides 2, the start
	v.Refresh()
	if got := rangeIDs(v); !eq(got, []int64{0}) {
		t.Fatalf("start filtered away: %v", got)
	}
	if v.SelectRange(4) { // not shown
		t.Fatal("a hidden image joined the range")
	}
	// Saved labels come back in one refresh.
	v.ReplaceAll([]shared.ImageInfo{{ImageID: 0, Category: "disc", Score: 0.2, AnalystLabel: "normal"}, {ImageID: 1, Category: "disc", GroundTruth: 1, Score: 0.9, AnalystLabel: "normal"}})
	if v.Reviewed() != 3 {
		t.Fatalf("%d reviewed after two labels saved (one before)", v.Reviewed())
	}
}

// A bulk verdict keeps notes; undo puts back each image's own label, newest
// action first, and forgets beyond MaxUndo.
func TestBulkVerdictAndUndo(t *testing.T) {
	before := []shared.ImageInfo{{ImageID: 3, AnalystLabel: "anomalous", AnalystNote: "dent"}, {ImageID: 4}}
	r := BulkVerdict(before, "normal", "ana")
	if r.Action != shared.LabelActionBulk || r.User != "ana" || len(r.Labels) != 2 || r.Labels[0] != (shared.ImageLabel{ImageID: 3, Verdict: "normal", Note: "dent"}) {
		t.Fatalf("bulk request %+v", r)
	}
	var u Undo
	if _, _, ok := u.Pop("ana"); ok {
		t.Fatal("undo with nothing done")
	}
	u.Push("2 images -> normal", before)
	u.Push("1 image -> unsure", []shared.ImageInfo{{ImageID: 4, AnalystLabel: "normal"}})
	req, e, ok := u.Pop("bo")
	if !ok || e.What != "1 image -> unsure" || req.Action != shared.LabelActionUndo || req.User != "bo" || req.Labels[0] != (shared.ImageLabel{ImageID: 4, Verdict: "normal"}) {
		t.Fatalf("first undo %+v %+v", req, e)
	}
	req, e, ok = u.Pop("bo")
	if !ok || e.What != "2 images -> normal" || len(req.Labels) != 2 || req.Labels[0] != (shared.ImageLabel{ImageID: 3, Verdict: "anomalous", Note: "dent"}) || req.Labels[1] != (shared.ImageLabel{ImageID: 4}) {
		t.Fatalf("second undo %+v", req)
	}
	for i := 0; i < MaxUndo+5; i++ {
		u.Push("x", before)
	}
	n := 0
	for {
		if _, _, ok := u.Pop("bo"); !ok {
			break
		}
		n++
	}
	if n != MaxUndo {
		t.Fatalf("%d undos kept, want %d", n, MaxUndo)
	}
}

func TestEachCategoryIsJudgedByItsOwnThreshold(t *testing.T) {
	v := NewView(images(), shared.RunThreshold{Value: 0.5})
	if c := v.Counts(); c[FP] != 1 || c[FN] != 1 {
		t.Fatalf("one threshold 0.5: %v", c)
	}
	// woven scores higher: its own threshold 0.35 catches image 3 and
	// still flags normal image 2; 0.8 for woven would miss both anomalies.
	v.Threshold.PerCategory = map[string]float64{"woven": 0.35}
	v.Refresh()
	if o := v.Outcome(3); o != TP {
		t.Errorf("woven 0.4 at woven's 0.35: %v, want TP", o)
	}
	if o := v.Outcome(1); o != TP {
		t.Errorf("disc 0.9 at the run's 0.5: %v, want TP", o)
	}
	v.Threshold.PerCategory["disc"] = 0.95
	v.Refresh()
	if o := v.Outcome(1); o != FN {
		t.Errorf("disc 0.9 at disc's 0.95: %v, want FN", o)
	}
	if c := v.Counts(); c[FN] != 1 || c[TP] != 2 || c[FP] != 1 || c[TN] != 1 {
		t.Errorf("per-category counts %v", c)
	}
}
