// Package trajectory keeps one denoising trajectory as it streams in (a frame
// per sampler step, then the final reconstruction) and the player that walks
// through it: play/pause, step, scrub, and following the newest frame while
// frames arrive. Plain Go, tested on the host.
package trajectory

import (
	"fmt"
	"math"
	"time"

	"github.com/diad-project/diad/shared"
)

// Blob is one payload of a frame with its description.
type Blob struct {
	shared.Blob
	Data []byte
}

// Step is one arrived step.
type Step struct {
	Index, T int
	Score    float64
	Blobs    map[string]Blob // latent, x0_latent, image, map
}

// Final is the trajectory's result.
type Final struct {
	Score     float64
	Threshold float64
	Anomalous bool
	Blobs     map[string]Blob // map, reconstruction
}

// Trajectory is a request's stream of frames.
type Trajectory struct {
	Request shared.DenoiseRequest
	ID      string // the server's trajectory key
	Total   int
	StartT  int // the noise level of the input (from the frames; 0 = not yet)
	// Guidance is the variant the frames say they belong to
	// (shared.GuidanceSG or GuidanceNone; "" before the first).
	Guidance string
	// Signal is sqrt(abar_t) every ScheduleStride timesteps (and the last),
	// from the first step or the final frame; nil until one came.
	Signal         []float32
	ScheduleStride int
	Steps          []*Step // len Total once the first frame came; nil = not yet
	Final          *Final
	Received       int
	Dropped        int // frames the server skipped for this client
	Started        time.Time
	Done           time.Time
}

// New is an empty trajectory for a request.
func New(r shared.DenoiseRequest, now time.Time) *Trajectory {
	return &Trajectory{Request: r, Started: now}
}

func blobs(f shared.Frame, data [][]byte) map[string]Blob {
	m := make(map[string]Blob, len(f.Blobs))
	for i, b := range f.Blobs {
		m[b.Name] = Blob{Blob: b, Data: data[i]}
	}
	return m
}

// Add stores a frame. Frames of another trajectory, or out of range, are
// errors (the caller shows them; they never corrupt the stored steps).
func (t *Trajectory) Add(f shared.Frame, data [][]byte, now time.Time) error {
	if t.ID == "" {
		t.ID = f.Trajectory
	} else if f.Trajectory != t.ID {
		return fmt.Errorf("trajectory: frame of %q in %q", f.Trajectory, t.ID)
	}
	if f.Total <= 0 || f.Total > 1000 {
		return fmt.Errorf("trajectory: frame with %d steps", f.Total)
	}
	if t.Steps == nil {
		t.Total = f.Total
		t.Steps = make([]*Step, f.Total)
	} else if f.Total != t.Total {
		return fmt.Errorf("trajectory: frame says %d steps, earlier ones %d", f.Total, t.Total)
	}
	t.Dropped = max(t.Dropped, f.Dropped)
	if f.StartT > 0 {
		t.StartT = f.StartT
	}
	if f.Guidance != "" {
		t.Guidance = f.Guidance
	}
	if len(f.Signal) > 0 && f.ScheduleStride > 0 {
		t.Signal, t.ScheduleStride = f.Signal, f.ScheduleStride
	}
	switch f.Type {
	case shared.TypeStep:
		if f.Step < 0 || f.Step >= t.Total {
			return fmt.Errorf("trajectory: step %d of %d", f.Step, t.Total)
		}
		if t.Steps[f.Step] == nil {
			t.Received++
		}
		t.Steps[f.Step] = &Step{Index: f.Step, T: f.T, Score: f.Score, Blobs: blobs(f, data)}
	case shared.TypeFinal:
		t.Final = &Final{Score: f.Score, Threshold: f.Threshold, Anomalous: f.Anomalous, Blobs: blobs(f, data)}
		t.Done = now
	default:
		return fmt.Errorf("trajectory: frame type %q", f.Type)
	}
	return nil
}

// Complete reports whether every step and the final frame arrived.
func (t *Trajectory) Complete() bool { return t.Final != nil && t.Received == t.Total }

// Latest is the highest step index that arrived, or -1.
func (t *Trajectory) Latest() int {
	for i := len(t.Steps) - 1; i >= 0; i-- {
		if t.Steps[i] != nil {
			return i
		}
	}
	return -1
}

// Scores are the per-step scores, NaN where a step has not arrived.
func (t *Trajectory) Scores() []float64 {
	out := make([]float64, t.Total)
	for i, s := range t.Steps {
		out[i] = math.NaN()
		if s != nil {
			out[i] = s.Score
		}
	}
	return out
}

// Player walks through a trajectory's steps.
type Player struct {
	Cursor  int  // shown step
	Playing bool // advancing by itself
	// Follow keeps the cursor on the newest frame while the stream runs
	// (frames are drawn as they arrive); any manual move turns it off.
	Follow bool
	// StepTime is how long a step is shown while playing.
	StepTime time.Duration
	acc      time.Duration
}

// NewPlayer follows the stream, showing each step for stepTime when played.
func NewPlayer(stepTime time.Duration) *Player {
	return &Player{Follow: true, StepTime: stepTime}
}

// Toggle plays or pauses; playing from the last step starts over.
func (p *Player) Toggle(t *Trajectory) {
	p.Follow = false
	if p.Playing {
		p.Playing = false
		return
	}
	if p.Cursor >= t.Total-1 {
		p.Cursor = 0
	}
	p.Playing, p.acc = true, 0
}

// Seek shows step i (clamped to the arrived range) and pauses.
func (p *Player) Seek(t *Trajectory, i int) {
	p.Follow, p.Playing = false, false
	p.Cursor = min(max(i, 0), max(t.Latest(), 0))
}

// StepBy moves by d steps and pauses.
func (p *Player) StepBy(t *Trajectory, d int) { p.Seek(t, p.Cursor+d) }

// Advance moves time forward by dt: following jumps to the newest frame;
// playing moves a step per StepTime, waiting at a step that has not arrived
// yet and stopping at the last one.
func (p *Player) Advance(t *Trajectory, dt time.Duration) {
	if p.Follow {
		p.Cursor = max(t.Latest(), 0)
		return
	}
	if !p.Playing {
		return
	}
	p.acc += dt
	for p.acc >= p.StepTime {
		p.acc -= p.StepTime
		next := p.Cursor + 1
		if next >= t.Total {
			p.Playing = false
			return
		}
		if t.Steps[next] == nil {
			p.acc = 0 // wait for the frame
			return
		}
		p.Cursor = next
	}
	if p.Cursor >= t.Total-1 && t.Final != nil {
		p.Playing = false
	}
}

// SignalAt is sqrt(abar_t), the share of the clean latent in z_t,
// interpolated from the schedule the server sent (ok false before it came).
func (t *Trajectory) SignalAt(step int) (signal float64, ok bool) {
	if len(t.Signal) < 2 || t.ScheduleStride <= 0 || step < 0 {
		return 0, false
	}
	x := float64(step) / float64(t.ScheduleStride)
	i := int(x)
	if i >= len(t.Signal)-1 {
		return float64(t.Signal[len(t.Signal)-1]), true
	}
	f := x - float64(i)
	return float64(t.Signal[i])*(1-f) + float64(t.Signal[i+1])*f, true
}

// NearestLevel is the arrived step whose noise level is nearest that of
// timestep tt, or -1 when none arrived: how a second trajectory with other
// timesteps (another sampler or step count) follows the first one's
// cursor. Levels compare by sqrt(abar_t) when the schedule came, by t
// otherwise; a tie goes to the earlier (noisier) step.
func (t *Trajectory) NearestLevel(tt int) int {
	level := func(ts int) float64 {
		if s, ok := t.SignalAt(ts); ok {
			return s
		}
		return -float64(ts)
	}
	want := level(tt)
	best, bestD := -1, math.Inf(1)
	for i, s := range t.Steps {
		if s == nil {
			continue
		}
		if d := math.Abs(level(s.T) - want); d < bestD {
			best, bestD = i, d
		}
	}
	return best
}
