package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

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
		time.Sleep(5 * time.Millisecond)
	}
	j, _ := r.Get(id)
	t.Fatalf("job %s is %s, want %s", id, j.State, state)
	return j
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
	r, err := Open(t.TempDir(), funcs, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background())
	j, _ := r.Submit("ok", map[string]any{"a": 1})
	sub, _ := r.Subscribe(j.ID)
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
		json.Unmarshal(m.Data, &ev)
		kinds = append(kinds, ev.Kind+":"+ev.State)
	}
	if len(kinds) != 5 || kinds[4] != "state:"+shared.JobSucceeded {
		t.Fatalf("events %v", kinds)
	}
	b, _ := r.Submit("block", nil)
	q, _ := r.Submit("ok", nil) // queued behind the blocking job
	waitState(t, r, b.ID, shared.JobRunning)
	if j, _ := r.Get(q.ID); j.State != shared.JobQueued {
		t.Fatalf("second job %s while the first runs", j.State)
	}
	r.Cancel(q.ID)
	r.Cancel(b.ID)
	waitState(t, r, b.ID, shared.JobCancelled)
	waitState(t, r, q.ID, shared.JobCancelled)
	f, _ := r.Submit("fail", nil)
	if j := waitState(t, r, f.ID, shared.JobFailed); j.Error != "boom" {
		t.Fatalf("failed job %+v", j)
	}
	p, _ := r.Submit("panic", nil)
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
	r, _ := Open(dir, funcs, nil)
	running, _ := r.Submit("block", nil)
	<-started
	queued, _ := r.Submit("block", nil)
	// Simulate a crash: the records on disk say running and queued; the
	// process dies without Close (we only stop its worker to free the test).
	raw, _ := os.ReadFile(filepath.Join(dir, running.ID+".json"))
	rawQ, _ := os.ReadFile(filepath.Join(dir, queued.ID+".json"))
	r.Close(context.Background())
	os.WriteFile(filepath.Join(dir, running.ID+".json"), raw, 0o644)
	os.WriteFile(filepath.Join(dir, queued.ID+".json"), rawQ, 0o644)

	r2, err := Open(dir, funcs, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close(context.Background())
	j, _ := r2.Get(running.ID)
	if j.State != shared.JobFailed || j.Error == "" {
		t.Fatalf("interrupted job after restart: %+v", j)
	}
	<-started // the queued job runs after the restart
	waitState(t, r2, queued.ID, shared.JobRunning)
	// Corrupt records are refused with the file named.
	os.WriteFile(filepath.Join(dir, "j-20260101T000000-deadbeef.json"), []byte("{"), 0o644)
	if _, err := Open(dir, funcs, nil); err == nil {
		t.Fatal("corrupt record accepted")
	}
}
