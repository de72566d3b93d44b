// Package jobs runs training, test and predict jobs one at a time per device,
// in a queue, and keeps each job's record on disk (written atomically at every
// state change) so that a restarted server reports every job truthfully:
// queued jobs are queued again, and a job that was running when the server
// stopped is marked failed with that reason (its outputs are atomic files, so
// none is half-written; a training job can be resumed from its checkpoint).
// A job's events are also appended to a log next to its record, so that a
// restarted server still replays a finished job's loss curve.
package jobs

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/diad-project/diad/backend/atomicfile"
	"github.com/diad-project/diad/backend/stream"
	"github.com/diad-project/diad/shared"
)

// Func runs one job. It reports progress through report and returns the
// job's outputs (model path, run id) or an error. It must return promptly
// when ctx is cancelled.
type Func func(ctx context.Context, job shared.Job, report func(shared.JobEvent)) (Output, error)

// Output is what a finished job produced.
type Output struct {
	Model string
	RunID string
}

// ErrNotFound is returned for unknown job ids.
var ErrNotFound = errors.New("jobs: no such job")

// jobHistory is how many of a job's latest events a late subscriber (a
// browser that reconnects, or opens a finished job) replays.
const jobHistory = 4096

// eventTailBytes bounds how much of a job's event log a restart reads: the
// tail that holds its latest jobHistory events (a few hundred bytes each).
const eventTailBytes = 4 << 20

// ErrClosed is returned when the runner no longer accepts jobs.
var ErrClosed = errors.New("jobs: shutting down")

var idPattern = regexp.MustCompile(`^j-[0-9]{8}T[0-9]{6}-[0-9a-f]{8}$`)

// ValidID reports whether id has the runner's form.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// Runner owns the queue and the records.
type Runner struct {
	dir   string
	funcs map[string]Func
	stats *stream.Stats

	mu      sync.Mutex
	jobs    map[string]*entry
	queue   []string
	wake    chan struct{}
	closed  bool
	running string
	done    chan struct{}
	// onChange hears every change of a job's state (see OnChange).
	onChange func(shared.Job)
}

type entry struct {
	job    shared.Job
	cancel context.CancelFunc
	hub    *stream.Hub
}

// Open loads the records in dir, re-queues queued jobs, marks interrupted
// running jobs failed, and starts the worker.
func Open(dir string, funcs map[string]Func, stats *stream.Stats) (*Runner, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("jobs: %w", err)
	}
	r := &Runner{dir: dir, funcs: funcs, stats: stats, jobs: map[string]*entry{}, wake: make(chan struct{}, 1), done: make(chan struct{})}
	files, err := filepath.Glob(filepath.Join(dir, "j-*.json"))
	if err != nil {
		return nil, err
	}
	var queued []shared.Job
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("jobs: %w", err)
		}
		var j shared.Job
		if err := json.Unmarshal(b, &j); err != nil || !ValidID(j.ID) {
			return nil, fmt.Errorf("jobs: corrupt record %s: %v", f, err)
		}
		e := &entry{job: j, hub: stream.NewHub(64, jobHistory, stats)}
		if j.State == shared.JobQueued {
			queued = append(queued, j)
			r.jobs[j.ID] = e
			continue
		}
		// The log is a convenience (the record is the truth): a damaged or
		// unreadable one replays what it can.
		last, err := replayEvents(r.eventsPath(j.ID), e.hub)
		if err != nil {
			slog.Warn("jobs: event log replayed in part", "job", j.ID, "err", err)
		}
		if j.State == shared.JobRunning {
			now := time.Now().UTC()
			e.job.State, e.job.Error, e.job.Finished = shared.JobFailed, "the server stopped while the job was running", &now
			// The record's progress is saved at most once a second; the log
			// has the last step the job reached.
			if last != nil && last.Kind != shared.EventState && last.Step >= e.job.Progress.Step {
				e.job.Progress = last.JobProgress
			}
			if err := r.save(e.job); err != nil {
				return nil, err
			}
		}
		e.hub.Publish(stream.Message{Data: stateEvent(e.job), Final: true})
		r.jobs[j.ID] = e
	}
	sort.Slice(queued, func(a, b int) bool { return queued[a].Created.Before(queued[b].Created) })
	for _, j := range queued {
		r.queue = append(r.queue, j.ID)
	}
	go r.work()
	r.signal()
	return r, nil
}

// eventsPath is the job's event log: one JSON event per line.
func (r *Runner) eventsPath(id string) string { return filepath.Join(r.dir, id+".events.jsonl") }

// replayEvents publishes the latest events of a job's log to its hub and
// returns the last one (nil if none). A line cut short by a crash is skipped.
func replayEvents(path string, hub *stream.Hub) (*shared.JobEvent, error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil, err
	}
	offset := max(0, info.Size()-eventTailBytes)
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, err
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	partial := offset > 0 // the tail starts inside a line
	var last []byte
	for sc.Scan() {
		if partial {
			partial = false
			continue
		}
		if line := sc.Bytes(); json.Valid(line) {
			last = bytes.Clone(line)
			hub.Publish(stream.Message{Data: last})
		}
	}
	if last == nil {
		return nil, sc.Err()
	}
	var ev shared.JobEvent
	if err := json.Unmarshal(last, &ev); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &ev, sc.Err()
}

func stateEvent(j shared.Job) []byte {
	return encodeEvent(shared.JobEvent{Type: shared.TypeJobEvent, Job: j.ID, Kind: shared.EventState, Time: time.Now().UTC(), State: j.State, JobProgress: j.Progress, Message: j.Error})
}

// encodeEvent is ev as JSON. Its numbers are made finite first (a diverged
// loss is NaN, which JSON cannot hold); nothing else in an event can fail to
// encode, but should it, subscribers get the event without its progress.
func encodeEvent(ev shared.JobEvent) []byte {
	ev.JobProgress = ev.JobProgress.Finite()
	b, err := json.Marshal(ev)
	if err != nil {
		slog.Error("jobs: event not encoded", "job", ev.Job, "kind", ev.Kind, "err", err)
		return fmt.Appendf(nil, `{"type":%q,"job":%q,"kind":%q,"state":%q}`, ev.Type, ev.Job, ev.Kind, ev.State)
	}
	return b
}

func (r *Runner) save(j shared.Job) error {
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(filepath.Join(r.dir, j.ID+".json"), b)
}

// saveOrWarn saves a running job's record; a record that cannot be written
// (a full or broken disk) is reported in the log and the job goes on: the
// next save or the final one may still succeed.
func (r *Runner) saveOrWarn(j shared.Job) {
	if err := r.save(j); err != nil {
		slog.Warn("jobs: record not saved", "job", j.ID, "state", j.State, "err", err)
	}
}

// OnChange registers f to hear every change of a job's state: queued,
// running, and its end. f runs on its own goroutine, so it may call back
// into the runner.
func (r *Runner) OnChange(f func(shared.Job)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.onChange = f
}

// changed tells the registered listener (r.mu held).
func (r *Runner) changed(j shared.Job) {
	if f := r.onChange; f != nil {
		go f(j)
	}
}

func (r *Runner) signal() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// Submit queues a job.
func (r *Runner) Submit(kind string, config map[string]any) (shared.Job, error) {
	if _, ok := r.funcs[kind]; !ok {
		return shared.Job{}, fmt.Errorf("jobs: unknown kind %q", kind)
	}
	b := make([]byte, 4)
	rand.Read(b)
	now := time.Now().UTC()
	j := shared.Job{ID: "j-" + now.Format("20060102T150405") + "-" + hex.EncodeToString(b), Kind: kind, State: shared.JobQueued, Config: config, Created: now}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return shared.Job{}, ErrClosed
	}
	if err := r.save(j); err != nil {
		return shared.Job{}, err
	}
	r.jobs[j.ID] = &entry{job: j, hub: stream.NewHub(64, jobHistory, r.stats)}
	r.queue = append(r.queue, j.ID)
	r.changed(j)
	r.signal()
	return j, nil
}

// Get returns a job's record.
func (r *Runner) Get(id string) (shared.Job, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.jobs[id]
	if !ok {
		return shared.Job{}, ErrNotFound
	}
	return e.job, nil
}

// List returns all jobs, newest first.
func (r *Runner) List() []shared.Job {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]shared.Job, 0, len(r.jobs))
	for _, e := range r.jobs {
		out = append(out, e.job)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Created.After(out[b].Created) })
	return out
}

// Counts returns the number of jobs per state and the queue length.
func (r *Runner) Counts() (map[string]int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := map[string]int{}
	for _, e := range r.jobs {
		c[e.job.State]++
	}
	return c, len(r.queue)
}

// Subscribe follows a job's events (the final one is its end state).
func (r *Runner) Subscribe(id string) (*stream.Subscriber, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.jobs[id]
	if !ok {
		return nil, ErrNotFound
	}
	return e.hub.Subscribe(), nil
}

// Cancel stops a queued or running job.
func (r *Runner) Cancel(id string) (shared.Job, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.jobs[id]
	if !ok {
		return shared.Job{}, ErrNotFound
	}
	switch e.job.State {
	case shared.JobQueued:
		for i, q := range r.queue {
			if q == id {
				r.queue = append(r.queue[:i], r.queue[i+1:]...)
				break
			}
		}
		now := time.Now().UTC()
		e.job.State, e.job.Finished = shared.JobCancelled, &now
		if err := r.save(e.job); err != nil {
			return e.job, err
		}
		e.hub.Publish(stream.Message{Data: stateEvent(e.job), Final: true})
		r.changed(e.job)
	case shared.JobRunning:
		e.cancel() // the worker records the end state
	}
	return e.job, nil
}

func (r *Runner) work() {
	defer close(r.done)
	for {
		id, e, ctx, ok := r.next()
		if !ok {
			return
		}
		r.runJob(ctx, id, e)
	}
}

// next waits for a queued job and marks it running; ok is false when the
// runner closed.
func (r *Runner) next() (id string, e *entry, ctx context.Context, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.queue) == 0 && !r.closed {
		r.mu.Unlock()
		<-r.wake
		r.mu.Lock()
	}
	if r.closed {
		return "", nil, nil, false
	}
	id = r.queue[0]
	r.queue = r.queue[1:]
	e = r.jobs[id]
	ctx, e.cancel = context.WithCancel(context.Background())
	now := time.Now().UTC()
	e.job.State, e.job.Started = shared.JobRunning, &now
	r.running = id
	r.saveOrWarn(e.job)
	r.changed(e.job)
	return id, e, ctx, true
}

// runJob runs one job, streaming and logging its events, and records how it
// ended.
func (r *Runner) runJob(ctx context.Context, id string, e *entry) {
	r.mu.Lock()
	job := e.job
	r.mu.Unlock()
	start := stateEvent(job)
	e.hub.Publish(stream.Message{Data: start})
	log := openEventLog(r.eventsPath(id), id)
	log.write(start)
	lastSave := time.Now()
	report := func(ev shared.JobEvent) {
		ev.Type, ev.Job, ev.Time, ev.State = shared.TypeJobEvent, id, time.Now().UTC(), shared.JobRunning
		b := encodeEvent(ev)
		e.hub.Publish(stream.Message{Data: b})
		log.write(b)
		r.mu.Lock()
		e.job.Progress = ev.JobProgress.Finite()
		if time.Since(lastSave) > time.Second {
			r.saveOrWarn(e.job)
			lastSave = time.Now()
		}
		r.mu.Unlock()
	}
	out, err := r.run(ctx, job, report)
	cancelled := ctx.Err() != nil
	e.cancel()
	log.close()

	r.mu.Lock()
	end := time.Now().UTC()
	e.job.Finished = &end
	e.job.Model, e.job.RunID = out.Model, out.RunID
	switch {
	case cancelled:
		e.job.State, e.job.Error = shared.JobCancelled, "cancelled"
		if r.closed {
			e.job.Error = "cancelled: the server shut down"
		}
	case err != nil:
		e.job.State, e.job.Error = shared.JobFailed, err.Error()
	default:
		e.job.State = shared.JobSucceeded
	}
	r.running = ""
	r.saveOrWarn(e.job)
	final := e.job
	r.changed(final)
	r.mu.Unlock()
	e.hub.Publish(stream.Message{Data: stateEvent(final), Final: true})
}

// eventLog is a job's event log, a line per event. Losing it loses only the
// replay after a restart, never the job, so a log that cannot be written is
// skipped (with a warning).
type eventLog struct {
	f   *os.File // nil: not logging
	job string
}

func openEventLog(path, job string) *eventLog {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		slog.Warn("jobs: event log not opened; this job's events are not logged", "job", job, "err", err)
		f = nil
	}
	return &eventLog{f: f, job: job}
}

// write appends one event: a copy of b (which is published) with a newline,
// in one write, so that a crash cuts at most the last line.
func (l *eventLog) write(b []byte) {
	if l.f == nil {
		return
	}
	if _, err := l.f.Write(append(b[:len(b):len(b)], '\n')); err != nil {
		slog.Warn("jobs: event log not written; the rest of this job's events are not logged", "job", l.job, "err", err)
		l.close()
	}
}

func (l *eventLog) close() {
	if l.f == nil {
		return
	}
	if err := l.f.Close(); err != nil {
		slog.Warn("jobs: event log", "job", l.job, "err", err)
	}
	l.f = nil
}

// run calls the job's function, turning a panic into a failure. (Tensor code
// recovers at torchrt.Do inside the job functions; this catches the rest, so
// that one bad job never ends the server. jobs stays free of libtorch.)
func (r *Runner) run(ctx context.Context, job shared.Job, report func(shared.JobEvent)) (out Output, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("job panicked: %v", p)
		}
	}()
	return r.funcs[job.Kind](ctx, job, report)
}

// Close stops accepting jobs, cancels the running one, waits for it to record
// its end state, and leaves queued jobs queued (they run after a restart).
func (r *Runner) Close(ctx context.Context) error {
	r.mu.Lock()
	r.closed = true
	if e, ok := r.jobs[r.running]; ok && e.cancel != nil {
		e.cancel()
	}
	r.mu.Unlock()
	r.signal()
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
