package summary

import (
	"testing"

	"github.com/diad-project/diad/results"
)

func TestChooseThreshold(t *testing.T) {
	var rows []results.ImageRow
	// normals score 0.1..0.5, anomalies 0.4..0.8
	for i, s := range []float64{0.1, 0.2, 0.3, 0.4, 0.5} {
		rows = append(rows, results.ImageRow{ImageID: int64(i), Score: s})
	}
	for i, s := range []float64{0.4, 0.6, 0.7, 0.8} {
		rows = append(rows, results.ImageRow{ImageID: int64(10 + i), Score: s, GroundTruth: 1})
	}
	for spec, want := range map[string]float64{"0.33": 0.33, "fpr<=0": 0.6, "fpr<=0.2": 0.5, "fnr<=0": 0.4, "fnr<=0.25": 0.6, "max-f1": 0.6} {
		th, err := ChooseThreshold(spec, rows)
		if err != nil {
			t.Fatalf("%s: %v", spec, err)
		}
		if float32(th.Value) != float32(want) {
			t.Errorf("%s: threshold %v, want %v (%s)", spec, th.Value, want, th.Policy)
		}
	}
	for _, bad := range []string{"fpr<=2", "fnr<=x", "abc", "NaN"} {
		if _, err := ChooseThreshold(bad, rows); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestChooseThresholdPerCategory(t *testing.T) {
	var rows []results.ImageRow
	add := func(cat string, gt int32, scores ...float64) {
		for _, s := range scores {
			rows = append(rows, results.ImageRow{ImageID: int64(len(rows)), Category: cat, Score: s, GroundTruth: gt})
		}
	}
	// No one threshold separates these: low's anomalies score below high's normals.
	add("low", 0, 0.1, 0.2)
	add("low", 1, 0.5, 0.6)
	add("high", 0, 1.0, 1.2)
	add("high", 1, 2.0, 2.2)
	pooled, err := ChooseThreshold("max-f1", rows)
	if err != nil || pooled.PerCategory != nil {
		t.Fatalf("pooled: %+v %v", pooled, err)
	}
	th, err := ChooseThreshold("max-f1/category", rows)
	if err != nil {
		t.Fatal(err)
	}
	if th.Policy != "max-f1" || th.Value != pooled.Value || len(th.PerCategory) != 2 {
		t.Fatalf("per category: %+v (pooled %+v)", th, pooled)
	}
	results.ApplyThreshold(rows, th)
	for _, r := range rows {
		if r.Predicted != r.GroundTruth || r.Threshold != th.PerCategory[r.Category] {
			t.Errorf("%s %v: predicted %d at %v, want %d at its category's %v", r.Category, r.Score, r.Predicted, r.Threshold, r.GroundTruth, th.PerCategory[r.Category])
		}
	}
	if th, err := ChooseThreshold("fpr<=0/category", rows); err != nil || th.PerCategory["low"] != 0.5 || th.PerCategory["high"] != 2.0 {
		t.Fatalf("fpr<=0/category: %+v %v", th, err)
	}
	for _, bad := range []string{"0.5/category", "fpr<=2/category", "/category/category", "max-f1/cat"} {
		if err := CheckThreshold(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	// A category with normal images only cannot take max F1: it keeps the pooled choice.
	add("clean", 0, 0.3)
	th, err = ChooseThreshold("max-f1/category", rows)
	if err != nil || th.PerCategory["clean"] != th.Value || th.PerCategory["low"] != 0.5 {
		t.Fatalf("one-class category: %+v %v", th, err)
	}
}
