// Package summary turns a test split's scored images into what a run
// reports: the per-category metric table (the paper's seven metrics and
// mAD), the decision threshold and each image's verdict. `diad test` and
// `diad merge` both call it, so a run merged from shards is summarised by
// the same code, over the same images in the same order, as a run made in
// one process.
package summary

import (
	"errors"
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

// PerCategorySuffix, after a labelled policy ("max-f1/category"), chooses
// a threshold for each category by that policy on the category's own images
// (a multi-class run mixes categories whose scores lie in different
// ranges); the run's Value is still the policy's choice over all images.
const PerCategorySuffix = "/category"

// CheckThreshold validates a threshold spec without any scores, so that a
// job can be refused at submit rather than after its inference.
func CheckThreshold(spec string) error {
	_, err := parseThreshold(spec)
	return err
}

// thresholdSpec is a parsed spec: a labelled policy (max-f1, fpr<=x,
// fnr<=x, with its rate) or a manual value, and whether each category gets
// its own.
type thresholdSpec struct {
	policy      string // "max-f1", "fpr<=0.05", ...; "" for a manual value
	rate        float64
	value       float64
	perCategory bool
}

func parseThreshold(spec string) (thresholdSpec, error) {
	p, perCategory := strings.CutSuffix(spec, PerCategorySuffix)
	switch {
	case p == "" || p == "max-f1":
		return thresholdSpec{policy: "max-f1", perCategory: perCategory}, nil
	case strings.HasPrefix(p, "fpr<=") || strings.HasPrefix(p, "fnr<="):
		v, err := strconv.ParseFloat(p[5:], 64)
		if err != nil || !(v >= 0 && v <= 1) {
			return thresholdSpec{}, fmt.Errorf("threshold %q: want a rate in [0, 1] after %s", spec, p[:5])
		}
		return thresholdSpec{policy: p, rate: v, perCategory: perCategory}, nil
	}
	v, err := strconv.ParseFloat(p, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		return thresholdSpec{}, fmt.Errorf("threshold %q: want max-f1, fpr<=x, fnr<=x or a finite number, optionally followed by %s", spec, PerCategorySuffix)
	}
	if perCategory {
		return thresholdSpec{}, fmt.Errorf("threshold %q: a number is the same for every category; %s follows max-f1, fpr<=x or fnr<=x", spec, PerCategorySuffix)
	}
	return thresholdSpec{value: v}, nil
}

// ChooseThreshold turns a threshold spec into a value: "max-f1", "fpr<=x"
// (most detections with at most that false positive rate), "fnr<=x" (fewest
// false alarms with at most that miss rate), all on the rows' labels, or a
// number. With PerCategorySuffix each category also gets the policy's
// choice on its own rows (a category with one class only: the pooled one).
func ChooseThreshold(spec string, rows []results.ImageRow) (results.ThresholdInfo, error) {
	ps, err := parseThreshold(spec)
	if err != nil {
		return results.ThresholdInfo{}, err
	}
	if ps.policy == "" {
		return results.ThresholdInfo{Value: ps.value, Policy: "manual"}, nil
	}
	th, err := ps.choose(rows)
	if err != nil {
		return results.ThresholdInfo{}, err
	}
	info := results.ThresholdInfo{Value: th, Policy: ps.policy}
	if !ps.perCategory {
		return info, nil
	}
	byCat := map[string][]results.ImageRow{}
	for _, r := range rows {
		byCat[r.Category] = append(byCat[r.Category], r)
	}
	info.PerCategory = make(map[string]float64, len(byCat))
	for cat, rs := range byCat {
		v, err := ps.choose(rs)
		switch {
		case errors.Is(err, metrics.ErrOneClass):
			v = th // e.g. no anomalous test image: the pooled choice
		case err != nil:
			return results.ThresholdInfo{}, fmt.Errorf("category %s: %w", cat, err)
		}
		info.PerCategory[cat] = v
	}
	return info, nil
}

// choose applies the labelled policy to rows' scores and ground truth.
func (ps thresholdSpec) choose(rows []results.ImageRow) (float64, error) {
	scores := make([]float32, len(rows))
	labels := make([]bool, len(rows))
	for i, r := range rows {
		scores[i], labels[i] = float32(r.Score), r.GroundTruth == 1
	}
	c, err := metrics.NewCurve(scores, labels)
	if err != nil {
		return 0, err
	}
	var k metrics.Confusion
	switch {
	case strings.HasPrefix(ps.policy, "fpr<="):
		k, err = c.AtMaxFPR(ps.rate)
	case strings.HasPrefix(ps.policy, "fnr<="):
		k, err = c.AtMaxFNR(ps.rate)
	default:
		k, err = c.AtMaxF1()
	}
	if err != nil {
		return 0, fmt.Errorf("threshold %s: %w", ps.policy, err)
	}
	return k.Threshold, nil
}
