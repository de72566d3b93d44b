package tuning

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/diad-project/diad/backend/metrics"
	"github.com/diad-project/diad/shared"
)

// AllCategories is the Tuner scope of every image pooled.
const AllCategories = ""

// Tuner is the threshold view's state: one Model over every image and one
// per category. A multi-class run mixes categories whose scores lie in
// different ranges, so the analyst may judge each category by its own
// threshold (PerCategory); Scope is the category the charts show
// (AllCategories for every image).
type Tuner struct {
	All         *Model
	ByCategory  map[string]*Model
	Categories  []string // sorted
	PerCategory bool
	Scope       string
}

// NewTuner builds the models of a run's images at its saved threshold.
func NewTuner(images []shared.ImageInfo, th shared.RunThreshold) (*Tuner, error) {
	all, err := New(images, th.Value, th.Policy)
	if err != nil {
		return nil, err
	}
	byCat := map[string][]shared.ImageInfo{}
	for _, im := range images {
		byCat[im.Category] = append(byCat[im.Category], im)
	}
	t := &Tuner{All: all, ByCategory: make(map[string]*Model, len(byCat)),
		Categories: slices.Sorted(maps.Keys(byCat)), PerCategory: len(th.PerCategory) > 0}
	for cat, ims := range byCat {
		m, err := New(ims, th.For(cat), th.Policy)
		if err != nil {
			return nil, fmt.Errorf("category %s: %w", cat, err)
		}
		t.ByCategory[cat] = m
	}
	return t, nil
}

// Shown is the model of the scope: what the histogram, curves and presets
// work on.
func (t *Tuner) Shown() *Model {
	if m, ok := t.ByCategory[t.Scope]; ok {
		return m
	}
	return t.All
}

// SetScope shows one category (or AllCategories).
func (t *Tuner) SetScope(category string) error {
	if _, ok := t.ByCategory[category]; !ok && category != AllCategories {
		return fmt.Errorf("tuning: no category %q in this run", category)
	}
	t.Scope = category
	return nil
}

// Draggable says whether the shown threshold can be moved by hand: not the
// pooled one while each category has its own.
func (t *Tuner) Draggable() bool { return !t.PerCategory || t.Scope != AllCategories }

// Drag moves the shown threshold (see Draggable); without per-category
// thresholds every category follows it.
func (t *Tuner) Drag(frac float64) {
	if !t.Draggable() {
		return
	}
	m := t.Shown()
	m.Drag(frac)
	if !t.PerCategory {
		t.follow(m)
	}
}

// Apply sets the shown threshold by a preset (Model.Apply). In the pooled
// scope with per-category thresholds each category gets the preset on its
// own images (a category where it cannot apply - one class only - keeps its
// threshold), and the pooled model the preset on every image.
func (t *Tuner) Apply(preset string, rate float64) error {
	if !t.PerCategory {
		m := t.Shown()
		if err := m.Apply(preset, rate); err != nil {
			return err
		}
		t.follow(m)
		return nil
	}
	if t.Scope != AllCategories {
		return t.Shown().Apply(preset, rate)
	}
	if err := t.All.Apply(preset, rate); err != nil {
		return err
	}
	for _, cat := range t.Categories {
		if err := t.ByCategory[cat].Apply(preset, rate); err != nil && !isOneClass(err) {
			return fmt.Errorf("category %s: %w", cat, err)
		}
	}
	return nil
}

func isOneClass(err error) bool { return errors.Is(err, metrics.ErrOneClass) }

// SetPerCategory switches per-category thresholds on or off. Switched on,
// each category starts from the pooled policy applied to its own images
// (a manual threshold: the same value), which is what an analyst asking for
// "max F1 per category" wants in one click. Switched off, every category
// follows the model of the scope.
func (t *Tuner) SetPerCategory(on bool) error {
	if on == t.PerCategory {
		return nil
	}
	if !on {
		m := t.Shown()
		t.All.Threshold, t.All.Policy = m.Threshold, m.Policy
		t.follow(t.All)
		t.PerCategory = false
		return nil
	}
	preset, rate, labelled := presetOf(t.All.Policy)
	for _, cat := range t.Categories {
		m := t.ByCategory[cat]
		// A category where the preset cannot apply keeps the pooled choice.
		m.Threshold, m.Policy = t.All.Threshold, t.All.Policy
		if labelled {
			if err := m.Apply(preset, rate); err != nil && !isOneClass(err) {
				return fmt.Errorf("category %s: %w", cat, err)
			}
		}
	}
	t.PerCategory = true
	return nil
}

// follow gives every model m's threshold and policy.
func (t *Tuner) follow(m *Model) {
	for _, o := range append([]*Model{t.All}, slices.Collect(maps.Values(t.ByCategory))...) {
		o.Threshold, o.Policy = m.Threshold, m.Policy
	}
}

// presetOf turns a stored policy back into Apply's preset and rate.
func presetOf(policy string) (preset string, rate float64, labelled bool) {
	switch {
	case policy == MaxF1:
		return MaxF1, 0, true
	case strings.HasPrefix(policy, "fpr<="), strings.HasPrefix(policy, "fnr<="):
		r, err := strconv.ParseFloat(policy[5:], 64)
		if err != nil {
			return "", 0, false
		}
		return policy[:3], r, true
	}
	return "", 0, false
}

// Threshold is what the tuner would save: the pooled value and, with
// per-category thresholds, each category's; the policy is the one every
// category was set by, else manual.
func (t *Tuner) Threshold() shared.RunThreshold {
	if !t.PerCategory {
		m := t.Shown()
		return shared.RunThreshold{Value: m.Threshold, Policy: m.Policy}
	}
	th := shared.RunThreshold{Value: t.All.Threshold, Policy: t.All.Policy, PerCategory: map[string]float64{}}
	for cat, m := range t.ByCategory {
		th.PerCategory[cat] = m.Threshold
		if m.Policy != t.All.Policy {
			th.Policy = Manual // a category moved by hand
		}
	}
	return th
}

// Confusion is the outcome of the shown images, each judged by the
// threshold of its category.
func (t *Tuner) Confusion() metrics.Confusion {
	if t.Scope != AllCategories || !t.PerCategory {
		return t.Shown().Confusion()
	}
	var k metrics.Confusion
	for _, m := range t.ByCategory {
		c := m.Confusion()
		k.TP, k.FP, k.FN, k.TN = k.TP+c.TP, k.FP+c.FP, k.FN+c.FN, k.TN+c.TN
	}
	k.Threshold = math.NaN()
	return metrics.RatesOf(k)
}

// ROC is the shown images' ROC curve (at most n points) with the operating
// point of Confusion: with per-category thresholds the pooled point need
// not lie on the pooled curve.
func (t *Tuner) ROC(n int) (curve []metrics.Point, at metrics.Point) {
	k := t.Confusion()
	return t.Shown().curve.ROC(n), metrics.Point{X: k.FPR, Y: 1 - k.FNR, Threshold: k.Threshold}
}

// PR is the shown images' precision-recall curve with the operating point
// of Confusion.
func (t *Tuner) PR(n int) (curve []metrics.Point, at metrics.Point) {
	k := t.Confusion()
	return t.Shown().curve.PR(n), metrics.Point{X: k.Recall, Y: k.Precision, Threshold: k.Threshold}
}
