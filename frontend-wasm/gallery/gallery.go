// Package gallery is the analyst's view of a run's images: which images are
// shown (filters), in what order (sorts), how each one came out at the
// current threshold (TP/FP/TN/FN), and which one is selected. It is plain Go
// so that it is tested on the host; the browser client draws it.
package gallery

import (
	"math"
	"sort"

	"github.com/diad-project/diad/shared"
)

// Outcome is an image's verdict at a threshold against its ground truth.
type Outcome int

// Outcomes; an image is predicted anomalous when score >= threshold.
const (
	TN Outcome = iota // normal, predicted normal
	FP                // normal, predicted anomalous
	FN                // anomalous, predicted normal
	TP                // anomalous, predicted anomalous
)

// Outcomes lists them in display order.
var Outcomes = []Outcome{TP, FP, FN, TN}

func (o Outcome) String() string { return [...]string{"TN", "FP", "FN", "TP"}[o] }

// Classify is the outcome of one image at a threshold.
func Classify(gt int32, score, threshold float64) Outcome {
	predicted := shared.Predicted(score, threshold)
	switch {
	case gt == 1 && predicted:
		return TP
	case gt == 1:
		return FN
	case predicted:
		return FP
	default:
		return TN
	}
}

// Any matches every value of a filter field.
const Any = "*"

// Filter selects images; each text field is Any or one value, and the
// score must lie in [MinScore, MaxScore] (infinite bounds: no limit).
type Filter struct {
	Category string
	GT       string // Any, "0" or "1"
	Verdict  string // Any, "" (not reviewed), normal, anomalous, unsure
	Outcome  string // Any or an Outcome's String
	MinScore float64
	MaxScore float64
}

// AllImages is the filter that keeps everything.
var AllImages = Filter{Category: Any, GT: Any, Verdict: Any, Outcome: Any, MinScore: math.Inf(-1), MaxScore: math.Inf(1)}

// ScoreLimited reports whether the filter bounds the score.
func (f Filter) ScoreLimited() bool { return !math.IsInf(f.MinScore, -1) || !math.IsInf(f.MaxScore, 1) }

// Order is a sort order.
type Order int

// Sort orders.
const (
	ScoreDesc Order = iota // most anomalous first: the review order
	ScoreAsc
	ByID
)

func (o Order) String() string { return [...]string{"score ↓", "score ↑", "id"}[o] }

// View is the gallery state: all images, the filter, order, threshold, and
// the selected image (kept by id across refilters).
type View struct {
	Images []shared.ImageInfo
	Filter Filter
	Order  Order
	// Threshold judges each image (its category's where it has one).
	Threshold shared.RunThreshold

	visible  []int // indices into Images
	selected int64 // image id; -1 none
	// anchor is the image a range selection started from (-1: none): the
	// range is the visible images from it to the selected one.
	anchor int64
}

// NewView shows images at a threshold, most anomalous first.
func NewView(images []shared.ImageInfo, threshold shared.RunThreshold) *View {
	v := &View{Images: images, Filter: AllImages, Threshold: threshold, selected: -1, anchor: -1}
	v.Refresh()
	return v
}

// Outcome of image i of Images at the view's threshold.
func (v *View) Outcome(i int) Outcome {
	im := v.Images[i]
	return Classify(im.GroundTruth, im.Score, v.Threshold.For(im.Category))
}

func (v *View) keep(i int) bool {
	im, f := v.Images[i], v.Filter
	if f.Category != Any && im.Category != f.Category {
		return false
	}
	if f.GT != Any && (f.GT == "1") != (im.GroundTruth == 1) {
		return false
	}
	if f.Verdict != Any && im.AnalystLabel != f.Verdict {
		return false
	}
	if im.Score < f.MinScore || im.Score > f.MaxScore {
		return false
	}
	return f.Outcome == Any || v.Outcome(i).String() == f.Outcome
}

// Refresh recomputes the visible list after a change of images, filter,
// order or threshold. The selection stays on its image when that image is
// still visible, else moves to the first visible one.
func (v *View) Refresh() {
	v.visible = v.visible[:0]
	for i := range v.Images {
		if v.keep(i) {
			v.visible = append(v.visible, i)
		}
	}
	switch v.Order {
	case ScoreDesc:
		sort.SliceStable(v.visible, func(a, b int) bool { return v.Images[v.visible[a]].Score > v.Images[v.visible[b]].Score })
	case ScoreAsc:
		sort.SliceStable(v.visible, func(a, b int) bool { return v.Images[v.visible[a]].Score < v.Images[v.visible[b]].Score })
	case ByID:
		sort.SliceStable(v.visible, func(a, b int) bool { return v.Images[v.visible[a]].ImageID < v.Images[v.visible[b]].ImageID })
	}
	if v.Position() < 0 {
		v.selected = -1
		if len(v.visible) > 0 {
			v.selected = v.Images[v.visible[0]].ImageID
		}
	}
}

// Visible are the indices (into Images) shown, in order.
func (v *View) Visible() []int { return v.visible }

// Position is the selected image's place in Visible, or -1.
func (v *View) Position() int {
	for p, i := range v.visible {
		if v.Images[i].ImageID == v.selected {
			return p
		}
	}
	return -1
}

// Selected is the selected image.
func (v *View) Selected() (shared.ImageInfo, bool) {
	if p := v.Position(); p >= 0 {
		return v.Images[v.visible[p]], true
	}
	return shared.ImageInfo{}, false
}

// Select selects an image by id; false when it is not visible.
func (v *View) Select(id int64) bool {
	old := v.selected
	v.selected = id
	if v.Position() < 0 {
		v.selected = old
		return false
	}
	return true
}

// Move moves the selection by delta places in Visible, stopping at the ends.
func (v *View) Move(delta int) {
	if len(v.visible) == 0 {
		return
	}
	p := max(v.Position(), 0) + delta
	p = min(max(p, 0), len(v.visible)-1)
	v.selected = v.Images[v.visible[p]].ImageID
}

// SelectRange selects image id and makes a range from the image selected
// before it (or the range's first image, when one is already started) to
// id: the images between them in the visible order. False when id is not
// visible.
func (v *View) SelectRange(id int64) bool {
	anchor := v.anchor
	if anchor < 0 {
		anchor = v.selected
	}
	if !v.Select(id) {
		return false
	}
	v.anchor = anchor
	return true
}

// ClearRange keeps only the selected image selected.
func (v *View) ClearRange() { v.anchor = -1 }

// Range is the selected images in visible order: the range from its first
// image to the selected one, or the selected image alone (none when
// nothing is selected). A range whose first image was filtered away is the
// selected image alone.
func (v *View) Range() []shared.ImageInfo {
	lo, hi := v.RangeSpan()
	if lo < 0 {
		return nil
	}
	out := make([]shared.ImageInfo, 0, hi-lo+1)
	for _, i := range v.visible[lo : hi+1] {
		out = append(out, v.Images[i])
	}
	return out
}

// RangeSpan is the range's first and last place in Visible (both the
// selected image's place without a range; -1, -1 with nothing selected).
func (v *View) RangeSpan() (lo, hi int) {
	p := v.Position()
	if p < 0 {
		return -1, -1
	}
	q := p
	if v.anchor >= 0 {
		for k, i := range v.visible {
			if v.Images[i].ImageID == v.anchor {
				q = k
			}
		}
	}
	return min(p, q), max(p, q)
}

// ReplaceAll swaps in updated rows (after labels were saved) and refreshes
// once.
func (v *View) ReplaceAll(infos []shared.ImageInfo) {
	at := make(map[int64]int, len(v.Images))
	for i, im := range v.Images {
		at[im.ImageID] = i
	}
	for _, info := range infos {
		if i, ok := at[info.ImageID]; ok {
			v.Images[i] = info
		}
	}
	v.Refresh()
}

// Replace swaps in an updated row (after a label was saved) and refreshes.
func (v *View) Replace(info shared.ImageInfo) bool {
	for i := range v.Images {
		if v.Images[i].ImageID == info.ImageID {
			v.Images[i] = info
			v.Refresh()
			return true
		}
	}
	return false
}

// Categories are the distinct categories, sorted.
func (v *View) Categories() []string {
	seen := map[string]bool{}
	var out []string
	for _, im := range v.Images {
		if !seen[im.Category] {
			seen[im.Category] = true
			out = append(out, im.Category)
		}
	}
	sort.Strings(out)
	return out
}

// Counts are the outcomes of all images (not only the visible ones).
func (v *View) Counts() map[Outcome]int {
	c := map[Outcome]int{}
	for i := range v.Images {
		c[v.Outcome(i)]++
	}
	return c
}

// Reviewed counts images with an analyst verdict.
func (v *View) Reviewed() int {
	n := 0
	for _, im := range v.Images {
		if im.AnalystLabel != "" {
			n++
		}
	}
	return n
}

// ScoreSpan is the lowest and highest score of all images (0, 0 when there
// are none): the extent of the score-range control.
func (v *View) ScoreSpan() (lo, hi float64) {
	if len(v.Images) == 0 {
		return 0, 0
	}
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, im := range v.Images {
		lo, hi = min(lo, im.Score), max(hi, im.Score)
	}
	return lo, hi
}

// SetScoreRange keeps images scored in [lo, hi] and refreshes. A bound at or
// beyond the span's end becomes unlimited, so that dragging a handle to the
// end shows everything on that side, including images that arrive later.
func (v *View) SetScoreRange(lo, hi float64) {
	if lo > hi {
		lo, hi = hi, lo
	}
	spanLo, spanHi := v.ScoreSpan()
	if lo <= spanLo {
		lo = math.Inf(-1)
	}
	if hi >= spanHi {
		hi = math.Inf(1)
	}
	v.Filter.MinScore, v.Filter.MaxScore = lo, hi
	v.Refresh()
}

// ScoreRange is the filter's score range clipped to the span: what the
// control shows.
func (v *View) ScoreRange() (lo, hi float64) {
	spanLo, spanHi := v.ScoreSpan()
	return max(v.Filter.MinScore, spanLo), min(v.Filter.MaxScore, spanHi)
}

// ScoreHistogram counts all images' scores in n equal bins over the span.
func (v *View) ScoreHistogram(n int) []int {
	bins := make([]int, n)
	lo, hi := v.ScoreSpan()
	if n == 0 || len(v.Images) == 0 {
		return bins
	}
	for _, im := range v.Images {
		b := n - 1
		if hi > lo {
			b = min(int((im.Score-lo)/(hi-lo)*float64(n)), n-1)
		}
		bins[b]++
	}
	return bins
}
