//go:build js && wasm

package ui

import (
	"fmt"
	"time"

	"github.com/hajimehoshi/ebiten/v2"

	"github.com/diad-project/diad/frontend-wasm/trajectory"
	"github.com/diad-project/diad/shared"
)

// compareMode is a second trajectory the explorer can show beside the
// first: the same image, seed and start level with one thing changed.
type compareMode struct {
	name  string // the hook's name of the mode
	label string // the button's
	// side names the second trajectory in panel titles; first names the
	// explorer's own for contrast; what says in words what changed.
	first, side, what string
	// apply changes the explorer's request into the comparison's.
	apply func(r *shared.DenoiseRequest)
}

// compareModes are offered in this order by the compare button (v); the
// first is off.
var compareModes = []compareMode{
	{name: "", label: "compare: off"},
	{name: "no_sg", label: "vs SG network off", first: "SG on", side: "SG off", what: "the SG network switched off", apply: func(r *shared.DenoiseRequest) { r.Guidance = shared.GuidanceNone }},
	{name: "ddpm50", label: "vs DDPM 50 steps", first: "as set", side: "DDPM 50", what: "DDPM's ancestral sampling in 50 steps", apply: withSampler(shared.SamplerDDPM, 50)},
	{name: "dpm10", label: "vs DPM-Solver++ 10", first: "as set", side: "DPM++ 10", what: "DPM-Solver++(2M) in 10 steps", apply: withSampler(shared.SamplerDPMSolver, 10)},
	{name: "ddim10", label: "vs DDIM 10 steps", first: "as set", side: "DDIM 10", what: "DDIM in 10 steps", apply: withSampler(shared.SamplerDDIM, 10)},
}

// withSampler sets a sampler and step count (eta 0: only DDIM takes one).
func withSampler(kind string, steps int) func(r *shared.DenoiseRequest) {
	return func(r *shared.DenoiseRequest) {
		zero := 0.0
		r.Sampler, r.Steps, r.Eta = kind, steps, &zero
	}
}

// compareProducts are what the second trajectory streams: what its panels
// show.
var compareProducts = []string{shared.ProductImage, shared.ProductMap}

// comparison is the second trajectory and its pictures.
type comparison struct {
	mode   int // index into compareModes; 0 = off
	traj   *trajectory.Trajectory
	tex    map[string]*ebiten.Image // "step:<i>:image", "final:reconstruction"
	maps   map[int][]float32
	failed string
}

func (c *comparison) free() {
	if c == nil {
		return
	}
	for k, t := range c.tex {
		t.Deallocate()
		delete(c.tex, k)
	}
}

// cursor is the comparison's step at the noise level of the explorer's
// cursor, or -1 before one arrived.
func (e *explorer) compareCursor() int {
	c := e.cmp
	if c == nil || c.traj == nil || e.traj == nil || e.player == nil {
		return -1
	}
	i := e.player.Cursor
	if i < 0 || i >= len(e.traj.Steps) || e.traj.Steps[i] == nil {
		return c.traj.Latest() // nothing to sync to yet
	}
	return c.traj.NearestLevel(e.traj.Steps[i].T)
}

// compareRequest is the explorer's request changed by the comparison mode,
// at the explorer's start level once the frames told it (a run's sampler
// may have had explicit timesteps, which a step count drops).
func (e *explorer) compareRequest(mode compareMode) shared.DenoiseRequest {
	r := e.request()
	r.Products = compareProducts
	if r.StartT == 0 && e.traj != nil && e.traj.StartT > 0 {
		r.StartT = e.traj.StartT
	}
	mode.apply(&r)
	return r
}

// setCompare switches the comparison to mode (0: off) and requests it.
func (e *explorer) setCompare(a *App, mode int) {
	e.cmp.free()
	e.cmp = nil
	if mode <= 0 || mode >= len(compareModes) {
		return
	}
	e.cmp = &comparison{mode: mode}
	e.startCompare(a)
}

// cycleCompare moves to the next comparison mode (after the last: off).
func (e *explorer) cycleCompare(a *App) {
	mode := 0
	if e.cmp != nil {
		mode = e.cmp.mode
	}
	e.setCompare(a, (mode+1)%len(compareModes))
}

// startCompare requests a comparison not yet requested, once the explorer's
// own trajectory has said its start level (the comparison starts there).
func (e *explorer) startCompare(a *App) {
	c := e.cmp
	if c == nil || c.traj != nil || e.traj == nil || e.traj.StartT == 0 {
		return
	}
	r := e.compareRequest(compareModes[c.mode])
	c.traj, c.tex, c.maps = trajectory.New(r, time.Now()), map[string]*ebiten.Image{}, map[int][]float32{}
	a.requestComparison(r)
}

// onCompareFrame stores a frame of the comparison and decodes its picture.
func (a *App) onCompareFrame(f shared.Frame, blobs [][]byte) {
	e := a.explorerView.exp
	if e == nil || e.cmp == nil || e.cmp.traj == nil {
		return
	}
	c := e.cmp
	if c.traj.ID != "" && f.Trajectory != c.traj.ID {
		return // an older comparison's frames
	}
	if err := c.traj.Add(f, blobs, time.Now()); err != nil {
		a.fail(err)
		return
	}
	traj := c.traj
	current := func() bool { return a.explorerView.exp == e && e.cmp == c && c.traj == traj }
	set := func(key string) func(img *ebiten.Image) {
		return func(img *ebiten.Image) {
			if old := c.tex[key]; old != nil {
				old.Deallocate()
			}
			c.tex[key] = img
		}
	}
	if f.Type == shared.TypeFinal {
		if b, ok := c.traj.Final.Blobs[shared.BlobReconstruction]; ok {
			a.decodeTexture("comparison reconstruction", b.Data, regionLive, current, set("final:reconstruction"))
		}
		return
	}
	if b, ok := c.traj.Steps[f.Step].Blobs[shared.ProductImage]; ok {
		key := fmt.Sprintf("step:%d:%s", f.Step, shared.ProductImage)
		a.decodeTexture(key, b.Data, regionLive, current, set(key))
	}
}

// stepMap is the comparison's dequantized map of step i (nil: none).
func (c *comparison) stepMap(i int) ([]float32, int, int) {
	if c == nil {
		return nil, 0, 0
	}
	return stepMapOf(c.traj, c.maps, i)
}

// nearestTex is the comparison's picture of step i or the nearest earlier
// one that has arrived and decoded (and which step that is).
func (c *comparison) nearestTex(step int) (*ebiten.Image, int) {
	for k := step; k >= 0; k-- {
		if t := c.tex[fmt.Sprintf("step:%d:%s", k, shared.ProductImage)]; t != nil {
			return t, k
		}
	}
	return nil, step
}

// drawCompareRow replaces the step row while comparing: the predicted image
// and the step map of the explorer's trajectory at the cursor, then the
// comparison's at the same noise level.
func (a *App) drawCompareRow(dst *ebiten.Image, r rect, step int) {
	e := a.explorerView.exp
	c := e.cmp
	mode := compareModes[c.mode]
	cols := r.columns(4, 8)
	// The explorer's own trajectory.
	tA := ""
	if step >= 0 && e.traj != nil && step < len(e.traj.Steps) && e.traj.Steps[step] != nil {
		tA = fmt.Sprintf(" · t=%d", e.traj.Steps[step].T)
	}
	p := panel(dst, a.caption(dst, cols[0], "this step's predicted image"), "Predicted image ("+mode.first+")"+tA)
	if t, shown := e.nearestTex(step, shared.ProductImage); t != nil {
		a.mark("compare:a:image", drawImageFit(dst, t, p, ebiten.FilterLinear))
		decoding(dst, p, shown, step)
	} else {
		placeholder(dst, p, e.waiting())
	}
	p = panel(dst, a.caption(dst, cols[1], "its anomaly map against the input"), "Step map ("+mode.first+")")
	if v, w, h, k := nearestMap(e.stepMap, step); v != nil {
		t := a.heatTexture(e, fmt.Sprintf("step%d", k), v, w, h, false)
		a.mark("compare:a:map", drawImageFit(dst, t, p, ebiten.FilterLinear))
		drawText(dst, "score "+fmtScore(e.traj.Steps[k].Score), p.X+4, p.Y+p.H-16, sizeSmall, colText)
	} else {
		placeholder(dst, p, "–")
	}
	// The comparison at the same noise level.
	cs := e.compareCursor()
	tB := ""
	if cs >= 0 {
		tB = fmt.Sprintf(" · t=%d", c.traj.Steps[cs].T)
	}
	waiting := "loading…"
	if c.failed != "" {
		waiting = "no result: " + c.failed
	}
	p = panel(dst, a.caption(dst, cols[2], "the same image, seed and start level, with "+mode.what), "Predicted image ("+mode.side+")"+tB)
	if t, shown := c.nearestTex(cs); t != nil {
		a.mark("compare:b:image", drawImageFit(dst, t, p, ebiten.FilterLinear))
		decoding(dst, p, shown, cs)
	} else {
		placeholder(dst, p, waiting)
	}
	p = panel(dst, a.caption(dst, cols[3], "its anomaly map against the input"), "Step map ("+mode.side+")")
	if v, w, h, k := nearestMap(c.stepMap, cs); v != nil {
		t := a.heatTexture(e, fmt.Sprintf("cmp%d:%d", c.mode, k), v, w, h, false)
		a.mark("compare:b:map", drawImageFit(dst, t, p, ebiten.FilterLinear))
		drawText(dst, fmt.Sprintf("step %d/%d · score %s", k+1, c.traj.Total, fmtScore(c.traj.Steps[k].Score)), p.X+4, p.Y+p.H-16, sizeSmall, colText)
	} else {
		placeholder(dst, p, "–")
	}
}

// decoding says, under a panel that shows an earlier step's picture while
// the wanted one decodes, which step is on screen.
func decoding(dst *ebiten.Image, p rect, shown, want int) {
	if shown != want {
		drawText(dst, fmt.Sprintf("step %d (step %d decoding)", shown+1, want+1), p.X+4, p.Y+p.H-16, sizeSmall, colDim)
	}
}

// nearestMap is the map of step or of the nearest earlier step that has
// one, and that step.
func nearestMap(get func(int) ([]float32, int, int), step int) ([]float32, int, int, int) {
	for k := step; k >= 0; k-- {
		if v, w, h := get(k); v != nil {
			return v, w, h, k
		}
	}
	return nil, 0, 0, -1
}
