//go:build js && wasm

package ui

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/hajimehoshi/ebiten/v2"

	"github.com/diad-project/diad/frontend-wasm/gallery"
	"github.com/diad-project/diad/shared"
)

// Gallery geometry.
const (
	thumbCell    = 150 // cell width and thumbnail height
	captionH     = 20
	filterW      = 200
	reviewW      = 300 // review panel beside the grid on wide windows
	reviewH      = 230 // ... or below it on narrow ones
	wideWindow   = 1100
	narrowWindow = 760
)

// galleryLayout splits the gallery area; it adapts to the window width.
func galleryLayout(a *App, r rect) (filters, grid, review rect) {
	fw := float32(filterW)
	if float32(a.w) < narrowWindow {
		fw = 150
	}
	filters, rest := r.cutLeft(fw, 10)
	if float32(a.w) >= wideWindow {
		grid, review = rest.cutLeft(rest.W-reviewW-10, 10)
	} else {
		grid, review = rest.cutTop(rest.H-reviewH-10, 10)
	}
	return filters, grid, review
}

func galleryColumns(a *App) int {
	if r, ok := a.widgets["grid"]; ok {
		return max(1, int(r.W/thumbCell))
	}
	return 0
}

// activeJob is the newest running or queued job, if any.
func (a *App) activeJob() *shared.Job { return a.trainingView.board.Active() }

// layoutGallery lays out the gallery on r: filters, the grid of thumbnails
// and the review panel.
// The layout pass (dst nil) places the widgets and takes the click; the
// painting pass paints them as placed.
func (a *App) layoutGallery(dst *ebiten.Image, r rect) {
	if a.galleryView.view == nil {
		msg := "waiting for a results run (a test job creates one; see Training)"
		if j := a.activeJob(); j != nil {
			// Say what is happening where the user looks.
			p := j.Progress
			msg = fmt.Sprintf("no run yet: %s job %s is %s", j.Kind, j.ID, j.State)
			if p.Stage != "" {
				msg += " · " + p.Stage
			}
			if p.Total > 0 {
				msg += fmt.Sprintf(" · step %d / %d", p.Step, p.Total)
			}
			if p.ETASeconds > 0 {
				msg += " · stage ETA " + (time.Duration(p.ETASeconds) * time.Second).String()
			}
			msg += " (4: training monitor)"
		}
		if a.runID != "" {
			msg = "loading run " + a.runID + "…"
		}
		placeholder(dst, r, msg)
		return
	}
	filters, grid, review := galleryLayout(a, r)
	a.drawFilters(dst, filters)
	a.drawGrid(dst, grid)
	a.drawReview(dst, review)
}

// chipRow draws one filter's choices as toggle buttons; it returns the y
// below it.
func (a *App) chipRow(dst *ebiten.Image, x, y, w float32, title string, names, labels []string, current string, set func(string)) float32 {
	drawText(dst, title, x, y, sizeSmall, colDim)
	y += 16
	cx := x
	for i, n := range names {
		lw := textWidth(labels[i], sizeSmall) + 14
		if cx+lw > x+w {
			cx, y = x, y+24
		}
		n := n
		r := rect{cx, y, lw, 21}
		bg := colRaised
		if n == current {
			bg = colAccent
		}
		fill(dst, r, bg)
		if c, ok := outcomeByName[n]; ok {
			fill(dst, rect{r.X, r.Y + r.H - 3, r.W, 3}, outcomeColor[c])
		}
		drawTextIn(dst, labels[i], r, sizeSmall, colText)
		a.hit("filter:"+title+":"+n, r, func() { set(n) })
		cx += lw + 4
	}
	return y + 32
}

var outcomeByName = map[string]gallery.Outcome{"TP": gallery.TP, "FP": gallery.FP, "FN": gallery.FN, "TN": gallery.TN}

func (a *App) drawFilters(dst *ebiten.Image, r rect) {
	in := panel(dst, r, "Filters")
	v := a.galleryView.view
	refresh := func() { v.Refresh(); a.galleryView.scrollToSelected = true }
	y := in.Y
	cats := append([]string{gallery.Any}, v.Categories()...)
	catLabels := append([]string{"all"}, v.Categories()...)
	y = a.chipRow(dst, in.X, y, in.W, "category", cats, catLabels, v.Filter.Category, func(s string) { v.Filter.Category = s; refresh() })
	y = a.chipRow(dst, in.X, y, in.W, "ground truth", []string{gallery.Any, "0", "1"}, []string{"all", "normal", "anomalous"}, v.Filter.GT, func(s string) { v.Filter.GT = s; refresh() })
	y = a.chipRow(dst, in.X, y, in.W, "verdict", []string{gallery.Any, "", "anomalous", "normal", "unsure"}, []string{"all", "none", "anomalous", "normal", "unsure"}, v.Filter.Verdict, func(s string) { v.Filter.Verdict = s; refresh() })
	counts := v.Counts()
	names := []string{gallery.Any}
	labels := []string{"all"}
	for _, o := range gallery.Outcomes {
		names = append(names, o.String())
		labels = append(labels, fmt.Sprintf("%s %d", o, counts[o]))
	}
	y = a.chipRow(dst, in.X, y, in.W, "outcome at threshold", names, labels, v.Filter.Outcome, func(s string) { v.Filter.Outcome = s; refresh() })
	modes := make([]string, len(overlayNames))
	for i := range modes {
		modes[i] = fmt.Sprint(i)
	}
	y = a.chipRow(dst, in.X, y, in.W, "overlay (o)", modes, overlayNames, fmt.Sprint(a.galleryView.overlay), func(s string) {
		if n, err := strconv.Atoi(s); err == nil {
			a.galleryView.overlay = n
		}
	})
	y = a.scoreRangeRow(dst, in.X, y, in.W)
	orders := []gallery.Order{gallery.ScoreDesc, gallery.ScoreAsc, gallery.ByID}
	var on, ol []string
	for _, o := range orders {
		on, ol = append(on, fmt.Sprint(int(o))), append(ol, o.String())
	}
	y = a.chipRow(dst, in.X, y, in.W, "sort", on, ol, fmt.Sprint(int(v.Order)), func(s string) {
		for _, o := range orders {
			if fmt.Sprint(int(o)) == s {
				v.Order = o
			}
		}
		refresh()
	})
	drawText(dst, fmt.Sprintf("%d of %d shown", len(v.Visible()), len(v.Images)), in.X, y, sizeSmall, colDim)
	drawText(dst, fmt.Sprintf("%d reviewed", v.Reviewed()), in.X, y+16, sizeSmall, colDim)
	drawText(dst, "threshold "+thresholdLabel(v.Threshold, v.Filter.Category), in.X, y+32, sizeSmall, colDim)
}

// Score-range control geometry.
const (
	scoreBins    = 24
	scoreBarH    = 34
	scoreHandleW = 4
)

// scoreRangeRow draws the score filter: a histogram of every image's score
// over the run's span, the kept range lit, the threshold as a tick, and two
// handles to drag (the "scorerange" drag). It returns the y below it.
func (a *App) scoreRangeRow(dst *ebiten.Image, x, y, w float32) float32 {
	v := a.galleryView.view
	lo, hi := v.ScoreRange()
	spanLo, spanHi := v.ScoreSpan()
	drawText(dst, "score", x, y, sizeSmall, colDim)
	label := fmtScore(lo) + " – " + fmtScore(hi)
	drawText(dst, label, x+w-textWidth(label, sizeSmall), y, sizeSmall, colText)
	y += 16
	bar := rect{x, y, w, scoreBarH}
	a.mark("scorerange", bar)
	fill(dst, bar, colBG)
	at := func(score float64) float32 { return bar.X + bar.W*float32(scoreFraction(score, spanLo, spanHi)) }
	bins := v.ScoreHistogram(scoreBins)
	most := 1
	for _, n := range bins {
		most = max(most, n)
	}
	bw := bar.W / scoreBins
	for i, n := range bins {
		if n == 0 {
			continue
		}
		h := (bar.H - 4) * float32(n) / float32(most)
		mid := spanLo + (float64(i)+0.5)/scoreBins*(spanHi-spanLo)
		c := colBorder
		if mid >= lo && mid <= hi {
			c = colDim
		}
		fill(dst, rect{bar.X + float32(i)*bw + 1, bar.Y + bar.H - 2 - h, max(bw-2, 1), h}, c)
	}
	// The threshold tick: the filtered category's, or each category's.
	ticks := []float64{v.Threshold.For(v.Filter.Category)}
	if len(v.Threshold.PerCategory) > 0 && v.Filter.Category == gallery.Any {
		ticks = slices.Collect(maps.Values(v.Threshold.PerCategory))
	}
	for _, th := range ticks {
		if th >= spanLo && th <= spanHi {
			fill(dst, rect{at(th) - 1, bar.Y, 2, bar.H}, colAnomaly)
		}
	}
	for _, s := range []float64{lo, hi} {
		hx := min(max(at(s)-scoreHandleW/2, bar.X), bar.X+bar.W-scoreHandleW)
		fill(dst, rect{hx, bar.Y - 2, scoreHandleW, bar.H + 4}, colAccent)
	}
	y += bar.H + 6
	if v.Filter.ScoreLimited() {
		a.button(dst, rect{x, y, 110, 21}, "filter:score:all", "all scores", false, func() {
			v.SetScoreRange(math.Inf(-1), math.Inf(1))
			a.galleryView.scrollToSelected = true
		})
		y += 25
	}
	return y + 8
}

// scoreFraction places a score on [0, 1] across the span.
func scoreFraction(score, lo, hi float64) float64 {
	if hi <= lo {
		return 0
	}
	return min(max((score-lo)/(hi-lo), 0), 1)
}

// startScoreDrag picks the handle nearer the press.
func (a *App) startScoreDrag(frac float64) {
	lo, hi := a.galleryView.view.ScoreRange()
	spanLo, spanHi := a.galleryView.view.ScoreSpan()
	fl, fh := scoreFraction(lo, spanLo, spanHi), scoreFraction(hi, spanLo, spanHi)
	a.dragHigh = math.Abs(frac-fh) < math.Abs(frac-fl) || (fl == fh && frac > fh)
}

// dragScore moves the held handle to frac of the span; it stops at the
// other handle.
func (a *App) dragScore(frac float64) {
	v := a.galleryView.view
	lo, hi := v.ScoreRange()
	spanLo, spanHi := v.ScoreSpan()
	s := spanLo + min(max(frac, 0), 1)*(spanHi-spanLo)
	if a.dragHigh {
		v.SetScoreRange(lo, max(s, lo))
	} else {
		v.SetScoreRange(min(s, hi), hi)
	}
	a.galleryView.scrollToSelected = true
}

func (a *App) drawGrid(dst *ebiten.Image, r rect) {
	v := a.galleryView.view
	a.mark("grid", r)
	a.region(regionGrid, r)
	cols := max(1, int(r.W/thumbCell))
	cellW := r.W / float32(cols)
	cellH := float32(thumbCell + captionH)
	vis := v.Visible()
	rows := (len(vis) + cols - 1) / cols
	maxScroll := max(0, float32(rows)*cellH-r.H)
	if !a.painting && a.galleryView.scrollToSelected {
		if p := v.Position(); p >= 0 {
			top := float32(p/cols) * cellH
			if top < a.galleryView.scroll {
				a.galleryView.scroll = top
			}
			if top+cellH > a.galleryView.scroll+r.H {
				a.galleryView.scroll = top + cellH - r.H
			}
		}
		a.galleryView.scrollToSelected = false
	}
	if !a.painting {
		a.galleryView.scroll = min(max(a.galleryView.scroll, 0), maxScroll)
	}
	if len(vis) == 0 {
		placeholder(dst, r, "no image matches the filters")
		return
	}
	sel := v.Position()
	lo, hi := v.RangeSpan()
	first := int(a.galleryView.scroll/cellH) * cols
	var sub *ebiten.Image
	if dst != nil {
		sub = dst.SubImage(r.image()).(*ebiten.Image) // clip cells to the grid
	}
	for p := first; p < len(vis); p++ {
		row, col := p/cols, p%cols
		y := r.Y + float32(row)*cellH - a.galleryView.scroll
		if y > r.Y+r.H {
			break
		}
		i := vis[p]
		im := v.Images[i]
		cell := rect{r.X + float32(col)*cellW + 4, y + 4, cellW - 8, cellH - 8}
		a.drawThumb(sub, cell, im, v.Outcome(i), p == sel, hi > lo && p >= lo && p <= hi)
		id := im.ImageID
		if cell.Y >= r.Y && cell.Y+cell.H <= r.Y+r.H+cellH {
			a.hit(fmt.Sprintf("thumb:%d", id), cell, func() {
				if ebiten.IsKeyPressed(ebiten.KeyShift) { // a range, for bulk verdicts
					v.SelectRange(id)
					return
				}
				if sel >= 0 && v.Images[vis[sel]].ImageID == id && hi == lo {
					a.openSelected() // a second click opens it
					return
				}
				v.ClearRange()
				v.Select(id)
			})
		}
	}
	if maxScroll > 0 { // scrollbar
		track := rect{r.X + r.W - 4, r.Y, 4, r.H}
		fill(dst, track, colRaised)
		th := r.H * r.H / (r.H + maxScroll)
		fill(dst, rect{track.X, r.Y + (r.H-th)*a.galleryView.scroll/maxScroll, 4, th}, colDim)
	}
}

// thumbOrOverlay is an image's picture with the chosen overlay, or the plain
// thumbnail while the overlay loads (or with overlays off).
func (a *App) thumbOrOverlay(im shared.ImageInfo) *ebiten.Image {
	if t := a.overlayThumb(im); t != nil {
		return t
	}
	return a.thumb(im)
}

func (a *App) drawThumb(dst *ebiten.Image, cell rect, im shared.ImageInfo, o gallery.Outcome, selected, inRange bool) {
	imgArea, caption := cell.cutTop(cell.H-captionH, 0)
	if t := a.thumbOrOverlay(im); t != nil {
		shown := drawImageFit(dst, t, imgArea.inset(3), ebiten.FilterLinear)
		fillAround(dst, imgArea, shown, colRaised)
	} else {
		fill(dst, imgArea, colRaised)
		drawTextIn(dst, "…", imgArea, sizeSmall, colDim)
	}
	stroke(dst, imgArea, 3, outcomeColor[o])
	if inRange { // part of the selected range
		fill(dst, rect{cell.X, cell.Y + cell.H - 3, cell.W, 3}, colAccent)
		stroke(dst, imgArea.inset(-3), 2, colAccent)
	}
	if selected {
		stroke(dst, imgArea.inset(-3), 2, colText)
	}
	drawText(dst, fmtScore(im.Score), caption.X+2, caption.Y+3, sizeSmall, colText)
	drawText(dst, o.String(), caption.X+caption.W-textWidth(o.String(), sizeSmall)-2, caption.Y+3, sizeSmall, outcomeColor[o])
	if im.AnalystLabel != "" {
		badge := map[string]string{"anomalous": "A", "normal": "N", "unsure": "?"}[im.AnalystLabel]
		b := rect{imgArea.X + 5, imgArea.Y + 5, 18, 18}
		fill(dst, b, verdictColor[im.AnalystLabel])
		drawTextIn(dst, badge, b, sizeSmall, colBG)
	}
}

func (a *App) drawReview(dst *ebiten.Image, r rect) {
	in := panel(dst, r, "Review")
	a.mark("review", r)
	im, ok := a.galleryView.view.Selected()
	if !ok {
		placeholder(dst, in, "no image selected")
		return
	}
	if rng := a.galleryView.view.Range(); len(rng) > 1 {
		a.drawBulkReview(dst, in, rng)
		return
	}
	th := a.galleryView.view.Threshold.For(im.Category)
	o := gallery.Classify(im.GroundTruth, im.Score, th)
	var picture rect
	var textArea rect
	if r.W > r.H { // below the grid: picture left, text right
		picture, textArea = in.cutLeft(min(in.H, in.W*0.3), 12)
	} else {
		picture, textArea = in.cutTop(min(in.W*0.7, in.H*0.4), 10)
	}
	fill(dst, picture, colRaised)
	if t := a.thumbOrOverlay(im); t != nil {
		a.mark("review:picture", drawImageFit(dst, t, picture, ebiten.FilterLinear))
	}
	stroke(dst, fitRect(picture.W, picture.W, picture), 3, outcomeColor[o])
	gt := "normal"
	if im.GroundTruth == 1 {
		gt = "anomalous: " + im.Defect
	}
	y := textArea.Y
	put := func(s string) {
		drawText(dst, clip(s, textArea.W, sizeBody), textArea.X, y, sizeBody, colText)
		y += 18
	}
	drawBold(dst, fmt.Sprintf("#%d  %s", im.ImageID, im.Category), textArea.X, y, sizeTitle, colText)
	y += 22
	put("ground truth: " + gt)
	put(fmt.Sprintf("score %s vs threshold %s", fmtScore(im.Score), fmtScore(th)))
	drawText(dst, "→ "+o.String(), textArea.X, y, sizeBody, outcomeColor[o])
	y += 22
	y = a.drawVerdictAndNote(dst, textArea, y, im)
	bw := (textArea.W - 12) / 4
	for i, b := range []struct{ name, label, v string }{{"verdict:anomalous", "anomalous", "anomalous"}, {"verdict:normal", "normal", "normal"}, {"verdict:unsure", "unsure", "unsure"}, {"verdict:clear", "clear", ""}} {
		b := b
		a.button(dst, rect{textArea.X + float32(i)*(bw+4), y, bw, 24}, b.name, b.label, im.AnalystLabel == b.v && b.v != "", func() { a.setVerdict(b.v) })
	}
	y += 28
	drawText(dst, "keys: a  n  u  x", textArea.X, y, sizeSmall, colDim)
	y += 18
	a.button(dst, rect{textArea.X, y, bw*2 + 4, 24}, "note", "note (t)", a.editing, a.startNote)
	a.button(dst, rect{textArea.X + 2*(bw+4), y, bw*2 + 4, 24}, "explore", "explore (Enter)", false, a.openSelected)
	y += 30
	if y+52 <= in.Y+in.H {
		a.drawViewVerdicts(dst, rect{textArea.X, y, textArea.W, 52})
	}
}

// drawVerdictAndNote draws an image's verdict (who, when) and its note, or
// the note being edited, from y down; it returns the y below them.
func (a *App) drawVerdictAndNote(dst *ebiten.Image, textArea rect, y float32, im shared.ImageInfo) float32 {
	verdict := im.AnalystLabel
	if verdict == "" {
		drawText(dst, "not reviewed", textArea.X, y, sizeBody, colDim)
	} else {
		drawBold(dst, "verdict: "+verdict, textArea.X, y, sizeBody, verdictColor[verdict])
		y += 18
		when := ""
		if im.AnalystTime != nil {
			when = " at " + im.AnalystTime.Local().Format("2006-01-02 15:04")
		}
		drawText(dst, clip("by "+im.AnalystUser+when, textArea.W, sizeSmall), textArea.X, y, sizeSmall, colDim)
	}
	y += 20
	if a.editing {
		box := rect{textArea.X, y, textArea.W, 24}
		fill(dst, box, colBG)
		stroke(dst, box, 1, colAccent)
		caret := ""
		if time.Now().UnixMilli()/500%2 == 0 {
			caret = "|"
		}
		drawText(dst, clip(string(a.note), box.W-16, sizeBody)+caret, box.X+4, box.Y+5, sizeBody, colText)
		a.mark("note", box)
		y += 28
		drawText(dst, "Enter saves · Esc cancels", textArea.X, y, sizeSmall, colDim)
		y += 18
	} else if im.AnalystNote != "" {
		drawText(dst, clip("note: "+im.AnalystNote, textArea.W, sizeBody), textArea.X, y, sizeBody, colText)
		y += 20
	}
	return y
}

// verdictButtons are the verdicts a button row offers, in order.
var verdictButtons = []struct{ name, label, v string }{{"anomalous", "anomalous", "anomalous"}, {"normal", "normal", "normal"}, {"unsure", "unsure", "unsure"}, {"clear", "clear", ""}}

// drawBulkReview is the review panel for a range of images: their verdicts
// so far, buttons (and keys) that set one verdict for all, and undo.
func (a *App) drawBulkReview(dst *ebiten.Image, in rect, rng []shared.ImageInfo) {
	y := in.Y
	drawBold(dst, fmt.Sprintf("%d images selected", len(rng)), in.X, y, sizeTitle, colText)
	y += 24
	counts := map[string]int{}
	for _, im := range rng {
		counts[im.AnalystLabel]++
	}
	drawText(dst, clip(fmt.Sprintf("anomalous %d · normal %d · unsure %d · not reviewed %d", counts["anomalous"], counts["normal"], counts["unsure"], counts[""]), in.W, sizeBody), in.X, y, sizeBody, colText)
	y += 20
	drawText(dst, clip("shift+click or shift+j/k grows the range; a click alone ends it", in.W, sizeSmall), in.X, y, sizeSmall, colDim)
	y += 22
	bw := (in.W - 12) / 4
	for i, b := range verdictButtons {
		b := b
		a.button(dst, rect{in.X + float32(i)*(bw+4), y, bw, 24}, "verdict:"+b.name, b.label, false, func() { a.setVerdict(b.v) })
	}
	y += 28
	drawText(dst, "keys: a  n  u  x set all of them", in.X, y, sizeSmall, colDim)
	y += 22
	if y+52 <= in.Y+in.H {
		a.drawViewVerdicts(dst, rect{in.X, y, in.W, 52})
	}
}

// drawViewVerdicts offers one verdict for every image the filters show,
// and undo of the last bulk verdict.
func (a *App) drawViewVerdicts(dst *ebiten.Image, r rect) {
	n := len(a.galleryView.view.Visible())
	drawText(dst, clip(fmt.Sprintf("all %d images of this view:", n), r.W*0.6, sizeSmall), r.X, r.Y+4, sizeSmall, colDim)
	if _, ok := a.galleryView.undo.Last(); ok {
		a.button(dst, rect{r.X + r.W*0.6, r.Y, r.W * 0.4, 22}, "undo", "undo (z)", false, a.undoBulk)
	} else {
		a.disabledButton(dst, rect{r.X + r.W*0.6, r.Y, r.W * 0.4, 22}, "undo", "undo (z)")
	}
	bw := (r.W - 12) / 4
	for i, b := range verdictButtons {
		b := b
		a.button(dst, rect{r.X + float32(i)*(bw+4), r.Y + 24, bw, 22}, "view:"+b.name, b.label, false, func() { a.viewVerdict(b.v) })
	}
}

// thresholdLabel says which threshold judges a view's images: one value,
// the category's, or "per category".
func thresholdLabel(th shared.RunThreshold, category string) string {
	if len(th.PerCategory) == 0 || category != gallery.Any {
		return fmtScore(th.For(category))
	}
	return fmt.Sprintf("per category (%d)", len(th.PerCategory))
}
