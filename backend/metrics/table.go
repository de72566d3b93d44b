package metrics

import (
	"fmt"
	"math"
	"sort"
	"sync"
)

// Metric names, in the paper's column order.
const (
	ImageAUROC = "I-AUROC"
	ImageAP    = "I-AP"
	ImageF1Max = "I-F1max"
	PixelAUROC = "P-AUROC"
	PixelAP    = "P-AP"
	PixelF1Max = "P-F1max"
	AUPRO      = "PRO"
	MAD        = "mAD"
)

// PaperColumns are the seven metrics of the paper's tables, then ADer's mAD.
var PaperColumns = []string{ImageAUROC, ImageAP, ImageF1Max, PixelAUROC, PixelAP, PixelF1Max, AUPRO, MAD}

// Category is one category's evaluation input: image scores and labels, and
// (optionally) the pixel maps. Images without maps get only image metrics.
type Category struct {
	Name        string
	ImageScores []float32
	ImageLabels []bool
	Maps        []Map
}

// EvalConfig selects reference behaviours.
type EvalConfig struct {
	PRO PROConfig `yaml:"pro"`
	// FlipAUROC reports 1-AUROC when AUROC < 0.5, as eval_helper.py does for
	// image and pixel AUROC. Off, an inverted detector shows as such.
	FlipAUROC bool `yaml:"flip_auroc"`
	// Workers bounds how many categories are evaluated at once (0 = 2).
	Workers int `yaml:"workers"`
}

// ReferenceEval reproduces the reference evaluation.
var ReferenceEval = EvalConfig{PRO: ReferencePRO, FlipAUROC: true}

// Row is one category's metrics; a metric that is undefined for the category
// (for example PRO without anomalous pixels) is NaN and its reason is in Errors.
type Row struct {
	Category string             `json:"category"`
	Values   map[string]float64 `json:"values"`
	Errors   map[string]string  `json:"errors,omitempty"`
}

// Table is the per-category metrics with their unweighted mean as the last row.
type Table struct {
	Rows []Row `json:"rows"` // sorted by category, then "mean"
}

// Mean returns the mean row.
func (t Table) Mean() Row { return t.Rows[len(t.Rows)-1] }

// Evaluate computes every metric per category and their unweighted mean over
// categories (a NaN value in any category makes that metric's mean NaN, as an
// undefined metric should not silently drop out). mAD is the mean of the seven.
func Evaluate(cats []Category, cfg EvalConfig) Table {
	rows := make([]Row, len(cats))
	workers := cfg.Workers
	if workers <= 0 {
		workers = 2
	}
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for i := range cats {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			rows[i] = evaluateCategory(cats[i], cfg)
		}(i)
	}
	wg.Wait()
	sort.Slice(rows, func(a, b int) bool { return rows[a].Category < rows[b].Category })
	mean := Row{Category: "mean", Values: map[string]float64{}}
	for _, col := range PaperColumns {
		sum := 0.0
		for _, r := range rows {
			sum += r.Values[col]
		}
		mean.Values[col] = sum / float64(len(rows))
	}
	return Table{Rows: append(rows, mean)}
}

func evaluateCategory(c Category, cfg EvalConfig) Row {
	row := Row{Category: c.Name, Values: map[string]float64{}, Errors: map[string]string{}}
	fail := func(err error, cols ...string) {
		for _, col := range cols {
			row.Values[col] = math.NaN()
			row.Errors[col] = err.Error()
		}
	}
	flip := func(a float64) float64 {
		if cfg.FlipAUROC && a < 0.5 {
			return 1 - a
		}
		return a
	}
	if b, err := BinaryMetrics(c.ImageScores, c.ImageLabels); err != nil {
		fail(err, ImageAUROC, ImageAP, ImageF1Max)
	} else {
		row.Values[ImageAUROC], row.Values[ImageAP], row.Values[ImageF1Max] = flip(b.AUROC), b.AP, b.F1Max
	}
	if len(c.Maps) == 0 {
		fail(fmt.Errorf("no anomaly maps"), PixelAUROC, PixelAP, PixelF1Max, AUPRO)
	} else {
		if b, err := PixelMetrics(c.Maps); err != nil {
			fail(err, PixelAUROC, PixelAP, PixelF1Max)
		} else {
			row.Values[PixelAUROC], row.Values[PixelAP], row.Values[PixelF1Max] = flip(b.AUROC), b.AP, b.F1Max
		}
		if p, err := PRO(c.Maps, cfg.PRO); err != nil {
			fail(err, AUPRO)
		} else {
			row.Values[AUPRO] = p
		}
	}
	sum := 0.0
	for _, col := range PaperColumns[:7] {
		sum += row.Values[col]
	}
	row.Values[MAD] = sum / 7
	if len(row.Errors) == 0 {
		row.Errors = nil
	}
	return row
}

// PixelMetrics computes AUROC, AP and F1max over every pixel of maps, without
// concatenating the score arrays.
func PixelMetrics(maps []Map) (Binary, error) {
	np, total := 0, 0
	for i, m := range maps {
		if err := m.check(); err != nil {
			return Binary{}, fmt.Errorf("map %d: %w", i, err)
		}
		total += len(m.Mask)
		for _, l := range m.Mask {
			if l {
				np++
			}
		}
	}
	pos := make([]uint32, 0, np)
	neg := make([]uint32, 0, total-np)
	for i, m := range maps {
		for p, s := range m.Scores {
			if s != s {
				return Binary{}, fmt.Errorf("map %d: %w", i, ErrNaN)
			}
			if m.Mask[p] {
				pos = append(pos, sortKey(s))
			} else {
				neg = append(neg, sortKey(s))
			}
		}
	}
	sortBoth(pos, neg)
	return binaryFromKeys(pos, neg)
}
