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
