// Package summary turns a test split's scored images into what a run
// reports: the per-category metric table (the paper's seven metrics and
// mAD), the decision threshold and each image's verdict. `diad test` and
// `diad merge` both call it, so a run merged from shards is summarised by
// the same code, over the same images in the same order, as a run made in
// one process.
package summary

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/diad-project/diad/backend/metrics"
	"github.com/diad-project/diad/results"
)

// Image is one scored test image: its result row, and, for pixel metrics,
// its exact (unquantised) anomaly map and ground-truth mask.
type Image struct {
	Row           results.ImageRow
	Width, Height int
	Map           []float32
	Mask          []bool // nil for a normal image
}

// Table computes the metric table. Images are taken in ImageID order within
// each category whatever order they come in, so that the floating-point
// sums run the same way for a run made in one process and one merged from
// shards.
func Table(images []Image, cfg metrics.EvalConfig) metrics.Table {
	order := make([]int, len(images))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return images[order[a]].Row.ImageID < images[order[b]].Row.ImageID })
	byCat := map[string]*metrics.Category{}
	var names []string
	for _, i := range order {
		im := images[i]
		c := byCat[im.Row.Category]
		if c == nil {
			c = &metrics.Category{Name: im.Row.Category}
			byCat[im.Row.Category] = c
			names = append(names, im.Row.Category)
		}
		c.ImageScores = append(c.ImageScores, float32(im.Row.Score))
		c.ImageLabels = append(c.ImageLabels, im.Row.GroundTruth == 1)
		if im.Map != nil {
			mask := im.Mask
			if mask == nil {
				mask = make([]bool, len(im.Map)) // a normal image: no defect pixel
			}
			c.Maps = append(c.Maps, metrics.Map{Width: im.Width, Height: im.Height, Scores: im.Map, Mask: mask})
		}
	}
	sort.Strings(names)
	cats := make([]metrics.Category, len(names))
	for i, n := range names {
		cats[i] = *byCat[n]
	}
	return metrics.Evaluate(cats, cfg)
}

// MetricRows lays a table out as result rows.
func MetricRows(runID string, t metrics.Table) []results.MetricRow {
	var out []results.MetricRow
	for _, row := range t.Rows {
		for _, col := range metrics.PaperColumns {
			out = append(out, results.MetricRow{RunID: runID, Category: row.Category, Metric: col, Value: row.Values[col], Error: row.Errors[col]})
		}
	}
	return out
}

// CheckThreshold validates a threshold spec without any scores, so that a
// job can be refused at submit rather than after its inference.
func CheckThreshold(spec string) error {
	switch {
	case spec == "" || spec == "max-f1":
		return nil
	case strings.HasPrefix(spec, "fpr<=") || strings.HasPrefix(spec, "fnr<="):
		v, err := strconv.ParseFloat(spec[5:], 64)
		if err != nil || !(v >= 0 && v <= 1) {
			return fmt.Errorf("threshold %q: want a rate in [0, 1] after %s", spec, spec[:5])
		}
		return nil
	}
	v, err := strconv.ParseFloat(spec, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Errorf("threshold %q: want max-f1, fpr<=x, fnr<=x or a finite number", spec)
	}
	return nil
}

// ChooseThreshold turns a threshold spec into a value: "max-f1", "fpr<=x"
// (most detections with at most that false positive rate), "fnr<=x" (fewest
// false alarms with at most that miss rate), all on the rows' labels, or a
// number.
func ChooseThreshold(spec string, rows []results.ImageRow) (results.ThresholdInfo, error) {
	if err := CheckThreshold(spec); err != nil {
		return results.ThresholdInfo{}, err
	}
	labelled := spec == "" || spec == "max-f1" || strings.HasPrefix(spec, "fpr<=") || strings.HasPrefix(spec, "fnr<=")
	if !labelled {
		v, err := strconv.ParseFloat(spec, 64)
		if err != nil {
			return results.ThresholdInfo{}, fmt.Errorf("threshold %q: %w", spec, err)
		}
		return results.ThresholdInfo{Value: v, Policy: "manual"}, nil
	}
	scores := make([]float32, len(rows))
	labels := make([]bool, len(rows))
	for i, r := range rows {
		scores[i], labels[i] = float32(r.Score), r.GroundTruth == 1
	}
	c, err := metrics.NewCurve(scores, labels)
	if err != nil {
		return results.ThresholdInfo{}, err
	}
	var k metrics.Confusion
	policy := spec
	switch {
	case strings.HasPrefix(spec, "fpr<="), strings.HasPrefix(spec, "fnr<="):
		target, perr := strconv.ParseFloat(spec[5:], 64)
		if perr != nil {
			return results.ThresholdInfo{}, fmt.Errorf("threshold %q: %w", spec, perr)
		}
		if spec[:3] == "fpr" {
			k, err = c.AtMaxFPR(target)
		} else {
			k, err = c.AtMaxFNR(target)
		}
	default:
		policy = "max-f1"
		k, err = c.AtMaxF1()
	}
	if err != nil {
		return results.ThresholdInfo{}, fmt.Errorf("threshold %s: %w", policy, err)
	}
	return results.ThresholdInfo{Value: k.Threshold, Policy: policy}, nil
}

// Spec is the threshold spec that gives th again: its policy, or the
// number of a manual threshold.
func Spec(th results.ThresholdInfo) string {
	if th.Policy == "manual" {
		return strconv.FormatFloat(th.Value, 'g', -1, 64)
	}
	return th.Policy
}
