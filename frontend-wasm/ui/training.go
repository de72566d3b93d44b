//go:build js && wasm

package ui

import (
	"fmt"
	"math"
	"time"

	"image/color"

	"github.com/hajimehoshi/ebiten/v2"

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

func (a *App) drawTraining(dst *ebiten.Image, r rect) {
	if len(a.jobOrder) == 0 {
		placeholder(dst, r, "no jobs yet: start one with `diad` or POST /api/v1/jobs; they appear here live")
		return
	}
	list, detail := r.cutLeft(min(320, r.W*0.35), 10)
	in := panel(dst, list, "Jobs")
	y := in.Y
	for _, id := range a.jobOrder {
		if y+46 > in.Y+in.H {
			break
		}
		j := a.jobs[id]
		row := rect{in.X, y, in.W, 42}
		bg := colRaised
		if id == a.selJob {
			bg = colBorder
		}
		fill(dst, row, bg)
		c := jobColor(j.job.State)
		col := rgba(c)
		fill(dst, rect{row.X, row.Y, 4, row.H}, col)
		drawBold(dst, j.job.Kind, row.X+10, row.Y+4, sizeBody, colText)
		drawText(dst, clip(id, row.W-120, sizeSmall), row.X+60, row.Y+6, sizeSmall, colDim)
		drawText(dst, j.job.State, row.X+row.W-textWidth(j.job.State, sizeSmall)-6, row.Y+6, sizeSmall, col)
		progressBar(dst, rect{row.X + 10, row.Y + 26, row.W - 20, 8}, j.job, col)
		id := id
		a.hit("job:"+id, row, func() { a.selJob, a.selJobPicked = id, true })
		y += 46
	}
	j := a.jobs[a.selJob]
	if j == nil {
		return
	}
	din := panel(dst, detail, fmt.Sprintf("%s job %s", j.job.Kind, j.job.ID))
	p := j.job.Progress
	head := fmt.Sprintf("%s · %s · step %d / %d", j.job.State, p.Stage, p.Step, p.Total)
	if p.ImagesPerSec > 0 {
		head += fmt.Sprintf(" · %.1f images/s", p.ImagesPerSec)
	}
	if p.ETASeconds > 0 && j.job.State == shared.JobRunning {
		head += " · ETA " + (time.Duration(p.ETASeconds) * time.Second).String()
	}
	if j.following {
		head += " · live"
	}
	drawText(dst, clip(head, din.W, sizeBody), din.X, din.Y, sizeBody, colText)
	progressBar(dst, rect{din.X, din.Y + 22, din.W, 10}, j.job, rgba(jobColor(j.job.State)))
	if j.job.Error != "" {
		drawText(dst, clip("error: "+j.job.Error, din.W, sizeBody), din.X, din.Y+40, sizeBody, colError)
	}
	chart, msgs := rect{din.X, din.Y + 60, din.W, din.H - 60}.cutTop((din.H-60)*0.6, 10)
	a.drawLossChart(dst, chart, j)
	my := msgs.Y
	drawText(dst, fmt.Sprintf("%d events", j.events), msgs.X, my, sizeSmall, colDim)
	my += 18
	start := max(0, len(j.messages)-int((msgs.H-18)/16))
	for _, m := range j.messages[start:] {
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

func (a *App) drawLossChart(dst *ebiten.Image, r rect, j *jobView) {
	fill(dst, r, colBG)
	stroke(dst, r, 1, colBorder)
	a.mark("losschart", r)
	if len(j.loss) == 0 && len(j.val) == 0 {
		msg := "loss curve: waiting for training steps"
		if j.job.Kind != shared.JobTrain {
			msg = "a " + j.job.Kind + " job reports progress only (no loss curve)"
		}
		drawTextIn(dst, msg, r, sizeSmall, colDim)
		return
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	xmin, xmax := math.Inf(1), math.Inf(-1)
	for _, s := range [][]point{j.loss, j.val} {
		for _, p := range s {
			lo, hi = math.Min(lo, p.y), math.Max(hi, p.y)
			xmin, xmax = math.Min(xmin, p.x), math.Max(xmax, p.x)
		}
	}
	if xmax <= xmin {
		xmax = xmin + 1
	}
	if hi <= lo {
		hi = lo + 1
	}
	plot := r.inset(10)
	pos := func(p point) (float32, float32) {
		return plot.X + plot.W*float32((p.x-xmin)/(xmax-xmin)), plot.Y + plot.H*(1-float32((p.y-lo)/(hi-lo)))
	}
	for i := 1; i < len(j.loss); i++ {
		x0, y0 := pos(j.loss[i-1])
		x1, y1 := pos(j.loss[i])
		line(dst, x0, y0, x1, y1, 1.5, colAccent)
	}
	for _, p := range j.val {
		x, y := pos(p)
		fill(dst, rect{x - 4, y - 4, 8, 8}, colAnomaly)
	}
	drawText(dst, "train loss", plot.X+plot.W-150, plot.Y, sizeSmall, colAccent)
	drawText(dst, "validation", plot.X+plot.W-70, plot.Y, sizeSmall, colAnomaly)
	drawText(dst, fmtScore(hi), plot.X, plot.Y, sizeSmall, colDim)
	drawText(dst, fmtScore(lo), plot.X, plot.Y+plot.H-14, sizeSmall, colDim)
	steps := fmt.Sprintf("steps %g-%g", xmin, xmax)
	drawText(dst, steps, plot.X+plot.W-textWidth(steps, sizeSmall), plot.Y+plot.H-14, sizeSmall, colDim)
}
