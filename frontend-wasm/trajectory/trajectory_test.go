package trajectory

import (
	"math"
	"testing"
	"time"

	"github.com/diad-project/diad/shared"
)

func frame(step, total int) (shared.Frame, [][]byte) {
	return shared.Frame{Type: shared.TypeStep, Trajectory: "k", Step: step, Total: total, T: 400 - 40*step, Score: float64(step),
		Blobs: []shared.Blob{{Name: "image", Format: "png"}}}, [][]byte{{byte(step)}}
}

func TestFramesArriveOutOfOrderAndComplete(t *testing.T) {
	now := time.Unix(0, 0)
	tr := New(shared.DenoiseRequest{}, now)
	for _, s := range []int{0, 2, 1} {
		f, d := frame(s, 3)
		if err := tr.Add(f, d, now); err != nil {
			t.Fatal(err)
		}
	}
	if tr.Complete() || tr.Received != 3 || tr.Latest() != 2 || tr.Steps[1].Blobs["image"].Data[0] != 1 {
		t.Fatalf("after 3 steps: %+v", tr)
	}
	if err := tr.Add(shared.Frame{Type: shared.TypeFinal, Trajectory: "k", Step: 3, Total: 3, Score: 7}, nil, now); err != nil {
		t.Fatal(err)
	}
	if !tr.Complete() || tr.Final.Score != 7 {
		t.Fatal("final not stored")
	}
	if s := tr.Scores(); s[2] != 2 {
		t.Fatalf("scores %v", s)
	}
	bad := []shared.Frame{
		{Type: shared.TypeStep, Trajectory: "other", Total: 3},
		{Type: shared.TypeStep, Trajectory: "k", Step: 3, Total: 3},
		{Type: shared.TypeStep, Trajectory: "k", Step: 0, Total: 4},
		{Type: "what", Trajectory: "k", Total: 3},
	}
	for _, f := range bad {
		if err := tr.Add(f, nil, now); err == nil {
			t.Errorf("accepted %+v", f)
		}
	}
	if tr.Received != 3 {
		t.Fatal("a bad frame changed the trajectory")
	}
}

func TestPlayerFollowsThenPlaysToTheEnd(t *testing.T) {
	tr := New(shared.DenoiseRequest{}, time.Now())
	p := NewPlayer(100 * time.Millisecond)
	f, d := frame(0, 4)
	add(t, tr, f, d)
	f, d = frame(1, 4)
	add(t, tr, f, d)
	p.Advance(tr, 16*time.Millisecond)
	if p.Cursor != 1 {
		t.Fatalf("following: cursor %d", p.Cursor)
	}
	p.Seek(tr, 0)
	p.Toggle(tr)
	p.Advance(tr, 250*time.Millisecond) // 2.5 steps, but only step 1 has arrived
	if p.Cursor != 1 || !p.Playing {
		t.Fatalf("waiting for frames: cursor %d playing %v", p.Cursor, p.Playing)
	}
	for s := 2; s < 4; s++ {
		f, d := frame(s, 4)
		add(t, tr, f, d)
	}
	add(t, tr, shared.Frame{Type: shared.TypeFinal, Trajectory: "k", Total: 4}, nil)
	for i := 0; i < 10 && p.Playing; i++ {
		p.Advance(tr, 100*time.Millisecond)
	}
	if p.Cursor != 3 || p.Playing {
		t.Fatalf("end: cursor %d playing %v", p.Cursor, p.Playing)
	}
	p.Toggle(tr) // play again from the start
	if p.Cursor != 0 || !p.Playing {
		t.Fatalf("replay: cursor %d", p.Cursor)
	}
	p.StepBy(tr, -5)
	if p.Cursor != 0 || p.Playing {
		t.Fatal("step back past the start")
	}
	p.StepBy(tr, 2)
	if p.Cursor != 2 {
		t.Fatalf("step forward: %d", p.Cursor)
	}
}

// The noise level the frames report is the trajectory's "noise t0", not
// the first step's timestep below it.
func TestStartLevelComesFromTheFrames(t *testing.T) {
	now := time.Now()
	tr := New(shared.DenoiseRequest{}, now)
	f, data := frame(0, 3)
	f.StartT = 450
	if err := tr.Add(f, data, now); err != nil {
		t.Fatal(err)
	}
	if tr.StartT != 450 || tr.Steps[0].T == tr.StartT {
		t.Fatalf("start level %d, first step at t = %d", tr.StartT, tr.Steps[0].T)
	}
}

func TestScheduleFromTheFrames(t *testing.T) {
	now := time.Now()
	tr := New(shared.DenoiseRequest{}, now)
	if _, ok := tr.SignalAt(100); ok {
		t.Fatal("a signal before any schedule came")
	}
	f, data := frame(0, 3)
	f.Signal, f.ScheduleStride = []float32{1, 0.8, 0.5, 0.1}, 100 // t = 0, 100, 200, 300
	if err := tr.Add(f, data, now); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		t    int
		want float64
	}{{0, 1}, {100, 0.8}, {150, 0.65}, {300, 0.1}, {999, 0.1}} {
		got, ok := tr.SignalAt(c.t)
		if !ok || math.Abs(got-c.want) > 1e-6 {
			t.Errorf("SignalAt(%d) = %v, %v; want %v", c.t, got, ok, c.want)
		}
	}
	// A later frame without the schedule keeps it.
	g, gdata := frame(1, 3)
	if err := tr.Add(g, gdata, now); err != nil || len(tr.Signal) != 4 {
		t.Fatalf("schedule after a plain frame: %v, %v", tr.Signal, err)
	}
}

// A 10-step trajectory from t = 400 follows a 4-step one by noise level:
// each of the 4-step trajectory's timesteps picks the 10-step one's step
// nearest in sqrt(abar_t) (here a linear schedule, so nearest in t too),
// and steps not yet arrived are never picked.
func TestNearestLevelFollowsAnotherSampler(t *testing.T) {
	now := time.Now()
	ten := New(shared.DenoiseRequest{}, now)
	if ten.NearestLevel(300) != -1 {
		t.Fatal("an empty trajectory picked a step")
	}
	for i := 0; i < 10; i++ {
		f := shared.Frame{Type: shared.TypeStep, Trajectory: "k", Step: i, Total: 10, T: 361 - 40*i}
		if i == 0 { // signal falls linearly from 1 at t = 0 to 0 at t = 1000
			f.ScheduleStride = 500
			f.Signal = []float32{1, 0.5, 0}
		}
		if i == 3 {
			continue // not arrived yet
		}
		if err := ten.Add(f, nil, now); err != nil {
			t.Fatal(err)
		}
	}
	// t of the 10 steps: 361 321 281 (241 missing) 201 161 121 81 41 1.
	for tt, want := range map[int]int{305: 1, 250: 2, 999: 0, 0: 9, 100: 7, 145: 5} {
		if got := ten.NearestLevel(tt); got != want {
			t.Errorf("t %d: step %d (t %d), want step %d (t %d)", tt, got, ten.Steps[max(got, 0)].T, want, ten.Steps[want].T)
		}
	}
	// Without a schedule, t itself decides.
	plain := New(shared.DenoiseRequest{}, now)
	for i := 0; i < 3; i++ {
		if err := plain.Add(shared.Frame{Type: shared.TypeStep, Trajectory: "p", Step: i, Total: 3, T: 300 - 100*i}, nil, now); err != nil {
			t.Fatal(err)
		}
	}
	if got := plain.NearestLevel(140); got != 2 {
		t.Fatalf("t 140 without a schedule: step %d, want 2 (t 100)", got)
	}
	if got := plain.NearestLevel(150); got != 1 {
		t.Fatalf("t 150, as near t 200 as t 100: step %d, want the noisier step 1", got)
	}
}

// add adds a frame the test means to be accepted.
func add(t *testing.T, tr *Trajectory, f shared.Frame, data [][]byte) {
	t.Helper()
	if err := tr.Add(f, data, time.Now()); err != nil {
		t.Fatalf("frame %+v: %v", f, err)
	}
}
