package tuning

import (
	"testing"

	"github.com/diad-project/diad/shared"
)

// twoCategories: "low" scores normals 0.1-0.3 and anomalies 0.5-0.7; "high"
// normals 1.0-1.4 and anomalies 2.0-2.4; "clean" has normals only. No single
// threshold separates them all (low's anomalies score below high's normals),
// one per category does.
func twoCategories() []shared.ImageInfo {
	var out []shared.ImageInfo
	add := func(cat string, gt int32, scores ...float64) {
		for _, s := range scores {
			out = append(out, shared.ImageInfo{ImageID: int64(len(out)), Category: cat, Score: s, GroundTruth: gt})
		}
	}
	add("low", 0, 0.1, 0.2, 0.3)
	add("low", 1, 0.5, 0.6, 0.7)
	add("high", 0, 1.0, 1.2, 1.4)
	add("high", 1, 2.0, 2.2, 2.4)
	add("clean", 0, 0.15, 0.25)
	return out
}

func TestPerCategoryThresholdsSeparateWhatOneCannot(t *testing.T) {
	tu, err := NewTuner(twoCategories(), shared.RunThreshold{Value: 0.4, Policy: Manual})
	if err != nil {
		t.Fatal(err)
	}
	if tu.PerCategory || len(tu.Categories) != 3 || tu.Categories[0] != "clean" {
		t.Fatalf("new tuner: per category %v, categories %v", tu.PerCategory, tu.Categories)
	}
	if err := tu.Apply(MaxF1, 0); err != nil {
		t.Fatal(err)
	}
	pooled := tu.Confusion()
	if pooled.FP+pooled.FN == 0 {
		t.Fatalf("one threshold separated every image: %+v", pooled)
	}
	if th := tu.Threshold(); th.PerCategory != nil || th.Policy != MaxF1 {
		t.Fatalf("one threshold saved as %+v", th)
	}
	if err := tu.SetPerCategory(true); err != nil {
		t.Fatal(err)
	}
	k := tu.Confusion()
	if k.FP != 0 || k.FN != 0 || k.TP != 6 || k.TN != 8 || k.F1 != 1 {
		t.Fatalf("max F1 per category: %+v", k)
	}
	th := tu.Threshold()
	if th.Policy != MaxF1 || len(th.PerCategory) != 3 {
		t.Fatalf("per-category threshold %+v", th)
	}
	if v := th.PerCategory["low"]; !(v > 0.3 && v <= 0.5) {
		t.Errorf("low's threshold %v, want in (0.3, 0.5]", v)
	}
	if v := th.PerCategory["high"]; !(v > 1.4 && v <= 2.0) {
		t.Errorf("high's threshold %v, want in (1.4, 2.0]", v)
	}
	// clean has no anomalous image: max F1 cannot apply, it keeps the pooled value.
	if v := th.PerCategory["clean"]; v != th.Value {
		t.Errorf("clean's threshold %v, want the pooled %v", v, th.Value)
	}

	// The pooled view cannot be dragged while each category has its own.
	if tu.Draggable() {
		t.Fatal("pooled threshold draggable with per-category thresholds")
	}
	tu.Drag(0)
	if tu.Threshold().PerCategory["low"] != th.PerCategory["low"] {
		t.Fatal("a drag of the pooled view moved a category's threshold")
	}
	if err := tu.SetScope("high"); err != nil {
		t.Fatal(err)
	}
	tu.Drag(0) // flags every image of high
	if k := tu.Confusion(); k.FP != 3 || k.TP != 3 {
		t.Fatalf("high dragged to the left edge: %+v", k)
	}
	if got := tu.Threshold(); got.PerCategory["low"] != th.PerCategory["low"] || got.PerCategory["high"] >= 1.0 || got.Policy != Manual {
		t.Fatalf("after dragging high: %+v", got)
	}
	if err := tu.SetScope("none"); err == nil {
		t.Fatal("unknown category accepted as scope")
	}

	// Off again: every category follows the shown one (high's).
	hv := tu.Shown().Threshold
	if err := tu.SetPerCategory(false); err != nil {
		t.Fatal(err)
	}
	if got := tu.Threshold(); got.PerCategory != nil || got.Value != hv || got.Policy != Manual {
		t.Fatalf("per category off: %+v, want %v manual", got, hv)
	}
	if err := tu.SetScope(AllCategories); err != nil {
		t.Fatal(err)
	}
	if tu.Shown().Threshold != hv || tu.ByCategory["low"].Threshold != hv {
		t.Fatal("categories do not follow the single threshold")
	}
}

func TestTunerRestoresASavedPerCategoryThreshold(t *testing.T) {
	saved := shared.RunThreshold{Value: 0.9, Policy: "fpr<=0", PerCategory: map[string]float64{"low": 0.45, "high": 1.7}}
	tu, err := NewTuner(twoCategories(), saved)
	if err != nil {
		t.Fatal(err)
	}
	if !tu.PerCategory {
		t.Fatal("saved per-category thresholds not restored")
	}
	got := tu.Threshold()
	if got.Value != 0.9 || got.PerCategory["low"] != 0.45 || got.PerCategory["high"] != 1.7 || got.PerCategory["clean"] != 0.9 {
		t.Fatalf("restored %+v", got)
	}
	if k := tu.Confusion(); k.FP != 0 || k.FN != 0 {
		t.Fatalf("restored thresholds separate every image, got %+v", k)
	}
	// The FPR preset in the pooled view applies to every category on its own scores.
	if err := tu.Apply("fpr", 0); err != nil {
		t.Fatal(err)
	}
	if k := tu.Confusion(); k.FP != 0 || k.TP != 6 {
		t.Fatalf("FPR <= 0 per category: %+v", k)
	}
	rocCurve, roc := tu.ROC(50)
	prCurve, pr := tu.PR(50)
	if roc.X != 0 || roc.Y != 1 || pr.X != 1 || pr.Y != 1 || len(rocCurve) < 2 || len(prCurve) < 2 {
		t.Fatalf("operating points %+v %+v (curves of %d and %d points)", roc, pr, len(rocCurve), len(prCurve))
	}
}
