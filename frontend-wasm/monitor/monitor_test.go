package monitor

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/diad-project/diad/shared"
)

func job(id, state string, created int) shared.Job {
	return shared.Job{ID: id, Kind: shared.JobTrain, State: state, Created: time.Unix(int64(created), 0)}
}

func TestMergeOrdersFollowsAndShowsTheNewest(t *testing.T) {
	b := NewBoard()
	follow := b.Merge([]shared.Job{job("old", shared.JobSucceeded, 1), job("new", shared.JobRunning, 2)}, false)
	if !slices.Equal(follow, []string{"new"}) {
		t.Fatalf("follow %v, want the running job only", follow)
	}
	if !slices.Equal(b.Order(), []string{"new", "old"}) || b.Shown() != "new" {
		t.Fatalf("order %v, shown %q", b.Order(), b.Shown())
	}
	// A newer job takes the monitor until the user picks one.
	b.Merge([]shared.Job{job("newer", shared.JobQueued, 3)}, false)
	if b.Shown() != "newer" || b.Active().ID != "newer" {
		t.Fatalf("shown %q, active %v", b.Shown(), b.Active())
	}
	b.Pick("old")
	b.Merge([]shared.Job{job("newest", shared.JobQueued, 4)}, false)
	if b.Shown() != "old" {
		t.Fatalf("a listing moved the picked job: shown %q", b.Shown())
	}
	// The finished job shown is streamed once, on screen only.
	if follow := b.Merge(nil, true); len(follow) != 0 {
		t.Fatalf("follow %v with no listing", follow)
	}
	if follow := b.Merge([]shared.Job{job("old", shared.JobSucceeded, 1)}, true); !slices.Equal(follow, []string{"old"}) {
		t.Fatalf("follow %v, want the finished job shown", follow)
	}
	b.Stopped("old")
	if follow := b.Merge([]shared.Job{job("old", shared.JobSucceeded, 1)}, true); len(follow) != 0 {
		t.Fatalf("the finished job's history is streamed again: %v", follow)
	}
	if _, ok := b.FollowShown(); ok {
		t.Fatal("FollowShown after the history was loaded")
	}
}

func TestFollowShown(t *testing.T) {
	b := NewBoard()
	if _, ok := b.FollowShown(); ok {
		t.Fatal("FollowShown on an empty board")
	}
	b.Merge([]shared.Job{job("done", shared.JobFailed, 1)}, false)
	id, ok := b.FollowShown()
	if !ok || id != "done" || !b.Job("done").Following {
		t.Fatalf("FollowShown %q %v", id, ok)
	}
	if _, ok := b.FollowShown(); ok {
		t.Fatal("FollowShown twice")
	}
}

func TestEventsBuildTheSeries(t *testing.T) {
	b := NewBoard()
	b.Merge([]shared.Job{job("j", shared.JobRunning, 1)}, false)
	// The listing does not overwrite what the stream said while it runs.
	b.Event("j", shared.JobEvent{Kind: shared.EventStep, JobProgress: shared.JobProgress{Stage: "ae", Step: 1, Total: 4, Loss: 2}})
	b.Merge([]shared.Job{job("j", shared.JobRunning, 1)}, false)
	if p := b.Job("j").Job.Progress; p.Step != 1 || p.Total != 4 {
		t.Fatalf("progress %+v after a listing", p)
	}
	b.Event("j", shared.JobEvent{Kind: shared.EventStep, JobProgress: shared.JobProgress{Stage: "ae", Step: 2, Total: 4, Loss: 1}})
	b.Event("j", shared.JobEvent{Kind: shared.EventValidation, JobProgress: shared.JobProgress{Stage: "ae", Step: 2, ValLoss: 1.5}})
	b.Event("j", shared.JobEvent{Kind: shared.EventStep, JobProgress: shared.JobProgress{Stage: "unet", Step: 1, Total: 4, Loss: 0.5}})
	b.Event("j", shared.JobEvent{Kind: shared.EventStep, JobProgress: shared.JobProgress{Stage: "unet", Step: 2}})
	v := b.Job("j")
	if v.Events != 5 || len(v.Loss) != 3 || len(v.Val) != 1 {
		t.Fatalf("%d events, %d losses, %d validations", v.Events, len(v.Loss), len(v.Val))
	}
	if got := Stages(v.Loss); !slices.Equal(got, []string{"ae", "unet"}) {
		t.Fatalf("stages %v", got)
	}
	stages, by := Series(v.Loss)
	if !slices.Equal(stages, []string{"ae", "unet"}) || len(by["ae"]) != 2 || by["unet"][0] != (Point{1, 0.5, "unet"}) {
		t.Fatalf("series %v %v", stages, by)
	}
	if b.Event("j", shared.JobEvent{Kind: shared.EventCheckpoint, State: shared.JobRunning}) {
		t.Fatal("a checkpoint finished the job")
	}
	if !b.Event("j", shared.JobEvent{Kind: shared.EventDone, State: shared.JobSucceeded, Message: "max_steps"}) || b.Job("j").Job.State != shared.JobSucceeded {
		t.Fatal("done did not finish the job")
	}
	if b.Event("missing", shared.JobEvent{Kind: shared.EventDone}) {
		t.Fatal("an event of an unlisted job counted")
	}
	b.Restart("j")
	if v := b.Job("j"); v.Events != 0 || v.Loss != nil || v.Messages != nil {
		t.Fatalf("restart kept %+v", v)
	}
}

func TestMessagesKeepTheNewest(t *testing.T) {
	b := NewBoard()
	b.Merge([]shared.Job{job("j", shared.JobRunning, 1)}, false)
	for i := range MaxMessages + 5 {
		b.Event("j", shared.JobEvent{Kind: "log", Message: fmt.Sprint(i)})
	}
	m := b.Job("j").Messages
	if len(m) != MaxMessages || m[len(m)-1][len(m[len(m)-1])-3:] != fmt.Sprint(MaxMessages+4) {
		t.Fatalf("%d messages, last %q", len(m), m[len(m)-1])
	}
}

func TestEMA(t *testing.T) {
	pts := []Point{{0, 1, ""}, {1, 3, ""}, {2, 3, ""}}
	if got := EMA(pts, 0); !slices.Equal(got, pts) {
		t.Fatalf("EMA with weight 0 changed the series: %v", got)
	}
	got := EMA(pts, 0.5)
	want := []float64{1, 2, 2.5}
	for i := range got {
		if got[i].Y != want[i] || got[i].X != pts[i].X {
			t.Fatalf("EMA %v, want y %v", got, want)
		}
	}
}
