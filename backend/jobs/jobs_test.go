package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/backend/stream"
	"github.com/diad-project/diad/shared"
)

func waitState(t *testing.T, r *Runner, id, state string) shared.Job {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		j, err := r.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if j.State == state {
			return j
		}
		if j.State == shared.JobFailed || j.State == shared.JobCancelled || j.State == shared.JobSucceeded {
			t.Fatalf("job %s ended %s, want %s: %s", id, j.State, state, j.Error)
		}
		time.Sleep(5 * time.Millisecond)
	}
	j := get(t, r, id)
	t.Fatalf("job %s is %s, want %s", id, j.State, state)
	return j
}

// The helpers below fail the test when a step it builds on fails, so that it
// never goes on with a zero value.
func get(t *testing.T, r *Runner, id string) shared.Job {
	t.Helper()
	j, err := r.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func submit(t *testing.T, r *Runner, kind string, params map[string]any) shared.Job {
	t.Helper()
	j, err := r.Submit(kind, params)
	if err != nil {
		t.Fatalf("submit %s: %v", kind, err)
	}
	return j
}

func cancel(t *testing.T, r *Runner, id string) {
	t.Helper()
	if _, err := r.Cancel(id); err != nil {
		t.Fatalf("cancel %s: %v", id, err)
	}
}

func open(t *testing.T, dir string, funcs map[string]Func) *Runner {
	t.Helper()
	r, err := Open(dir, funcs, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// closeAtEnd closes r when the test ends and fails it if closing fails.
func closeAtEnd(t *testing.T, r *Runner) {
	t.Cleanup(func() {
		if err := r.Close(context.Background()); err != nil {
			t.Errorf("close runner: %v", err)
		}
	})
}

func closeNow(t *testing.T, r *Runner) {
	t.Helper()
	if err := r.Close(context.Background()); err != nil {
		t.Fatalf("close runner: %v", err)
	}
}

func TestRunCancelFailAndEvents(t *testing.T) {
	block := make(chan struct{})
	funcs := map[string]Func{
		"ok": func(ctx context.Context, j shared.Job, report func(shared.JobEvent)) (Output, error) {
			for i := 1; i <= 3; i++ {
				report(shared.JobEvent{Kind: "step", JobProgress: shared.JobProgress{Step: i, Total: 3}})
			}
			return Output{RunID: "r1"}, nil
		},
		"block": func(ctx context.Context, j shared.Job, report func(shared.JobEvent)) (Output, error) {
			select {
			case <-ctx.Done():
				return Output{}, ctx.Err()
			case <-block:
				return Output{}, nil
			}
		},
		"fail": func(context.Context, shared.Job, func(shared.JobEvent)) (Output, error) {
			return Output{}, errors.New("boom")
		},
		"panic": func(context.Context, shared.Job, func(shared.JobEvent)) (Output, error) { panic("oops") },
	}
	r := open(t, t.TempDir(), funcs)
	closeAtEnd(t, r)
	j := submit(t, r, "ok", map[string]any{"a": 1})
	sub, err := r.Subscribe(j.ID)
	if err != nil {
		t.Fatal(err)
	}
	done := waitState(t, r, j.ID, shared.JobSucceeded)
	if done.RunID != "r1" || done.Progress.Step != 3 {
		t.Fatalf("job %+v", done)
	}
	var kinds []string
	for {
		m, ok := sub.Next(nil)
		if !ok {
			break
		}
		var ev shared.JobEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("event %q: %v", m.Data, err)
		}
		kinds = append(kinds, ev.Kind+":"+ev.State)
	}
	if len(kinds) != 5 || kinds[4] != "state:"+shared.JobSucceeded {
		t.Fatalf("events %v", kinds)
	}
	b := submit(t, r, "block", nil)
	q := submit(t, r, "ok", nil) // queued behind the blocking job
	waitState(t, r, b.ID, shared.JobRunning)
	if j := get(t, r, q.ID); j.State != shared.JobQueued {
		t.Fatalf("second job %s while the first runs", j.State)
	}
	cancel(t, r, q.ID)
	cancel(t, r, b.ID)
	waitState(t, r, b.ID, shared.JobCancelled)
	waitState(t, r, q.ID, shared.JobCancelled)
	f := submit(t, r, "fail", nil)
	if j := waitState(t, r, f.ID, shared.JobFailed); j.Error != "boom" {
		t.Fatalf("failed job %+v", j)
	}
	p := submit(t, r, "panic", nil)
	waitState(t, r, p.ID, shared.JobFailed)
	if _, err := r.Submit("nope", nil); err == nil {
		t.Fatal("unknown kind accepted")
	}
	if _, err := r.Get("j-x"); !errors.Is(err, ErrNotFound) {
		t.Fatal("unknown id found")
	}
	close(block)
}

func TestRestartReportsTruthfully(t *testing.T) {
	dir := t.TempDir()
	started := make(chan struct{}, 1)
	funcs := map[string]Func{"block": func(ctx context.Context, j shared.Job, _ func(shared.JobEvent)) (Output, error) {
		started <- struct{}{}
		<-ctx.Done()
		return Output{}, ctx.Err()
	}}
	r := open(t, dir, funcs)
	running := submit(t, r, "block", nil)
	<-started
	queued := submit(t, r, "block", nil)
	// Simulate a crash: the records on disk say running and queued; the
	// process dies without Close (we only stop its worker to free the test).
	raw := filetest.Read(t, filepath.Join(dir, running.ID+".json"))
	rawQ := filetest.Read(t, filepath.Join(dir, queued.ID+".json"))
	closeNow(t, r)
	filetest.Write(t, filepath.Join(dir, running.ID+".json"), raw)
	filetest.Write(t, filepath.Join(dir, queued.ID+".json"), rawQ)

	r2 := open(t, dir, funcs)
	closeAtEnd(t, r2)
	j := get(t, r2, running.ID)
	if j.State != shared.JobFailed || j.Error == "" {
		t.Fatalf("interrupted job after restart: %+v", j)
	}
	<-started // the queued job runs after the restart
	waitState(t, r2, queued.ID, shared.JobRunning)
	// Corrupt records are refused with the file named.
	filetest.Write(t, filepath.Join(dir, "j-20260101T000000-deadbeef.json"), []byte("{"))
	if _, err := Open(dir, funcs, nil); err == nil {
		t.Fatal("corrupt record accepted")
	}
}

// events drains a subscriber: kind:state of each event, in order.
func events(t *testing.T, r *Runner, id string) []string {
	t.Helper()
	sub, err := r.Subscribe(id)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var out []string
	for {
		m, ok := sub.Next(nil)
		if !ok {
			return out
		}
		var ev shared.JobEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("event %q: %v", m.Data, err)
		}
		out = append(out, fmt.Sprintf("%s:%s:%d", ev.Kind, ev.State, ev.Step))
	}
}

func TestRestartReplaysEvents(t *testing.T) {
	dir := t.TempDir()
	started := make(chan struct{}, 1)
	funcs := map[string]Func{
		"steps": func(ctx context.Context, j shared.Job, report func(shared.JobEvent)) (Output, error) {
			for i := 1; i <= 5; i++ {
				report(shared.JobEvent{Kind: "step", JobProgress: shared.JobProgress{Step: i, Loss: 1 / float64(i)}})
			}
			return Output{}, nil
		},
		"crash": func(ctx context.Context, j shared.Job, report func(shared.JobEvent)) (Output, error) {
			report(shared.JobEvent{Kind: "step", JobProgress: shared.JobProgress{Step: 1}})
			report(shared.JobEvent{Kind: "step", JobProgress: shared.JobProgress{Step: 2}})
			started <- struct{}{}
			<-ctx.Done()
			return Output{}, ctx.Err()
		},
	}
	r := open(t, dir, funcs)
	done := submit(t, r, "steps", nil)
	waitState(t, r, done.ID, shared.JobSucceeded)
	live := events(t, r, done.ID)
	crashed := submit(t, r, "crash", nil)
	<-started
	raw := filetest.Read(t, filepath.Join(dir, crashed.ID+".json"))
	closeNow(t, r)
	// The crash: the record still says running, and the log ends in a line
	// cut short.
	filetest.Write(t, filepath.Join(dir, crashed.ID+".json"), raw)
	f, err := os.OpenFile(filepath.Join(dir, crashed.ID+".events.jsonl"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"type":"job","kind":"step","st`); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}

	r2 := open(t, dir, funcs)
	closeAtEnd(t, r2)
	want := []string{"state:running:0", "step:running:1", "step:running:2", "step:running:3", "step:running:4", "step:running:5", "state:succeeded:5"}
	if got := events(t, r2, done.ID); fmt.Sprint(got) != fmt.Sprint(want) || fmt.Sprint(live) != fmt.Sprint(want) {
		t.Fatalf("finished job's events after restart %v, live %v, want %v", got, live, want)
	}
	// The interrupted job replays its steps, and its record takes the last
	// step from the log (the record itself is saved at most once a second).
	want = []string{"state:running:0", "step:running:1", "step:running:2", "state:failed:2"}
	if got := events(t, r2, crashed.ID); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("interrupted job's events after restart %v, want %v", got, want)
	}
	if j := get(t, r2, crashed.ID); j.Progress.Step != 2 {
		t.Fatalf("interrupted job's progress after restart: step %d, want 2", j.Progress.Step)
	}
}

func TestReplayReadsOnlyTheLogsTail(t *testing.T) {
	path := filepath.Join(t.TempDir(), "j.events.jsonl")
	line := `{"type":"job","kind":"step","pad":"` + strings.Repeat("x", 1000) + `"}` + "\n"
	n := eventTailBytes/len(line) + 100
	filetest.Write(t, path, []byte(strings.Repeat(line, n)))
	hub := stream.NewHub(1, n, nil)
	if _, err := replayEvents(path, hub); err != nil {
		t.Fatal(err)
	}
	hub.Publish(stream.Message{Data: []byte(`{}`), Final: true})
	sub := hub.Subscribe()
	defer sub.Close()
	got := 0
	for {
		m, ok := sub.Next(nil)
		if !ok || m.Final {
			break
		}
		if !json.Valid(m.Data) {
			t.Fatalf("replayed a broken line %q", m.Data[:40])
		}
		got++
	}
	// Whole lines within the tail: the first, cut, one is skipped.
	if want := eventTailBytes / len(line); got != want {
		t.Fatalf("replayed %d events, want %d (the tail's whole lines)", got, want)
	}
}

// TestNonFiniteProgressIsRecorded: a diverged loss (NaN) or an infinite ETA
// must not make events empty or the job record unsavable - JSON has no NaN.
func TestNonFiniteProgressIsRecorded(t *testing.T) {
	nan := func(ctx context.Context, j shared.Job, report func(shared.JobEvent)) (Output, error) {
		report(shared.JobEvent{Kind: "step", JobProgress: shared.JobProgress{Step: 7, Total: 9, Loss: math.NaN(), ETASeconds: math.Inf(1)}})
		return Output{}, errors.New("loss diverged")
	}
	dir := t.TempDir()
	r, err := Open(dir, map[string]Func{"nan": nan}, nil)
	if err != nil {
		t.Fatal(err)
	}
	j, err := r.Submit("nan", nil)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := r.Subscribe(j.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, r, j.ID, shared.JobFailed)
	var steps []shared.JobEvent
	for {
		m, ok := sub.Next(nil)
		if !ok {
			break
		}
		var ev shared.JobEvent
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatalf("event %q: %v", m.Data, err)
		}
		if ev.Kind == "step" {
			steps = append(steps, ev)
		}
	}
	if len(steps) != 1 || steps[0].Step != 7 || steps[0].Loss != 0 || steps[0].ETASeconds != 0 {
		t.Fatalf("step events %+v, want one at step 7 with the non-finite numbers zeroed", steps)
	}
	if err := r.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The record on disk holds the progress the job reached.
	r2, err := Open(dir, map[string]Func{"nan": nan}, nil)
	if err != nil {
		t.Fatal(err)
	}
	closeAtEnd(t, r2)
	got, err := r2.Get(j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != shared.JobFailed || got.Progress.Step != 7 || got.Error != "loss diverged" {
		t.Fatalf("reopened record %+v", got)
	}
}

// A listener hears each state a job passes through - queued, running,
// and its end - including a cancel while queued.
func TestOnChangeHearsEveryState(t *testing.T) {
	release := make(chan struct{})
	funcs := map[string]Func{"wait": func(context.Context, shared.Job, func(shared.JobEvent)) (Output, error) {
		<-release
		return Output{RunID: "r1"}, nil
	}}
	r := open(t, t.TempDir(), funcs)
	closeAtEnd(t, r)
	heard := make(chan shared.Job, 16)
	r.OnChange(func(j shared.Job) { heard <- j })
	first, err := r.Submit("wait", nil)
	if err != nil {
		t.Fatal(err)
	}
	second, err := r.Submit("wait", nil)
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, r, first.ID, shared.JobRunning)
	if _, err := r.Cancel(second.ID); err != nil {
		t.Fatal(err)
	}
	close(release)
	waitState(t, r, first.ID, shared.JobSucceeded)
	want := map[string]bool{first.ID + " queued": true, first.ID + " running": true, first.ID + " succeeded": true,
		second.ID + " queued": true, second.ID + " cancelled": true}
	deadline := time.After(10 * time.Second)
	for len(want) > 0 {
		select {
		case j := <-heard:
			delete(want, j.ID+" "+j.State)
			if j.State == shared.JobSucceeded && j.RunID != "r1" {
				t.Errorf("the end state carries run %q", j.RunID)
			}
		case <-deadline:
			t.Fatalf("not heard: %v", want)
		}
	}
}
