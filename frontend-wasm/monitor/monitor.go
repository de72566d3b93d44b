// Package monitor is the training monitor's model in the browser client: the
// jobs the server lists, newest first, each with what its event stream has
// told (progress, loss and validation points per training stage, messages),
// which of them are followed live, and the one the monitor shows. It holds
// no pictures and starts no connections: the client asks it which jobs to
// follow and hands it their events, so it is tested here without a browser.
package monitor

import (
	"slices"
	"sort"

	"github.com/diad-project/diad/frontend-wasm/api"
	"github.com/diad-project/diad/shared"
)

// MaxMessages is how many of a job's messages are kept (the newest).
const MaxMessages = 200

// Point is one loss value: X the step, Stage the training stage it belongs
// to (each stage is its own series: their steps restart and their losses
// differ in scale).
type Point struct {
	X, Y  float64
	Stage string
}

// Job is a job as the monitor follows it.
type Job struct {
	Job       shared.Job
	Loss, Val []Point // training and validation losses
	Events    int
	Messages  []string
	// Following: an event stream is open; Loaded: its history was asked
	// for once (a finished job replays it only when shown).
	Following, Loaded bool
}

// Board is the jobs listed, newest first, and the one shown.
type Board struct {
	jobs  map[string]*Job
	order []string
	shown string
	// picked: the user chose the job shown (else the newest is shown).
	picked bool
}

// NewBoard is an empty board.
func NewBoard() *Board { return &Board{jobs: map[string]*Job{}} }

// Merge takes the server's listing. It returns the jobs to follow now:
// active ones, and the job shown when it is finished and its history was
// never loaded and the monitor is on screen (showing).
func (b *Board) Merge(jobs []shared.Job, showing bool) (follow []string) {
	for _, j := range jobs {
		v, ok := b.jobs[j.ID]
		if !ok {
			v = &Job{}
			b.jobs[j.ID] = v
			b.order = append(b.order, j.ID)
		}
		// The event stream is fresher than the listing while it runs.
		if !v.Following || j.State != shared.JobRunning {
			v.Job = j
		}
		active := !api.JobEnded(j.State)
		if !v.Following && (active || (j.ID == b.shown && !v.Loaded && showing)) {
			v.Following, v.Loaded = true, true
			follow = append(follow, j.ID)
		}
	}
	sort.SliceStable(b.order, func(x, y int) bool { return b.jobs[b.order[x]].Job.Created.After(b.jobs[b.order[y]].Job.Created) })
	if !b.picked && len(b.order) > 0 {
		b.shown = b.order[0]
	}
	return follow
}

// FollowShown reports whether the job shown is finished and its history
// was never loaded; it is then marked followed, and the caller streams it.
func (b *Board) FollowShown() (id string, ok bool) {
	v := b.jobs[b.shown]
	if v == nil || v.Following || v.Loaded {
		return "", false
	}
	v.Following, v.Loaded = true, true
	return b.shown, true
}

// Restart clears what a job's stream told before it is streamed again
// from the start (after a dropped connection the history is replayed).
func (b *Board) Restart(id string) {
	if v := b.jobs[id]; v != nil {
		v.Loss, v.Val, v.Events, v.Messages = nil, nil, 0, nil
	}
}

// Stopped marks a job's stream closed (the next listing may follow it again).
func (b *Board) Stopped(id string) {
	if v := b.jobs[id]; v != nil {
		v.Following = false
	}
}

// Event applies one event of job id's stream. It reports whether the
// event ends the job with success (the client says so in its status line).
func (b *Board) Event(id string, ev shared.JobEvent) (finished bool) {
	v := b.jobs[id]
	if v == nil {
		return false
	}
	v.Events++
	if ev.State != "" {
		v.Job.State = ev.State
	}
	if ev.Total > 0 {
		v.Job.Progress = ev.JobProgress
	}
	switch ev.Kind {
	case shared.EventStep:
		if ev.Loss != 0 {
			v.Loss = append(v.Loss, Point{float64(ev.Step), ev.Loss, ev.Stage})
		}
	case shared.EventValidation:
		v.Val = append(v.Val, Point{float64(ev.Step), ev.ValLoss, ev.Stage})
	}
	if ev.Message != "" {
		v.Messages = append(v.Messages, ev.Time.Format("15:04:05")+"  "+ev.Kind+": "+ev.Message)
		if len(v.Messages) > MaxMessages {
			v.Messages = v.Messages[len(v.Messages)-MaxMessages:]
		}
	}
	return ev.Kind == shared.EventDone || ev.State == shared.JobSucceeded
}

// Order is the jobs' ids, newest first.
func (b *Board) Order() []string { return b.order }

// Job is job id (nil: not listed).
func (b *Board) Job(id string) *Job { return b.jobs[id] }

// Shown is the id of the job the monitor shows ("" while none is listed).
func (b *Board) Shown() string { return b.shown }

// Pick shows job id from now on, whatever is listed later.
func (b *Board) Pick(id string) { b.shown, b.picked = id, true }

// Active is the newest job still queued or running (nil: none).
func (b *Board) Active() *shared.Job {
	for _, id := range b.order {
		if j := b.jobs[id]; j.Job.State == shared.JobRunning || j.Job.State == shared.JobQueued {
			return &j.Job
		}
	}
	return nil
}

// Series groups points by training stage, in the order the stages ran.
func Series(pts []Point) (stages []string, by map[string][]Point) {
	by = map[string][]Point{}
	for _, p := range pts {
		if _, seen := by[p.Stage]; !seen {
			stages = append(stages, p.Stage)
		}
		by[p.Stage] = append(by[p.Stage], p)
	}
	return stages, by
}

// Stages names the training stages of pts, in the order they ran.
func Stages(pts []Point) []string {
	var stages []string
	for _, p := range pts {
		if !slices.Contains(stages, p.Stage) {
			stages = append(stages, p.Stage)
		}
	}
	return stages
}

// Smoothings are the loss chart's exponential-moving-average weights.
var Smoothings = []float64{0, 0.6, 0.9, 0.98}

// EMA smooths a series as training dashboards do (weight w on the past).
func EMA(pts []Point, w float64) []Point {
	if w <= 0 || len(pts) == 0 {
		return pts
	}
	out := make([]Point, len(pts))
	acc := pts[0].Y
	for i, p := range pts {
		acc = w*acc + (1-w)*p.Y
		out[i] = Point{p.X, acc, p.Stage}
	}
	return out
}
