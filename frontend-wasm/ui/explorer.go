//go:build js && wasm

package ui

import (
	"fmt"
	"image"
	"slices"
	"time"

	"github.com/hajimehoshi/ebiten/v2"
	"github.com/hajimehoshi/ebiten/v2/inpututil"

	"github.com/diad-project/diad/backend/visual"
	"github.com/diad-project/diad/frontend-wasm/trajectory"
	"github.com/diad-project/diad/shared"
)

// Sampling control ranges of the explorer (the server accepts start_t
// 0..999 and steps up to 1000; these keep a teaching session responsive).
const (
	t0Min, t0Max, t0Step = 50, 999, 50 // 999: the paper's
	stepsMin, stepsMax   = 1, 100
	overlayAlpha         = 0.65
)

// explorerProducts are what the explorer asks for per step: the default
// previews, plus the raw latents it draws channel by channel.
var explorerProducts = append(slices.Clone(shared.DefaultProducts), shared.ProductRawLatents)

// explorer is the denoising explorer of one image.
type explorer struct {
	image shared.ImageInfo
	run   string
	// An image dropped on the page instead of a run's: its upload id and
	// file, decoded again at the map's size once that is known.
	upload string
	source []byte

	// The stored result of the run: input at map size and its map.
	input     *image.RGBA
	inputTex  *ebiten.Image
	stored    []float32
	mapW      int
	mapH      int
	storedErr bool

	// Live trajectory and its pictures.
	t0, steps int
	seed      uint64
	traj      *trajectory.Trajectory
	player    *trajectory.Player
	tex       map[string]*ebiten.Image
	// decoding holds the tex keys whose PNG is being decoded (or failed
	// to decode: not tried again).
	decoding map[string]bool
	// prefetched: the idle scan found every arrived step's pictures
	// decoded or decoding; a new frame clears it.
	prefetched bool
	maps       map[int][]float32 // dequantized step maps
	heat       map[string]*ebiten.Image
	latents    map[string]rawLatent // "step:<i>:zt" / ":x0"
	latentMax  map[string]float64   // largest step spread (LatentQuantile of |v|) so far, per blob name
	maxCursor  int
	played     int
	// failed is the server's answer when the trajectory could not run
	// (no model loaded, a bad image): shown where its pictures would be.
	failed string
	// cmp is the second trajectory shown beside this one (nil: none).
	cmp *comparison
}

func newExplorer(a *App, im shared.ImageInfo, prev *explorer) *explorer {
	e := &explorer{image: im, run: a.runID, tex: map[string]*ebiten.Image{}, decoding: map[string]bool{}, maps: map[int][]float32{}, heat: map[string]*ebiten.Image{},
		latents: map[string]rawLatent{}, latentMax: map[string]float64{}}
	if prev != nil {
		e.t0, e.steps, e.seed = prev.t0, prev.steps, prev.seed
		if prev.cmp != nil { // the next image is compared the same way
			e.cmp = &comparison{mode: prev.cmp.mode}
		}
	}
	return e
}

// free releases the textures.
func (e *explorer) free() {
	for _, m := range []map[string]*ebiten.Image{e.tex, e.heat} {
		for k, t := range m {
			t.Deallocate()
			delete(m, k)
		}
	}
	if e.inputTex != nil {
		e.inputTex.Deallocate()
	}
	e.cmp.free()
}

// current reports whether results decoded for traj still belong on screen:
// the explorer is open and has not re-run since.
func (e *explorer) current(a *App, traj *trajectory.Trajectory) bool {
	return a.explorerView.exp == e && e.traj == traj
}

// rawLatent is one step's latent as sent: values in [c, h, w] order.
type rawLatent struct {
	values []float32
	shape  []int
}

// setLatent keeps a step's raw latent and widens the trajectory's range to
// the step's spread.
func (e *explorer) setLatent(step int, name string, l rawLatent, spread float64) {
	e.latents[fmt.Sprintf("step:%d:%s", step, name)] = l
	e.latentMax[name] = max(e.latentMax[name], spread)
}

// channelTexture draws a step's latent channel by channel at the
// trajectory's range for that latent (cached with the heatmaps, per range).
func (e *explorer) channelTexture(step int, name string, create bool) (*ebiten.Image, float64) {
	key := fmt.Sprintf("step:%d:%s", step, name)
	l, ok := e.latents[key]
	if !ok {
		return nil, 0
	}
	limit := visual.LatentLimit(e.latentMax[name])
	k := fmt.Sprintf("%s|%g", key, limit)
	if t, ok := e.heat[k]; ok || !create {
		return t, limit
	}
	if len(e.heat) > 48 {
		e.clearHeat()
	}
	t := ebiten.NewImageFromImage(visual.LatentChannels(l.values, l.shape[0], l.shape[1], l.shape[2], limit))
	e.heat[k] = t
	return t, limit
}

// setStored keeps the run's input and map (a grayscale PNG: value = offset +
// q/255*scale).
func (e *explorer) setStored(src, mapImg *image.RGBA, offset, scale float32) {
	b := mapImg.Bounds()
	e.mapW, e.mapH = b.Dx(), b.Dy()
	e.stored = make([]float32, e.mapW*e.mapH)
	for i := range e.stored {
		e.stored[i] = offset + float32(mapImg.Pix[4*i])/255*scale
	}
	e.setInput(src)
}

func (e *explorer) setInput(src *image.RGBA) {
	if e.inputTex != nil {
		e.inputTex.Deallocate()
	}
	e.input = src
	e.inputTex = ebiten.NewImageFromImage(src)
	e.clearHeat()
}

// request is the trajectory the current controls ask for.
func (e *explorer) request() shared.DenoiseRequest {
	if e.upload != "" {
		return shared.DenoiseRequest{UploadID: e.upload, StartT: e.t0, Steps: e.steps, Seed: e.seed, Products: explorerProducts}
	}
	id := e.image.ImageID
	return shared.DenoiseRequest{RunID: e.run, ImageID: &id, StartT: e.t0, Steps: e.steps, Seed: e.seed, Products: explorerProducts}
}

// rerun requests the trajectory with the current controls, and the
// comparison beside it if one is shown.
func (e *explorer) rerun(a *App) {
	r := e.request()
	for k, t := range e.tex {
		t.Deallocate()
		delete(e.tex, k)
	}
	e.maps = map[int][]float32{}
	e.latents, e.latentMax = map[string]rawLatent{}, map[string]float64{}
	e.clearHeat()
	e.traj = trajectory.New(r, time.Now())
	e.prefetched = false
	e.player = trajectory.NewPlayer(a.stepTime())
	e.maxCursor, e.played, e.failed = 0, 0, ""
	a.requestTrajectory(r)
	a.setStatus(fmt.Sprintf("denoising %s (t0 %s, steps %s, seed %d)…", e.name(), orAuto(e.t0), orAuto(e.steps), e.seed))
	if e.cmp != nil {
		// Requested once the first frame says the start level (a
		// comparison must start where this trajectory starts).
		mode := e.cmp.mode
		e.cmp.free()
		e.cmp = &comparison{mode: mode}
	}
}

// stepTimes are the playback speeds the explorer offers (ms per step).
var stepTimes = []time.Duration{180 * time.Millisecond, 400 * time.Millisecond, 1000 * time.Millisecond, 60 * time.Millisecond}

// stepTime is the chosen playback speed (the config's until one is picked).
func (a *App) stepTime() time.Duration {
	if a.explorerView.speed == 0 {
		return a.cfg.StepTime
	}
	return stepTimes[a.explorerView.speed]
}

// nearestTex is the picture key of step, or of the nearest earlier step
// that has one (which step it is, too); nil when none has.
func (e *explorer) nearestTex(step int, key string) (*ebiten.Image, int) {
	for k := step; k >= 0; k-- {
		if t := e.tex[fmt.Sprintf("step:%d:%s", k, key)]; t != nil {
			return t, k
		}
	}
	return nil, step
}

// waiting is what a panel without its picture says: loading, or why
// nothing will come.
func (e *explorer) waiting() string {
	if e.failed != "" {
		return "no result: " + e.failed
	}
	return "loading…"
}

func (e *explorer) name() string {
	if e.upload != "" {
		return "dropped image " + e.image.Path
	}
	return fmt.Sprintf("image %d", e.image.ImageID)
}

func orAuto(v int) string {
	if v == 0 {
		return "auto"
	}
	return fmt.Sprint(v)
}

func (e *explorer) clearHeat() {
	for k, t := range e.heat {
		t.Deallocate()
		delete(e.heat, k)
	}
}

// pictureRegion is the region of the panels that show a step picture of
// the given name: a decoded picture repaints only those.
func pictureRegion(name string) string { return "explorer:picture:" + name }

// stepPictures are a step's PNG pictures. They are decoded when their step
// is shown (and, while the page is idle, the others one by one), not as
// frames arrive: decoding runs on the page's one thread, and while frames
// stream every decode of a step nobody looks at is a frame not drawn.
var stepPictures = []string{shared.ProductLatent, shared.ProductX0Latent, shared.ProductImage}

// decodeShown starts decoding the shown step's pictures, and when nothing
// plays or decodes, those of one more step - after the shown one first,
// then before - so that scrubbing finds them ready.
func (a *App) decodeShown(e *explorer) {
	if e.traj == nil || e.player == nil || e.traj.Steps == nil {
		return
	}
	n := len(e.traj.Steps)
	cur := min(max(e.player.Cursor, 0), n-1)
	a.decodeStep(e, cur)
	if e.player.Playing || a.decodes > 0 || e.prefetched {
		return
	}
	for k := 1; k < n; k++ {
		if (cur+k < n && a.decodeStep(e, cur+k)) || (cur-k >= 0 && a.decodeStep(e, cur-k)) {
			return
		}
	}
	e.prefetched = true // nothing left: no scan each tick until a frame comes
}

// pictured counts the steps whose pictures are all decoded.
func (e *explorer) pictured() int {
	n := 0
	for step := range e.traj.Steps {
		all := true
		for _, name := range stepPictures {
			if e.tex[fmt.Sprintf("step:%d:%s", step, name)] == nil {
				all = false
				break
			}
		}
		if all {
			n++
		}
	}
	return n
}

// decodeStep starts decoding the pictures of step that arrived and are
// neither decoded nor decoding; it reports whether it started any.
func (a *App) decodeStep(e *explorer, step int) bool {
	s := e.traj.Steps[step]
	if s == nil {
		return false
	}
	started := false
	for _, name := range stepPictures {
		key := fmt.Sprintf("step:%d:%s", step, name)
		b, ok := s.Blobs[name]
		if !ok || e.tex[key] != nil || e.decoding[key] {
			continue
		}
		e.decoding[key] = true
		a.decodeInto(e, key, pictureRegion(name), b.Data) // shown in its panels alone
		started = true
	}
	return started
}

// advance moves the player on by dt and reports whether what the explorer
// shows changed (the step, or playing stopped): a step is shown for
// StepTime, so most frames of a playback have nothing new to draw.
func (e *explorer) advance(dt time.Duration) bool {
	before, playing := e.player.Cursor, e.player.Playing
	e.player.Advance(e.traj, dt)
	if playing && e.player.Cursor > before {
		e.played += e.player.Cursor - before
	}
	e.maxCursor = max(e.maxCursor, e.player.Cursor)
	return e.player.Cursor != before || e.player.Playing != playing
}

func (e *explorer) keys(a *App) {
	p, t := e.player, e.traj
	if p == nil {
		return
	}
	switch {
	case inpututil.IsKeyJustPressed(ebiten.KeySpace):
		p.Toggle(t)
	case inpututil.IsKeyJustPressed(ebiten.KeyArrowLeft):
		p.StepBy(t, -1)
	case inpututil.IsKeyJustPressed(ebiten.KeyArrowRight):
		p.StepBy(t, 1)
	case inpututil.IsKeyJustPressed(ebiten.KeyHome):
		p.Seek(t, 0)
	case inpututil.IsKeyJustPressed(ebiten.KeyEnd):
		p.Seek(t, t.Total-1)
	case inpututil.IsKeyJustPressed(ebiten.KeyR):
		e.rerun(a)
	case inpututil.IsKeyJustPressed(ebiten.KeyV):
		e.cycleCompare(a)
	}
}

// threshold is the one the colours of a category's maps are anchored to:
// the tuner's (the category's own, where it has one).
func (a *App) threshold(category string) float64 {
	if a.thresholdView.tune != nil {
		return a.thresholdView.tune.Threshold().For(category)
	}
	return a.run.Threshold.For(category)
}

func (a *App) scaleFor(values []float32, category string) visual.Scale {
	if a.explorerView.scaleMinMax {
		return visual.MinMaxScale(values)
	}
	return visual.ThresholdScale(a.threshold(category))
}

// heatTexture colours a map (over the input when it fits), cached per
// scale so that a threshold change recolours every view.
func (a *App) heatTexture(e *explorer, key string, values []float32, w, h int, overlay bool) *ebiten.Image {
	s := a.scaleFor(values, e.image.Category)
	// The input may arrive after the first map: it is part of the key.
	k := fmt.Sprintf("%s|%v|%v|%g|%g", key, overlay, e.input != nil, s.Lo, s.Hi)
	if t, ok := e.heat[k]; ok || a.painting {
		return t // Draw paints what the layout pass made
	}
	if len(e.heat) > 48 {
		e.clearHeat()
	}
	var img *image.RGBA
	if overlay && e.input != nil && e.input.Bounds().Dx() == w && e.input.Bounds().Dy() == h {
		img = visual.Overlay(e.input, values, s, overlayAlpha)
	} else {
		img = visual.Heatmap(values, w, h, s)
	}
	t := ebiten.NewImageFromImage(img)
	e.heat[k] = t
	return t
}

func (e *explorer) stepMap(i int) ([]float32, int, int) { return stepMapOf(e.traj, e.maps, i) }

// stepMapOf is step i's anomaly map of t, dequantized once into cache (nil
// when the step or its map has not arrived).
func stepMapOf(t *trajectory.Trajectory, cache map[int][]float32, i int) ([]float32, int, int) {
	if t == nil || i < 0 || i >= len(t.Steps) || t.Steps[i] == nil {
		return nil, 0, 0
	}
	b, ok := t.Steps[i].Blobs[shared.ProductMap]
	if !ok {
		return nil, 0, 0
	}
	v, ok := cache[i]
	if !ok {
		v = shared.Dequantize(b.Blob, b.Data)
		cache[i] = v
	}
	return v, b.Width, b.Height
}

// layoutExplorer lays out the explorer on r: the trajectory's panels, its
// controls and charts.
// The layout pass (dst nil) places the widgets and takes the click; the
// painting pass paints them as placed.
func (a *App) layoutExplorer(dst *ebiten.Image, r rect) {
	e := a.explorerView.exp
	if e == nil {
		placeholder(dst, r, "select an image in the gallery (Enter or double click), or drop an image file here, to explore its denoising")
		return
	}
	head, rest := r.cutTop(32, 8)
	a.drawExplorerHeader(dst, head, e)
	// Layout: result row, step row, timeline + chart. Narrow windows get
	// smaller panels; the proportions stay.
	timeH := float32(110)
	panels, timeline := rest.cutTop(rest.H-timeH-8, 8)
	resultH := panels.H * 0.52
	resultRow, stepRow := panels.cutTop(resultH, 8)
	legendW := float32(70)
	resRow, legend := resultRow.cutLeft(resultRow.W-legendW-8, 8)
	cols := resRow.columns(3, 8)
	step := -1
	if e.traj != nil && e.player != nil {
		step = e.player.Cursor
	}
	// What follows the playing step: the reconstruction in progress, the
	// step (or comparison) row, the timeline and its chart.
	a.region(regionLive, cols[1], stepRow, timeline)
	a.region(regionTimeline, timeline)
	if e.cmp != nil { // the comparison row shows this trajectory's pictures too
		for _, name := range stepPictures {
			a.region(pictureRegion(name), cols[1], stepRow)
		}
	}
	a.drawResultRow(dst, cols, legend, step, e)
	if e.cmp != nil {
		a.drawCompareRow(dst, stepRow, step)
		a.drawTimeline(dst, timeline)
		return
	}
	a.drawStepRow(dst, stepRow, cols[1], step, e)
	a.drawTimeline(dst, timeline)
}
