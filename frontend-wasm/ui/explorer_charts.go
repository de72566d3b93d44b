//go:build js && wasm

package ui

import (
	"fmt"
	"image/color"
	"math"

	"github.com/hajimehoshi/ebiten/v2"

	"github.com/diad-project/diad/backend/visual"
	"github.com/diad-project/diad/frontend-wasm/trajectory"
	"github.com/diad-project/diad/shared"
)

func roundTo(v, step int) int { return (v + step/2) / step * step }

// drawLegend shows the colour scale of a category's map with its anchor values.
func (a *App) drawLegend(dst *ebiten.Image, r rect, values []float32, category string) {
	inner := panel(dst, r, "")
	bar := rect{inner.X + 4, inner.Y + 18, 14, inner.H - 40}
	n := int(bar.H)
	for i := 0; i < n; i++ {
		c := visual.Colormap(1 - float64(i)/float64(max(n-1, 1)))
		fill(dst, rect{bar.X, bar.Y + float32(i), bar.W, 1}, c)
	}
	stroke(dst, bar, 1, colBorder)
	a.mark("legend", bar)
	s := a.scaleFor(values, category)
	label := func(frac float32, s string, bold bool) {
		y := bar.Y + bar.H*(1-frac) - 6
		if bold {
			drawBold(dst, s, bar.X+bar.W+4, y, sizeSmall, colText)
		} else {
			drawText(dst, s, bar.X+bar.W+4, y, sizeSmall, colDim)
		}
	}
	if a.explorerView.scaleMinMax {
		drawText(dst, "min-max", inner.X, inner.Y, sizeSmall, colDim)
		label(1, fmtScore(s.Hi), false)
		label(0, fmtScore(s.Lo), false)
	} else {
		drawText(dst, "calibrated", inner.X, inner.Y, sizeSmall, colDim)
		label(1, fmtScore(s.Hi), false)
		label(0.5, "th "+fmtScore(a.threshold(category)), true)
		line(dst, bar.X-2, bar.Y+bar.H/2, bar.X+bar.W+2, bar.Y+bar.H/2, 1.5, colText)
		label(0, "0", false)
	}
	drawText(dst, "m: switch", inner.X, inner.Y+inner.H-14, sizeSmall, colDim)
}

// drawTimeline: transport buttons, the scrubber with a tick per step, and
// the score-vs-step chart.
func (a *App) drawTimeline(dst *ebiten.Image, r rect) {
	e := a.explorerView.exp
	left, chart := r.cutLeft(r.W*0.5, 8)
	inner := panel(dst, left, "Timeline")
	t, p := e.traj, e.player
	bx := inner.X
	by := inner.Y + 2
	play := "play"
	if p != nil && p.Playing {
		play = "pause"
	}
	a.button(dst, rect{bx, by, 34, 28}, "step:back", "<", false, func() { p.StepBy(t, -1) })
	a.button(dst, rect{bx + 38, by, 80, 28}, "play", play, p != nil && p.Playing, func() { p.Toggle(t) })
	a.button(dst, rect{bx + 122, by, 34, 28}, "step:forward", ">", false, func() { p.StepBy(t, 1) })
	// Playback speed: how long each step stays on screen while playing.
	speed := fmt.Sprintf("%d ms/step", a.stepTime().Milliseconds())
	a.button(dst, rect{bx + 160, by, 104, 28}, "speed", speed, false, func() {
		a.explorerView.speed = (a.explorerView.speed + 1) % len(stepTimes)
		if p != nil {
			p.StepTime = a.stepTime()
		}
	})
	// Captions under every panel (h), for teaching.
	caps := "captions"
	a.button(dst, rect{bx + 268, by, 86, 28}, "captions", caps, a.explorerView.captions, func() { a.explorerView.captions = !a.explorerView.captions })
	// For slides: the trajectory as an animated GIF or a PNG strip.
	switch {
	case bx+468 > inner.X+inner.W: // no room (presenter mode)
	case e.traj != nil:
		a.button(dst, rect{bx + 358, by, 50, 28}, "export:gif", "GIF", false, func() { a.exportTrajectory(shared.TrajectoryGIF) })
		a.button(dst, rect{bx + 412, by, 56, 28}, "export:strip", "strip", false, func() { a.exportTrajectory(shared.TrajectoryStrip) })
	default:
		a.disabledButton(dst, rect{bx + 358, by, 50, 28}, "export:gif", "GIF")
		a.disabledButton(dst, rect{bx + 412, by, 56, 28}, "export:strip", "strip")
	}
	bx += 310
	info := "no trajectory"
	if t != nil && t.Total > 0 {
		info = fmt.Sprintf("step %d / %d   t = %d   received %d/%d", p.Cursor+1, t.Total, stepT(t, p.Cursor), t.Received, t.Total)
		if t.Complete() {
			info += fmt.Sprintf("   done in %.1fs", t.Done.Sub(t.Started).Seconds())
		}
		if t.Dropped > 0 {
			info += fmt.Sprintf("   (%d frames skipped by the server for a slow connection)", t.Dropped)
		}
	} else if t != nil {
		info = "waiting for the first frame…"
	}
	drawText(dst, clip(info, inner.X+inner.W-(bx+166), sizeSmall), bx+166, by+8, sizeSmall, colDim)
	scrub := rect{inner.X, by + 38, inner.W, inner.H - 42}
	fill(dst, scrub, colBG)
	a.mark("scrubber", scrub)
	if t != nil && t.Total > 0 {
		w := scrub.W / float32(t.Total)
		for i := 0; i < t.Total; i++ {
			c := colRaised
			if t.Steps[i] != nil {
				c = colBorder
				if i <= p.Cursor {
					c = colAccent
				}
			}
			fill(dst, rect{scrub.X + float32(i)*w + 1, scrub.Y + 4, max(w-2, 1), scrub.H - 8}, c)
		}
		cx := scrub.X + (float32(p.Cursor)+0.5)*w
		line(dst, cx, scrub.Y, cx, scrub.Y+scrub.H, 2, colText)
		// Ticks labelled with their timestep t, as many as fit.
		every := max(1, int(math.Ceil(float64(t.Total)*44/float64(max(scrub.W, 1)))))
		for i := 0; i < t.Total; i += every {
			if t.Steps[i] != nil {
				drawText(dst, fmt.Sprint(stepT(t, i)), scrub.X+float32(i)*w+2, scrub.Y+scrub.H-14, sizeSmall, colText)
			}
		}
	}
	sched, scores := chart.cutLeft(chart.W*0.5, 8)
	a.drawSchedule(dst, sched)
	a.drawScoreChart(dst, scores)
}

// caption draws a one-line caption under a panel when captions are on and
// returns the panel's remaining area.
func (a *App) caption(dst *ebiten.Image, r rect, text string) rect {
	if !a.explorerView.captions {
		return r
	}
	p, c := r.cutTop(r.H-16, 2)
	drawText(dst, clip(text, c.W, sizeSmall), c.X+2, c.Y, sizeSmall, colDim)
	return p
}

// scheduleHighlight is the timestep of step i and sqrt(abar) there (ok
// false before the schedule or the step came).
func scheduleHighlight(t *trajectory.Trajectory, i int) (ht int, signal float64, ok bool) {
	if i < 0 || i >= len(t.Steps) || t.Steps[i] == nil {
		return 0, 0, false
	}
	ht = t.Steps[i].T
	signal, ok = t.SignalAt(ht)
	return ht, signal, ok
}

// drawSchedule is the noise schedule: the shares of the clean latent
// (signal, sqrt(abar_t)) and of the noise (sqrt(1-abar_t)) in z_t over t,
// the start level, a tick at each step's t and the current step.
func (a *App) drawSchedule(dst *ebiten.Image, r rect) {
	inner := panel(dst, a.caption(dst, r, "z_t = signal x clean + noise x random; the sampler walks t down"), "Noise schedule")
	e := a.explorerView.exp
	t := e.traj
	if t == nil || len(t.Signal) < 2 {
		placeholder(dst, inner, "–")
		return
	}
	plot := rect{inner.X + 2, inner.Y + 2, inner.W - 4, inner.H - 18}
	a.mark("schedule", plot)
	fill(dst, plot, colBG)
	tMax := float32((len(t.Signal) - 1) * t.ScheduleStride)
	px := func(ts int) float32 { return plot.X + plot.W*min(float32(ts)/tMax, 1) }
	py := func(v float64) float32 { return plot.Y + plot.H*(1-float32(v)) }
	noise := func(s float64) float64 { return math.Sqrt(max(0, 1-s*s)) }
	for i := 1; i < len(t.Signal); i++ {
		t0, t1 := (i-1)*t.ScheduleStride, i*t.ScheduleStride
		s0, s1 := float64(t.Signal[i-1]), float64(t.Signal[i])
		line(dst, px(t0), py(s0), px(t1), py(s1), 2, colAccent)
		line(dst, px(t0), py(noise(s0)), px(t1), py(noise(s1)), 2, colAnomaly)
	}
	if t.StartT > 0 { // the start level, dashed
		x := px(t.StartT)
		for y := plot.Y; y < plot.Y+plot.H; y += 6 {
			line(dst, x, y, x, min(y+3, plot.Y+plot.H), 1, colText)
		}
		drawText(dst, fmt.Sprintf("t0 %d", t.StartT), min(x+3, plot.X+plot.W-40), plot.Y+1, sizeSmall, colText)
	}
	for _, st := range t.Steps { // each sampler step's t
		if st == nil {
			continue
		}
		if s, ok := t.SignalAt(st.T); ok {
			fill(dst, rect{px(st.T) - 1, py(s) - 3, 3, 6}, colBorder)
		}
	}
	if ht, s, ok := scheduleHighlight(t, e.player.Cursor); ok {
		x := px(ht)
		line(dst, x, plot.Y, x, plot.Y+plot.H, 1, colDim)
		fill(dst, rect{x - 4, py(s) - 4, 8, 8}, colAccent)
		fill(dst, rect{x - 4, py(noise(s)) - 4, 8, 8}, colAnomaly)
		info := fmt.Sprintf("t %d: signal %.2f, noise %.2f", ht, s, noise(s))
		drawText(dst, clip(info, plot.W, sizeSmall), plot.X+2, plot.Y+plot.H+2, sizeSmall, colText)
	}
	drawText(dst, "signal", plot.X+4, py(1)+2, sizeSmall, colAccent)
	drawText(dst, "noise", plot.X+plot.W-textWidth("noise", sizeSmall)-4, py(1)+2, sizeSmall, colAnomaly)
}

func stepT(t *trajectory.Trajectory, i int) int {
	if i >= 0 && i < len(t.Steps) && t.Steps[i] != nil {
		return t.Steps[i].T
	}
	return 0
}

// drawScoreChart plots the image score of each step's predicted image
// against the threshold. While comparing, both trajectories share the
// chart with noise level on the x axis (t falling to the right), so steps
// at the same level line up whatever their count.
func (a *App) drawScoreChart(dst *ebiten.Image, r rect) {
	inner := panel(dst, r, "Score per step")
	e := a.explorerView.exp
	if e.traj == nil || e.traj.Total == 0 {
		placeholder(dst, inner, "–")
		return
	}
	all := []scoreSeries{{t: e.traj, scores: e.traj.Scores(), cursor: e.player.Cursor, col: colAnomaly}}
	byT := e.cmp != nil && e.cmp.traj != nil && e.cmp.traj.Total > 0
	if byT {
		mode := compareModes[e.cmp.mode]
		all[0].label = mode.first
		all = append(all, scoreSeries{t: e.cmp.traj, scores: e.cmp.traj.Scores(), cursor: e.compareCursor(), col: colNormal, label: mode.side})
	}
	th := a.threshold(e.image.Category)
	lo, hi, tSpan := scoreChartRange(all, th)
	plot := rect{inner.X + 2, inner.Y + 2, inner.W - 4, inner.H - 4}
	a.mark("scorechart", plot)
	fill(dst, plot, colBG)
	px := func(sr scoreSeries, i int) float32 {
		if byT {
			return plot.X + plot.W*(1-float32(stepT(sr.t, i))/float32(tSpan))
		}
		return plot.X + plot.W*(float32(i)+0.5)/float32(len(sr.scores))
	}
	py := func(v float64) float32 { return plot.Y + plot.H*(1-float32((v-lo)/(hi-lo))) }
	ty := py(th)
	for x := plot.X; x < plot.X+plot.W; x += 8 {
		line(dst, x, ty, min(x+4, plot.X+plot.W), ty, 1, colDim)
	}
	drawText(dst, "threshold "+fmtScore(th), plot.X+plot.W-textWidth("threshold "+fmtScore(th), sizeSmall)-4, ty-14, sizeSmall, colDim)
	// Axis values: the score range, and the x axis at both ends.
	drawText(dst, fmtScore(hi), plot.X+2, plot.Y+1, sizeSmall, colDim)
	drawText(dst, fmtScore(lo), plot.X+2, plot.Y+plot.H-14, sizeSmall, colDim)
	last := fmt.Sprintf("step %d", len(all[0].scores))
	if byT {
		last = "t 0"
		drawText(dst, fmt.Sprintf("t %d", tSpan), plot.X+textWidth(fmtScore(lo), sizeSmall)+12, plot.Y+plot.H-14, sizeSmall, colDim)
	}
	drawText(dst, last, plot.X+plot.W-textWidth(last, sizeSmall)-4, plot.Y+plot.H-14, sizeSmall, colDim)
	for k, sr := range all {
		prev := -1
		for i, s := range sr.scores {
			if math.IsNaN(s) {
				continue
			}
			if prev >= 0 {
				line(dst, px(sr, prev), py(sr.scores[prev]), px(sr, i), py(s), 2, sr.col)
			}
			prev = i
		}
		if c := sr.cursor; c >= 0 && c < len(sr.scores) && !math.IsNaN(sr.scores[c]) {
			if k == 0 {
				line(dst, px(sr, c), plot.Y, px(sr, c), plot.Y+plot.H, 1, colText)
			}
			fill(dst, rect{px(sr, c) - 3, py(sr.scores[c]) - 3, 6, 6}, sr.col)
		}
		if sr.label != "" {
			drawText(dst, sr.label, plot.X+plot.W*0.35+float32(k)*textWidth(all[0].label+"   ", sizeSmall), plot.Y+1, sizeSmall, sr.col)
		}
	}
}

// scoreSeries is one trajectory's line in the score chart.
type scoreSeries struct {
	t      *trajectory.Trajectory
	scores []float64
	cursor int
	col    color.RGBA
	label  string
}

// scoreChartRange is the score chart's value range (the series' scores and
// the threshold, padded) and its span in t.
func scoreChartRange(all []scoreSeries, th float64) (lo, hi float64, tSpan int) {
	lo, hi, tSpan = th, th, 1
	for _, sr := range all {
		for _, s := range sr.scores {
			if !math.IsNaN(s) {
				lo, hi = math.Min(lo, s), math.Max(hi, s)
			}
		}
		tSpan = max(tSpan, sr.t.StartT)
		for _, st := range sr.t.Steps {
			if st != nil {
				tSpan = max(tSpan, st.T)
			}
		}
	}
	pad := 0.15 * (hi - lo)
	lo, hi = lo-pad, hi+pad
	if hi <= lo {
		hi = lo + 1
	}
	return lo, hi, tSpan
}
