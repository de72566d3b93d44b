//go:build js && wasm

package ui

import (
	"fmt"
	"math"
	"time"

	"image/color"

	"github.com/hajimehoshi/ebiten/v2"

	"github.com/diad-project/diad/frontend-wasm/monitor"
	"github.com/diad-project/diad/shared"
)

func jobColor(state string) (c [4]uint8) {
	switch state {
	case shared.JobRunning:
		return [4]uint8{0x4f, 0x8c, 0xff, 0xff}
	case shared.JobSucceeded:
		return [4]uint8{0x22, 0xc5, 0x5e, 0xff}
	case shared.JobFailed:
		return [4]uint8{0xef, 0x44, 0x44, 0xff}
	case shared.JobCancelled:
		return [4]uint8{0x8a, 0x91, 0xa0, 0xff}
	}
	return [4]uint8{0xf5, 0x9e, 0x0b, 0xff}
}

// trainingView is the training monitor: the job board the listing and the
// jobs' event streams fill, and how the loss chart is drawn.
type trainingView struct {
	board      *monitor.Board
	lossLog    bool
	lossSmooth int // an index into monitor.Smoothings
}

func (v *trainingView) Update(a *App, body rect) {
	if id, ok := v.board.FollowShown(); ok {
		go a.followJob(id)
	}
	v.layout(a, nil, body)
}

func (v *trainingView) Draw(a *App, dst *ebiten.Image, body rect) { v.layout(a, dst, body) }

// layout places the job list and the shown job's detail, painting them
// when dst is not nil.
func (v *trainingView) layout(a *App, dst *ebiten.Image, r rect) {
	b := v.board
	if len(b.Order()) == 0 {
		placeholder(dst, r, "no jobs yet: start one with `diad` or POST /api/v1/jobs; they appear here live")
		return
	}
	list, detail := r.cutLeft(min(320, r.W*0.35), 10)
	in := panel(dst, list, "Jobs")
	y := in.Y
	for _, id := range b.Order() {
		if y+46 > in.Y+in.H {
			break
		}
		j := b.Job(id)
		row := rect{in.X, y, in.W, 42}
		bg := colRaised
		if id == b.Shown() {
			bg = colBorder
		}
		fill(dst, row, bg)
		c := jobColor(j.Job.State)
		col := rgba(c)
		fill(dst, rect{row.X, row.Y, 4, row.H}, col)
		drawBold(dst, j.Job.Kind, row.X+10, row.Y+4, sizeBody, colText)
		drawText(dst, clip(id, row.W-120, sizeSmall), row.X+60, row.Y+6, sizeSmall, colDim)
		drawText(dst, j.Job.State, row.X+row.W-textWidth(j.Job.State, sizeSmall)-6, row.Y+6, sizeSmall, col)
		progressBar(dst, rect{row.X + 10, row.Y + 26, row.W - 20, 8}, j.Job, col)
		id := id
		a.hit("job:"+id, row, func() { b.Pick(id) })
		y += 46
	}
	j := b.Job(b.Shown())
	if j == nil {
		return
	}
	din := panel(dst, detail, fmt.Sprintf("%s job %s", j.Job.Kind, j.Job.ID))
	p := j.Job.Progress
	head := fmt.Sprintf("%s · %s · step %d", j.Job.State, p.Stage, p.Step)
	if p.Total > 0 {
		head += fmt.Sprintf(" / %d", p.Total)
	}
	if p.ImagesPerSec > 0 {
		head += fmt.Sprintf(" · %.1f images/s", p.ImagesPerSec)
	}
	if p.ETASeconds > 0 && j.Job.State == shared.JobRunning {
		head += " · stage ETA " + (time.Duration(p.ETASeconds) * time.Second).String()
	}
	if j.Following {
		head += " · live"
	}
	drawText(dst, clip(head, din.W, sizeBody), din.X, din.Y, sizeBody, colText)
	progressBar(dst, rect{din.X, din.Y + 22, din.W, 10}, j.Job, rgba(jobColor(j.Job.State)))
	switch {
	case j.Job.Error != "":
		drawText(dst, clip("error: "+j.Job.Error, din.W, sizeBody), din.X, din.Y+40, sizeBody, colError)
	case j.Job.RunID != "" && j.Job.State == shared.JobSucceeded: // a finished test or predict job
		run := j.Job.RunID
		a.button(dst, rect{din.X, din.Y + 38, min(din.W, 300), 20}, "job:open-run", "open its run "+run, false, func() {
			a.selectRun(run)
			a.tab = tabGallery
		})
	}
	chart, msgs := rect{din.X, din.Y + 60, din.W, din.H - 60}.cutTop((din.H-60)*0.6, 10)
	v.drawLossChart(a, dst, chart, j)
	my := msgs.Y
	drawText(dst, fmt.Sprintf("%d events", j.Events), msgs.X, my, sizeSmall, colDim)
	my += 18
	start := max(0, len(j.Messages)-int((msgs.H-18)/16))
	for _, m := range j.Messages[start:] {
		drawText(dst, clip(m, msgs.W, sizeSmall), msgs.X, my, sizeSmall, colText)
		my += 16
	}
}

func rgba(c [4]uint8) color.RGBA { return color.RGBA{c[0], c[1], c[2], c[3]} }

// progressBar: a finished job is full even when it never knew its total
// (training until a loss target, say).
func progressBar(dst *ebiten.Image, r rect, j shared.Job, c color.RGBA) {
	fill(dst, r, colBG)
	step, total := j.Progress.Step, j.Progress.Total
	switch {
	case j.State == shared.JobSucceeded:
		fill(dst, r, c)
	case total > 0:
		fill(dst, rect{r.X, r.Y, r.W * float32(min(step, total)) / float32(total), r.H}, c)
	}
}

// drawLossChart draws one panel per training stage (the autoencoder's and
// the denoiser's losses restart their steps and differ in scale), with the
// controls for log scale and smoothing above them.
func (v *trainingView) drawLossChart(a *App, dst *ebiten.Image, r rect, j *monitor.Job) {
	fill(dst, r, colBG)
	stroke(dst, r, 1, colBorder)
	a.mark("losschart", r)
	if len(j.Loss) == 0 && len(j.Val) == 0 {
		msg := "loss curve: waiting for training steps"
		if j.Job.Kind != shared.JobTrain {
			msg = "a " + j.Job.Kind + " job reports progress only (no loss curve)"
		}
		drawTextIn(dst, msg, r, sizeSmall, colDim)
		return
	}
	bar, body := r.inset(6).cutTop(24, 6)
	scale := "linear"
	if v.lossLog {
		scale = "log"
	}
	a.button(dst, rect{bar.X, bar.Y, 110, 22}, "loss:log", "scale: "+scale, v.lossLog, func() { v.lossLog = !v.lossLog })
	a.button(dst, rect{bar.X + 118, bar.Y, 130, 22}, "loss:smooth", fmt.Sprintf("smoothing %.2f", monitor.Smoothings[v.lossSmooth]), v.lossSmooth > 0,
		func() { v.lossSmooth = (v.lossSmooth + 1) % len(monitor.Smoothings) })
	stages, train := monitor.Series(j.Loss)
	_, val := monitor.Series(j.Val)
	for st := range val {
		if _, ok := train[st]; !ok {
			stages = append(stages, st)
		}
	}
	h := (body.H - float32(len(stages)-1)*8) / float32(len(stages))
	for i, st := range stages {
		pr := rect{body.X, body.Y + float32(i)*(h+8), body.W, h}
		v.drawLossPanel(dst, pr, st, train[st], val[st])
		a.mark("losschart:"+st, pr)
	}
}

// drawLossPanel is one stage's loss: raw (dim) and smoothed training loss,
// validation points, and the axes' ranges.
func (v *trainingView) drawLossPanel(dst *ebiten.Image, r rect, stage string, train, val []monitor.Point) {
	stroke(dst, r, 1, colBorder)
	yv := func(y float64) float64 {
		if v.lossLog {
			return math.Log10(math.Max(y, 1e-12))
		}
		return y
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	xmin, xmax := math.Inf(1), math.Inf(-1)
	for _, s := range [][]monitor.Point{train, val} {
		for _, p := range s {
			lo, hi = math.Min(lo, yv(p.Y)), math.Max(hi, yv(p.Y))
			xmin, xmax = math.Min(xmin, p.X), math.Max(xmax, p.X)
		}
	}
	if xmax <= xmin {
		xmax = xmin + 1
	}
	if hi <= lo {
		hi = lo + 1
	}
	// Room for the axis labels: values on the left, steps below.
	plot := rect{r.X + 58, r.Y + 20, r.W - 68, r.H - 40}
	pos := func(p monitor.Point) (float32, float32) {
		return plot.X + plot.W*float32((p.X-xmin)/(xmax-xmin)), plot.Y + plot.H*(1-float32((yv(p.Y)-lo)/(hi-lo)))
	}
	polyline := func(pts []monitor.Point, width float32, c color.RGBA) {
		for i := 1; i < len(pts); i++ {
			x0, y0 := pos(pts[i-1])
			x1, y1 := pos(pts[i])
			line(dst, x0, y0, x1, y1, width, c)
		}
	}
	w := monitor.Smoothings[v.lossSmooth]
	if w > 0 {
		polyline(train, 1, colBorder)
	}
	polyline(monitor.EMA(train, w), 1.5, colAccent)
	for _, p := range val {
		x, y := pos(p)
		fill(dst, rect{x - 4, y - 4, 8, 8}, colAnomaly)
	}
	name := stage
	if name == "" {
		name = "training"
	}
	drawBold(dst, name+" loss", r.X+6, r.Y+3, sizeSmall, colText)
	legend := "— train"
	if len(val) > 0 {
		legend += "   ■ validation"
	}
	drawText(dst, legend, r.X+r.W-textWidth(legend, sizeSmall)-8, r.Y+3, sizeSmall, colDim)
	label := func(y float64) string {
		if v.lossLog {
			return fmtScore(math.Pow(10, y))
		}
		return fmtScore(y)
	}
	drawText(dst, label(hi), r.X+4, plot.Y-2, sizeSmall, colDim)
	drawText(dst, label(lo), r.X+4, plot.Y+plot.H-12, sizeSmall, colDim)
	drawText(dst, fmt.Sprintf("%g", xmin), plot.X, plot.Y+plot.H+4, sizeSmall, colDim)
	end := fmt.Sprintf("step %g", xmax)
	drawText(dst, end, plot.X+plot.W-textWidth(end, sizeSmall), plot.Y+plot.H+4, sizeSmall, colDim)
}

// followJob streams a job's events; after a dropped connection the poll
// loop starts it again and the history is replayed from the start.
func (a *App) followJob(id string) {
	a.post(func() { a.trainingView.board.Restart(id) })
	err := a.client.FollowJob(a.ctx, id, func(ev shared.JobEvent) {
		a.post(func() {
			if a.trainingView.board.Event(id, ev) {
				if j := a.trainingView.board.Job(id); j != nil {
					a.setStatus(fmt.Sprintf("%s job %s %s", j.Job.Kind, id, ev.State))
				}
			}
		})
	})
	a.post(func() {
		a.trainingView.board.Stopped(id)
		if err != nil {
			a.fail(err)
		}
	})
}

// updateJobs takes the server's job listing and follows what it says to.
func (a *App) updateJobs(jobs []shared.Job) {
	for _, id := range a.trainingView.board.Merge(jobs, a.tab == tabTraining) {
		go a.followJob(id)
	}
}
