//go:build js && wasm

package ui

import (
	"fmt"
	"math"
	"sort"
	"time"

	"image/color"

	"github.com/hajimehoshi/ebiten/v2"

	"github.com/diad-project/diad/frontend-wasm/api"
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
	head := fmt.Sprintf("%s · %s · step %d", j.job.State, p.Stage, p.Step)
	if p.Total > 0 {
		head += fmt.Sprintf(" / %d", p.Total)
	}
	if p.ImagesPerSec > 0 {
		head += fmt.Sprintf(" · %.1f images/s", p.ImagesPerSec)
	}
	if p.ETASeconds > 0 && j.job.State == shared.JobRunning {
		head += " · stage ETA " + (time.Duration(p.ETASeconds) * time.Second).String()
	}
	if j.following {
		head += " · live"
	}
	drawText(dst, clip(head, din.W, sizeBody), din.X, din.Y, sizeBody, colText)
	progressBar(dst, rect{din.X, din.Y + 22, din.W, 10}, j.job, rgba(jobColor(j.job.State)))
	switch {
	case j.job.Error != "":
		drawText(dst, clip("error: "+j.job.Error, din.W, sizeBody), din.X, din.Y+40, sizeBody, colError)
	case j.job.RunID != "" && j.job.State == shared.JobSucceeded: // a finished test or predict job
		run := j.job.RunID
		a.button(dst, rect{din.X, din.Y + 38, min(din.W, 300), 20}, "job:open-run", "open its run "+run, false, func() {
			a.selectRun(run)
			a.tab = tabGallery
		})
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

// smoothings are the loss chart's exponential-moving-average weights.
var smoothings = []float64{0, 0.6, 0.9, 0.98}

// lossSeries groups a job's points by training stage, in the order the
// stages ran.
func lossSeries(pts []point) (stages []string, by map[string][]point) {
	by = map[string][]point{}
	for _, p := range pts {
		if _, seen := by[p.stage]; !seen {
			stages = append(stages, p.stage)
		}
		by[p.stage] = append(by[p.stage], p)
	}
	return stages, by
}

// ema smooths a series as training dashboards do (weight w on the past).
func ema(pts []point, w float64) []point {
	if w <= 0 || len(pts) == 0 {
		return pts
	}
	out := make([]point, len(pts))
	acc := pts[0].y
	for i, p := range pts {
		acc = w*acc + (1-w)*p.y
		out[i] = point{p.x, acc, p.stage}
	}
	return out
}

// drawLossChart draws one panel per training stage (the autoencoder's and
// the denoiser's losses restart their steps and differ in scale), with the
// controls for log scale and smoothing above them.
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
	bar, body := r.inset(6).cutTop(24, 6)
	scale := "linear"
	if a.lossLog {
		scale = "log"
	}
	a.button(dst, rect{bar.X, bar.Y, 110, 22}, "loss:log", "scale: "+scale, a.lossLog, func() { a.lossLog = !a.lossLog })
	a.button(dst, rect{bar.X + 118, bar.Y, 130, 22}, "loss:smooth", fmt.Sprintf("smoothing %.2f", smoothings[a.lossSmooth]), a.lossSmooth > 0,
		func() { a.lossSmooth = (a.lossSmooth + 1) % len(smoothings) })
	stages, train := lossSeries(j.loss)
	_, val := lossSeries(j.val)
	for st := range val {
		if _, ok := train[st]; !ok {
			stages = append(stages, st)
		}
	}
	h := (body.H - float32(len(stages)-1)*8) / float32(len(stages))
	for i, st := range stages {
		pr := rect{body.X, body.Y + float32(i)*(h+8), body.W, h}
		a.drawLossPanel(dst, pr, st, train[st], val[st])
		a.mark("losschart:"+st, pr)
	}
}

// drawLossPanel is one stage's loss: raw (dim) and smoothed training loss,
// validation points, and the axes' ranges.
func (a *App) drawLossPanel(dst *ebiten.Image, r rect, stage string, train, val []point) {
	stroke(dst, r, 1, colBorder)
	yv := func(v float64) float64 {
		if a.lossLog {
			return math.Log10(math.Max(v, 1e-12))
		}
		return v
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	xmin, xmax := math.Inf(1), math.Inf(-1)
	for _, s := range [][]point{train, val} {
		for _, p := range s {
			lo, hi = math.Min(lo, yv(p.y)), math.Max(hi, yv(p.y))
			xmin, xmax = math.Min(xmin, p.x), math.Max(xmax, p.x)
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
	pos := func(p point) (float32, float32) {
		return plot.X + plot.W*float32((p.x-xmin)/(xmax-xmin)), plot.Y + plot.H*(1-float32((yv(p.y)-lo)/(hi-lo)))
	}
	polyline := func(pts []point, width float32, c color.RGBA) {
		for i := 1; i < len(pts); i++ {
			x0, y0 := pos(pts[i-1])
			x1, y1 := pos(pts[i])
			line(dst, x0, y0, x1, y1, width, c)
		}
	}
	w := smoothings[a.lossSmooth]
	if w > 0 {
		polyline(train, 1, colBorder)
	}
	polyline(ema(train, w), 1.5, colAccent)
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
	label := func(v float64) string {
		if a.lossLog {
			return fmtScore(math.Pow(10, v))
		}
		return fmtScore(v)
	}
	drawText(dst, label(hi), r.X+4, plot.Y-2, sizeSmall, colDim)
	drawText(dst, label(lo), r.X+4, plot.Y+plot.H-12, sizeSmall, colDim)
	drawText(dst, fmt.Sprintf("%g", xmin), plot.X, plot.Y+plot.H+4, sizeSmall, colDim)
	end := fmt.Sprintf("step %g", xmax)
	drawText(dst, end, plot.X+plot.W-textWidth(end, sizeSmall), plot.Y+plot.H+4, sizeSmall, colDim)
}

// jobView is a job as the training monitor follows it.
type jobView struct {
	job       shared.Job
	loss, val []point // (step, loss)
	events    int
	messages  []string
	following bool
	loaded    bool // its history was streamed once (finished jobs)
}

// point is one loss value: x the step, stage the training stage it belongs
// to (each stage is its own series: their steps restart and their losses
// differ in scale).
type point struct {
	x, y  float64
	stage string
}

func (a *App) updateJobs(jobs []shared.Job) {
	for _, j := range jobs {
		v, ok := a.jobs[j.ID]
		if !ok {
			v = &jobView{}
			a.jobs[j.ID] = v
			a.jobOrder = append(a.jobOrder, j.ID)
		}
		// The websocket is fresher than the listing while it runs.
		if !v.following || j.State != shared.JobRunning {
			v.job = j
		}
		// Active jobs are followed live; a finished one replays its
		// history once, when the monitor shows it.
		active := !api.JobEnded(j.State)
		if !v.following && (active || (j.ID == a.selJob && !v.loaded && a.tab == tabTraining)) {
			v.following, v.loaded = true, true
			go a.followJob(j.ID)
		}
	}
	sort.SliceStable(a.jobOrder, func(x, y int) bool { return a.jobs[a.jobOrder[x]].job.Created.After(a.jobs[a.jobOrder[y]].job.Created) })
	// Until the user picks one, the monitor shows the newest job.
	if !a.selJobPicked && len(a.jobOrder) > 0 {
		a.selJob = a.jobOrder[0]
	}
}

// followShownJob replays the events of the job the monitor shows, once,
// when it is finished (running jobs are followed from the listing).
func (a *App) followShownJob() {
	if v := a.jobs[a.selJob]; v != nil && !v.following && !v.loaded {
		v.following, v.loaded = true, true
		go a.followJob(a.selJob)
	}
}

// followJob streams a job's events; after a dropped connection the poll
// loop starts it again and the history is replayed from the start.
func (a *App) followJob(id string) {
	a.post(func() {
		if v := a.jobs[id]; v != nil {
			v.loss, v.val, v.events, v.messages = nil, nil, 0, nil
		}
	})
	err := a.client.FollowJob(a.ctx, id, func(ev shared.JobEvent) {
		a.post(func() { a.onJobEvent(id, ev) })
	})
	a.post(func() {
		if v := a.jobs[id]; v != nil {
			v.following = false
		}
		if err != nil {
			a.fail(err)
		}
	})
}

func (a *App) onJobEvent(id string, ev shared.JobEvent) {
	v := a.jobs[id]
	if v == nil {
		return
	}
	v.events++
	if ev.State != "" {
		v.job.State = ev.State
	}
	if ev.Total > 0 {
		v.job.Progress = ev.JobProgress
	}
	switch ev.Kind {
	case shared.EventStep:
		if ev.Loss != 0 {
			v.loss = append(v.loss, point{float64(ev.Step), ev.Loss, ev.Stage})
		}
	case "validation":
		v.val = append(v.val, point{float64(ev.Step), ev.ValLoss, ev.Stage})
	}
	if ev.Message != "" {
		v.messages = append(v.messages, ev.Time.Format("15:04:05")+"  "+ev.Kind+": "+ev.Message)
		if len(v.messages) > 200 {
			v.messages = v.messages[len(v.messages)-200:]
		}
	}
	if ev.Kind == shared.EventDone || ev.State == shared.JobSucceeded {
		a.setStatus(fmt.Sprintf("%s job %s %s", v.job.Kind, id, ev.State))
	}
}

// stagesOf names the loss chart's series, in order.
func stagesOf(pts []point) []string {
	stages, _ := lossSeries(pts) // the points by stage are not needed here
	return stages
}
