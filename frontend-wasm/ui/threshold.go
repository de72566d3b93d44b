//go:build js && wasm

package ui

import (
	"fmt"
	"image/color"
	"maps"
	"math"
	"sort"

	"github.com/hajimehoshi/ebiten/v2"

	"github.com/diad-project/diad/backend/metrics"
	"github.com/diad-project/diad/frontend-wasm/gallery"
	"github.com/diad-project/diad/frontend-wasm/tuning"
	"github.com/diad-project/diad/shared"
)

// Rate preset step and range (the x of "FPR <= x").
const rateStep, rateMax = 0.01, 0.5

// layoutThreshold lays out the threshold tuner on r: histogram, curves,
// presets and the metrics table.
// The layout pass (dst nil) places the widgets and takes the click; the
// painting pass paints them as placed.
func (a *App) layoutThreshold(dst *ebiten.Image, r rect) {
	if a.thresholdView.tune == nil {
		placeholder(dst, r, "no run with scored images yet")
		return
	}
	tu := a.thresholdView.tune
	m := tu.Shown()
	left, right := r.cutLeft(r.W*0.62, 10)
	histR, curves := left.cutTop(left.H*0.5, 10)
	a.drawHistogram(dst, histR)
	cc := curves.columns(3, 10)
	scope := "all images"
	if tu.Scope != tuning.AllCategories {
		scope = tu.Scope
	}
	roc, rocAt := tu.ROC(a.cfg.CurvePoints)
	pr, prAt := tu.PR(a.cfg.CurvePoints)
	a.drawCurve(dst, cc[0], "ROC", scope+" · AUC "+ratio(m.AUROC), "FPR", "TPR", roc, rocAt, true)
	a.drawCurve(dst, cc[1], "Precision-recall", "AP "+ratio(m.AP), "recall", "precision", pr, prAt, false)
	a.drawMetricsTable(dst, cc[2])

	a.drawOperatingPoint(dst, right)
}

// drawOperatingPoint draws the operating point's panel: scope, threshold,
// confusion matrix, rates, presets and saving.
func (a *App) drawOperatingPoint(dst *ebiten.Image, r rect) {
	tu := a.thresholdView.tune
	m := tu.Shown()
	in := panel(dst, r, "Operating point")
	k := tu.Confusion()
	y := a.drawScopeRow(dst, in)
	if tu.Draggable() {
		drawBold(dst, "threshold "+fmtScore(m.Threshold), in.X, y, sizeTitle, colText)
	} else {
		drawBold(dst, "each category its own", in.X, y, sizeTitle, colText)
	}
	drawText(dst, "policy "+m.Policy, in.X+in.W*0.6, y+2, sizeBody, colDim)
	y += 28
	y = a.drawConfusion(dst, in, y, k)
	rates := []struct {
		name string
		v    float64
	}{{"precision", k.Precision}, {"recall", k.Recall}, {"F1", k.F1}, {"FPR", k.FPR}, {"FNR", k.FNR}, {"accuracy", k.Accuracy}}
	for i, rt := range rates {
		x := in.X + float32(i%3)*(in.W/3)
		yy := y + float32(i/3)*34
		drawText(dst, rt.name, x, yy, sizeSmall, colDim)
		drawBold(dst, pct(rt.v), x, yy+14, sizeBody, colText)
	}
	y += 76
	drawText(dst, "presets", in.X, y, sizeSmall, colDim)
	y += 16
	bw := (in.W - 8) / 3
	apply := func(preset string) func() {
		return func() {
			if err := tu.Apply(preset, a.thresholdView.rate); err != nil {
				a.fail(err)
				return
			}
			a.thresholdChanged()
		}
	}
	a.button(dst, rect{in.X, y, bw, 26}, "preset:max-f1", "max F1", m.Policy == tuning.MaxF1, apply(tuning.MaxF1))
	a.button(dst, rect{in.X + bw + 4, y, bw, 26}, "preset:fpr", "FPR ≤ "+pct(a.thresholdView.rate), m.Policy == tuning.FPRPolicy(a.thresholdView.rate), apply("fpr"))
	a.button(dst, rect{in.X + 2*(bw+4), y, bw, 26}, "preset:fnr", "FNR ≤ "+pct(a.thresholdView.rate), m.Policy == tuning.FNRPolicy(a.thresholdView.rate), apply("fnr"))
	y += 32
	drawText(dst, "x = "+pct(a.thresholdView.rate), in.X, y+5, sizeSmall, colDim)
	a.button(dst, rect{in.X + 70, y, 28, 24}, "rate:-", "−", false, func() { a.thresholdView.rate = math.Max(0, math.Round((a.thresholdView.rate-rateStep)*100)/100) })
	a.button(dst, rect{in.X + 102, y, 28, 24}, "rate:+", "+", false, func() { a.thresholdView.rate = math.Min(rateMax, math.Round((a.thresholdView.rate+rateStep)*100)/100) })
	y += 36
	a.button(dst, rect{in.X, y, in.W, 30}, "save-threshold", "Save threshold with the run", false, a.saveThreshold)
	y += 38
	saved := fmt.Sprintf("saved: %s (%s)", thresholdLabel(a.run.Threshold, gallery.Any), a.run.Threshold.Policy)
	if a.run.Threshold.SetBy != "" {
		saved += " by " + a.run.Threshold.SetBy
	}
	drawText(dst, clip(saved, in.W, sizeSmall), in.X, y, sizeSmall, colDim)
	hint := "drag the line or use ←/→"
	if !tu.Draggable() {
		hint = "pick a category to move its threshold"
	}
	drawText(dst, hint, in.X, y+16, sizeSmall, colDim)
}

// drawConfusion draws the confusion matrix (rows: ground truth, columns:
// prediction) from y down and returns the y below it.
func (a *App) drawConfusion(dst *ebiten.Image, in rect, y float32, k metrics.Confusion) float32 {
	// Confusion matrix: rows = ground truth, columns = prediction.
	cell := min((in.W-90)/2, 90)
	mx := in.X + 86
	drawText(dst, "predicted", mx, y, sizeSmall, colDim)
	drawTextIn(dst, "anomalous", rect{mx, y + 14, cell, 14}, sizeSmall, colDim)
	drawTextIn(dst, "normal", rect{mx + cell + 4, y + 14, cell, 14}, sizeSmall, colDim)
	drawText(dst, "actual", in.X, y+14, sizeSmall, colDim)
	y += 32
	grid := []struct {
		label string
		o     gallery.Outcome
		n     int
		row   int
		col   int
	}{{"TP", gallery.TP, k.TP, 0, 0}, {"FN", gallery.FN, k.FN, 0, 1}, {"FP", gallery.FP, k.FP, 1, 0}, {"TN", gallery.TN, k.TN, 1, 1}}
	drawText(dst, "anomalous", in.X, y+cell/2-8, sizeSmall, colDim)
	drawText(dst, "normal", in.X, y+cell+4+cell/2-8, sizeSmall, colDim)
	for _, g := range grid {
		c := rect{mx + float32(g.col)*(cell+4), y + float32(g.row)*(cell+4), cell, cell}
		col := outcomeColor[g.o]
		fill(dst, c, color.RGBA{col.R / 3, col.G / 3, col.B / 3, 255})
		stroke(dst, c, 2, col)
		n := fmt.Sprint(g.n)
		drawBold(dst, n, c.X+(c.W-textWidth(n, 22)*1.05)/2, c.Y+c.H/2-16, 22, colText)
		drawText(dst, g.label, c.X+6, c.Y+4, sizeSmall, col)
		a.mark("confusion:"+g.label, c)
	}
	return y + 2*cell + 16
}

// drawScopeRow draws the per-category switch and, with it on, a chip per
// category choosing which one the charts show and the line moves; it
// returns the y below them.
func (a *App) drawScopeRow(dst *ebiten.Image, in rect) float32 {
	tu := a.thresholdView.tune
	y := in.Y
	if len(tu.Categories) < 2 {
		return y
	}
	half := (in.W - 4) / 2
	switchTo := func(on bool) func() {
		return func() {
			if err := tu.SetPerCategory(on); err != nil {
				a.fail(err)
				return
			}
			a.thresholdChanged()
		}
	}
	a.button(dst, rect{in.X, y, half, 24}, "threshold:one", "one threshold", !tu.PerCategory, switchTo(false))
	a.button(dst, rect{in.X + half + 4, y, half, 24}, "threshold:per-category", "per category", tu.PerCategory, switchTo(true))
	y += 30
	x := in.X
	chip := func(name, label string) {
		w := min(textWidth(label, sizeSmall)+16, in.W)
		if x+w > in.X+in.W {
			x, y = in.X, y+26
		}
		a.button(dst, rect{x, y, w, 22}, "scope:"+name, label, tu.Scope == name, func() {
			if err := tu.SetScope(name); err != nil {
				a.fail(err)
			}
		})
		x += w + 4
	}
	chip(tuning.AllCategories, "all")
	for _, c := range tu.Categories {
		chip(c, c)
	}
	return y + 32
}

func pct(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return trimFloat(100*v, 1) + "%"
}

func (a *App) drawHistogram(dst *ebiten.Image, r rect) {
	tu := a.thresholdView.tune
	m := tu.Shown()
	nn, na := m.Counts()
	title := fmt.Sprintf("Scores: %d normal, %d anomalous", nn, na)
	if tu.Scope != tuning.AllCategories {
		title = fmt.Sprintf("Scores of %s: %d normal, %d anomalous", tu.Scope, nn, na)
	}
	in := panel(dst, r, title)
	plot := rect{in.X, in.Y + 4, in.W, in.H - 22}
	a.mark("histogram", plot)
	fill(dst, plot, colBG)
	normal, anomalous := m.Histogram(a.cfg.HistogramBins)
	top := 1
	for i := range normal {
		top = max(top, normal[i], anomalous[i])
	}
	bw := plot.W / float32(len(normal))
	for i := range normal {
		x := plot.X + float32(i)*bw
		hN := plot.H * float32(normal[i]) / float32(top)
		hA := plot.H * float32(anomalous[i]) / float32(top)
		fill(dst, rect{x + 1, plot.Y + plot.H - hN, bw/2 - 1, hN}, colNormal)
		fill(dst, rect{x + bw/2, plot.Y + plot.H - hA, bw/2 - 1, hA}, colAnomaly)
	}
	if tu.Draggable() {
		tx := plot.X + plot.W*float32(m.Fraction(m.Threshold))
		line(dst, tx, plot.Y, tx, plot.Y+plot.H, 2, colText)
		fill(dst, rect{tx - 5, plot.Y, 10, 10}, colText)
		a.mark("threshold-line", rect{tx - 6, plot.Y, 12, plot.H})
	} else { // every category's threshold, thin and labelled
		for i, c := range tu.Categories {
			f := m.Fraction(tu.ByCategory[c].Threshold)
			if f < 0 || f > 1 {
				continue
			}
			tx := plot.X + plot.W*float32(f)
			line(dst, tx, plot.Y+12, tx, plot.Y+plot.H, 1, colText)
			drawText(dst, c, tx+2, plot.Y+12+float32(i%4)*14, sizeSmall, colDim)
		}
	}
	drawText(dst, fmtScore(m.Lo), plot.X, plot.Y+plot.H+3, sizeSmall, colDim)
	hi := fmtScore(m.Hi)
	drawText(dst, hi, plot.X+plot.W-textWidth(hi, sizeSmall), plot.Y+plot.H+3, sizeSmall, colDim)
	fill(dst, rect{plot.X + plot.W - 170, plot.Y + 6, 10, 10}, colNormal)
	drawText(dst, "normal", plot.X+plot.W-155, plot.Y+3, sizeSmall, colText)
	fill(dst, rect{plot.X + plot.W - 100, plot.Y + 6, 10, 10}, colAnomaly)
	drawText(dst, "anomalous", plot.X+plot.W-85, plot.Y+3, sizeSmall, colText)
}

// ratio shows a value in [0, 1] with three decimals ("–" when undefined).
func ratio(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.3f", v)
}

// drawCurve plots a curve in the unit square with ticks at 0, 0.5 and 1,
// the operating point marked and area (e.g. "AUC 0.912") in the title.
func (a *App) drawCurve(dst *ebiten.Image, r rect, title, area, xl, yl string, pts []metrics.Point, at metrics.Point, diagonal bool) {
	in := panel(dst, r, title+" · "+area)
	side := min(in.W-34, in.H-34)
	plot := rect{in.X + 28, in.Y, side, side}
	a.mark("curve:"+title, plot)
	fill(dst, plot, colBG)
	stroke(dst, plot, 1, colBorder)
	for _, t := range []float32{0, 0.5, 1} { // ticks and their values
		label := trimFloat(float64(t), 1)
		x, y := plot.X+plot.W*t, plot.Y+plot.H*(1-t)
		line(dst, x, plot.Y+plot.H, x, plot.Y+plot.H+4, 1, colDim)
		line(dst, plot.X-4, y, plot.X, y, 1, colDim)
		drawText(dst, label, x-textWidth(label, sizeSmall)/2, plot.Y+plot.H+5, sizeSmall, colDim)
		drawText(dst, label, plot.X-6-textWidth(label, sizeSmall), y-7, sizeSmall, colDim)
	}
	px := func(p metrics.Point) (float32, float32) {
		return plot.X + plot.W*float32(p.X), plot.Y + plot.H*(1-float32(p.Y))
	}
	if diagonal {
		for t := float32(0); t < 1; t += 0.04 {
			line(dst, plot.X+plot.W*t, plot.Y+plot.H*(1-t), plot.X+plot.W*(t+0.02), plot.Y+plot.H*(1-t-0.02), 1, colBorder)
		}
	}
	var pxPrev, pyPrev float32
	first := true
	for _, p := range pts {
		if math.IsNaN(p.X) || math.IsNaN(p.Y) {
			continue
		}
		x, y := px(p)
		if !first {
			line(dst, pxPrev, pyPrev, x, y, 2, colAccent)
		}
		pxPrev, pyPrev, first = x, y, false
	}
	if !math.IsNaN(at.X) && !math.IsNaN(at.Y) {
		x, y := px(at)
		fill(dst, rect{x - 5, y - 5, 10, 10}, colText)
		stroke(dst, rect{x - 7, y - 7, 14, 14}, 2, colAnomaly)
	}
	drawText(dst, xl, plot.X+plot.W*0.75-textWidth(xl, sizeSmall)/2, plot.Y+plot.H+5, sizeSmall, colDim)
	drawText(dst, yl, plot.X+4, plot.Y+2, sizeSmall, colDim)
}

// tableMetrics are the metrics table's columns; tableHeaders their short
// names (the panel is narrow; the caption spells them out).
var (
	tableMetrics = []string{metrics.ImageAUROC, metrics.ImageAP, metrics.PixelAUROC, metrics.AUPRO}
	tableHeaders = map[string]string{metrics.ImageAUROC: "I-AUC", metrics.ImageAP: "I-AP", metrics.PixelAUROC: "P-AUC", metrics.AUPRO: "PRO"}
)

// drawMetricsTable shows the run's metrics per category and their mean, as
// `diad test` computed and stored them.
func (a *App) drawMetricsTable(dst *ebiten.Image, r rect) {
	in := panel(dst, r, "Run metrics (%)")
	a.mark("metrics", in)
	if len(a.thresholdView.metrics) == 0 {
		placeholder(dst, in, "no metrics table (a predict run, or none stored)")
		return
	}
	values := map[string]map[string]*float64{}
	var cats []string
	for _, v := range a.thresholdView.metrics {
		if values[v.Category] == nil {
			values[v.Category] = map[string]*float64{}
			if v.Category != "mean" {
				cats = append(cats, v.Category)
			}
		}
		values[v.Category][v.Metric] = v.Value
	}
	sort.Strings(cats)
	if values["mean"] != nil {
		cats = append(cats, "mean")
	}
	catW := in.W * 0.28
	colW := (in.W - catW) / float32(len(tableMetrics))
	y := in.Y
	for k, name := range tableMetrics {
		drawText(dst, clip(tableHeaders[name], colW-2, sizeSmall), in.X+catW+float32(k)*colW, y, sizeSmall, colDim)
	}
	y += 18
	for _, c := range cats {
		if y+16 > in.Y+in.H {
			drawText(dst, "…", in.X, y, sizeSmall, colDim)
			break
		}
		draw := drawText
		if c == "mean" {
			line(dst, in.X, y-2, in.X+in.W, y-2, 1, colBorder)
			draw = drawBold
		}
		draw(dst, clip(c, catW-4, sizeSmall), in.X, y, sizeSmall, colText)
		for k, name := range tableMetrics {
			cell := "–"
			if v := values[c][name]; v != nil && !math.IsNaN(*v) {
				cell = trimFloat(100**v, 1)
			}
			draw(dst, cell, in.X+catW+float32(k)*colW, y, sizeSmall, colText)
		}
		y += 17
	}
	if y+30 <= in.Y+in.H {
		drawText(dst, clip("AUC: area under the ROC curve, image (I-)", in.W, sizeSmall), in.X, y+6, sizeSmall, colDim)
		drawText(dst, clip("and pixel level (P-); PRO: per-region overlap", in.W, sizeSmall), in.X, y+20, sizeSmall, colDim)
	}
}

// Dragging: the threshold on the histogram, the cursor on the scrubber, a
// handle of the gallery's score range.
func (a *App) startDrag() {
	for name, tab := range map[string]int{"histogram": tabThreshold, "scrubber": tabExplorer, "scorerange": tabGallery} {
		if r, ok := a.widgets[name]; ok && a.tab == tab && r.contains(a.clickX, a.clickY) {
			if name == "scorerange" {
				if a.galleryView.view == nil {
					continue
				}
				a.startScoreDrag(float64((float32(a.clickX) - r.X) / r.W))
			}
			a.dragging = name
			a.drag()
		}
	}
}

func (a *App) drag() {
	r := a.widgets[a.dragging]
	if r.W <= 0 {
		return
	}
	frac := float64((float32(a.mx) - r.X) / r.W)
	switch a.dragging {
	case "histogram":
		if a.thresholdView.tune != nil && a.thresholdView.tune.Draggable() {
			a.thresholdView.tune.Drag(frac)
			a.thresholdChanged()
		}
	case "scorerange":
		if a.galleryView.view != nil {
			a.dragScore(frac)
		}
	case "scrubber":
		if e := a.explorerView.exp; e != nil && e.traj != nil && e.traj.Total > 0 {
			e.player.Seek(e.traj, int(frac*float64(e.traj.Total)))
		}
	}
}

func (a *App) endDrag() {
	a.dragging = ""
}

// reloadThreshold shows a threshold saved (by this page or another) with
// the open run: the "saved" line always, and the tuner and gallery too
// unless this page holds a threshold of its own not yet saved.
func (a *App) reloadThreshold(run string) {
	go func() {
		info, err := a.client.Run(a.ctx, run)
		a.post(func() {
			if err != nil || run != a.runID || a.thresholdView.tune == nil || a.galleryView.view == nil {
				return // the next selection of the run shows it
			}
			unsaved := !sameThreshold(a.thresholdView.tune.Threshold(), a.run.Threshold)
			a.run = info
			if unsaved || sameThreshold(a.thresholdView.tune.Threshold(), info.Threshold) {
				return
			}
			tu, err := tuning.NewTuner(a.galleryView.view.Images, info.Threshold)
			if err != nil {
				a.fail(err)
				return
			}
			tu.Scope = a.thresholdView.tune.Scope
			a.thresholdView.tune = tu
			a.thresholdChanged()
			a.setStatus(fmt.Sprintf("threshold of run %s set to %s (%s) by %s", run, thresholdLabel(info.Threshold, gallery.Any), info.Threshold.Policy, info.Threshold.SetBy))
		})
	}()
}

// sameThreshold compares what two thresholds decide (not who set them).
func sameThreshold(x, y shared.RunThreshold) bool {
	return x.Value == y.Value && x.Policy == y.Policy && maps.Equal(x.PerCategory, y.PerCategory)
}

// thresholdChanged spreads a new threshold from the tuner to the gallery.
func (a *App) thresholdChanged() {
	if a.galleryView.view != nil && a.thresholdView.tune != nil {
		a.galleryView.view.Threshold = a.thresholdView.tune.Threshold()
		a.galleryView.view.Refresh()
	}
}

func (a *App) saveThreshold() {
	if a.thresholdView.tune == nil {
		return
	}
	th := a.thresholdView.tune.Threshold()
	run, req := a.runID, shared.ThresholdRequest{Value: th.Value, PerCategory: th.PerCategory, Policy: th.Policy, User: a.user}
	go func() {
		info, err := a.client.SetThreshold(a.ctx, run, req)
		a.post(func() {
			if err != nil {
				a.fail(fmt.Errorf("save threshold: %w", err))
				return
			}
			if run == a.runID {
				a.run = info
			}
			what := fmtScore(req.Value)
			if len(req.PerCategory) > 0 {
				what = fmt.Sprintf("per category (%d)", len(req.PerCategory))
			}
			a.setStatus(fmt.Sprintf("threshold %s (%s) saved with run %s", what, req.Policy, run))
		})
	}()
}
