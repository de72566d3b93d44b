package server

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

// A multi-class run's categories may each be judged by their own
// threshold: saved through the API, the images' verdicts follow their
// category's value, the run's record keeps the values, every open page
// hears of it, and a category the run lacks is refused with no change.
func TestPerCategoryThresholdSavedWithTheRun(t *testing.T) {
	e := startEnv(t, nil)
	changes := followChanges(t, e)
	run := "20260103T000000Z-7e5701"
	var rows []results.ImageRow
	for i, s := range []float64{0.1, 0.3, 0.5, 0.7} {
		for k, cat := range []string{"woven", "grid"} {
			rows = append(rows, results.ImageRow{ImageID: int64(2*i + k), Category: cat, Score: s + float64(k),
				Path: filepath.Join(e.dataset, cat, "test/good/000.png")})
		}
	}
	writeRun(t, e, run, 0.4, rows) // grid scores 1.1..1.7: all anomalous at 0.4
	req := shared.ThresholdRequest{Value: 0.4, PerCategory: map[string]float64{"grid": 1.6}, Policy: "manual", User: "ana"}
	var info shared.RunInfo
	e.call(t, "PUT", "/api/v1/runs/"+run+"/threshold", req, &info)
	if info.Threshold.PerCategory["grid"] != 1.6 || info.Threshold.Value != 0.4 || info.Threshold.SetBy != "ana" {
		t.Fatalf("saved threshold %+v", info.Threshold)
	}
	var page shared.ImagePage
	e.call(t, "GET", "/api/v1/runs/"+run+"/images?limit=100", nil, &page)
	if page.Total != len(rows) {
		t.Fatalf("%d images listed, wrote %d", page.Total, len(rows))
	}
	for _, im := range page.Images {
		want := map[string]float64{"woven": 0.4, "grid": 1.6}[im.Category]
		if im.Threshold != want || (im.Predicted == 1) != (im.Score >= want) {
			t.Errorf("%s %.1f: threshold %v predicted %d, want its category's %v", im.Category, im.Score, im.Threshold, im.Predicted, want)
		}
	}
	var again shared.RunInfo
	e.call(t, "GET", "/api/v1/runs/"+run, nil, &again)
	if again.Threshold.PerCategory["grid"] != 1.6 {
		t.Fatalf("run record after saving: %+v", again.Threshold)
	}
	deadline := time.After(10 * time.Second)
	for heard := false; !heard; {
		select {
		case c, ok := <-changes:
			if !ok {
				t.Fatal("the change feed ended before the threshold change")
			}
			heard = c.Kind == shared.ChangeThreshold && c.RunID == run && c.User == "ana"
		case <-deadline:
			t.Fatal("the threshold change was not pushed to open pages")
		}
	}

	for name, bad := range map[string]shared.ThresholdRequest{
		"unknown category": {Value: 0.4, PerCategory: map[string]float64{"grid": 1, "screw": 2}},
	} {
		r, body := e.do(t, "PUT", "/api/v1/runs/"+run+"/threshold", bad, "Content-Type", "application/json")
		var msg shared.APIError
		if r.StatusCode != 400 || json.Unmarshal(body, &msg) != nil || msg.Error == "" {
			t.Errorf("%s: %d %s", name, r.StatusCode, body)
		}
	}
	// Too many categories is refused before the run is read.
	many := shared.ThresholdRequest{Value: 1, PerCategory: map[string]float64{}}
	for i := 0; i <= maxThresholdCategories; i++ {
		many.PerCategory[fmt.Sprintf("c%d", i)] = 1
	}
	if r, body := e.do(t, "PUT", "/api/v1/runs/"+run+"/threshold", many, "Content-Type", "application/json"); r.StatusCode != 400 {
		t.Errorf("%d category thresholds: %d %s", len(many.PerCategory), r.StatusCode, body)
	}
	e.call(t, "GET", "/api/v1/runs/"+run, nil, &again)
	if again.Threshold.PerCategory["grid"] != 1.6 || len(again.Threshold.PerCategory) != 1 {
		t.Fatalf("a refused request changed the threshold: %+v", again.Threshold)
	}
}
