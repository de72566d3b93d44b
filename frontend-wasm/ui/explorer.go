//go:build js && wasm

package ui

import (
	"fmt"
	"image"
	"image/color"
	"math"
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
	return a.exp == e && e.traj == traj
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
	if a.speed == 0 {
		return a.cfg.StepTime
	}
	return stepTimes[a.speed]
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
	if a.tune != nil {
		return a.tune.Threshold().For(category)
	}
	return a.run.Threshold.For(category)
}

func (a *App) scaleFor(values []float32, category string) visual.Scale {
	if a.scaleMinMax {
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

func (a *App) drawExplorer(dst *ebiten.Image, r rect) {
	e := a.exp
	if e == nil {
		placeholder(dst, r, "select an image in the gallery (Enter or double click), or drop an image file here, to explore its denoising")
		return
	}
	// Header: the image and the sampling controls.
	head, rest := r.cutTop(32, 8)
	im := e.image
	gt := "normal"
	if im.GroundTruth == 1 {
		gt = "anomalous (" + im.Defect + ")"
	}
	title := fmt.Sprintf("#%d  %s  ·  ground truth %s  ·  run score %s", im.ImageID, im.Category, gt, fmtScore(im.Score))
	if e.upload != "" {
		title = "dropped image " + im.Path + " (not in a run)"
	}
	x := head.X
	// The title gives way to the controls (~600 px) in a narrow layout
	// (presenter mode).
	tw := min(textWidth(title, sizeBody), head.W*0.45, max(head.W-600, 120))
	drawText(dst, clip(title, tw, sizeBody), x, head.Y+8, sizeBody, colText)
	x += tw + 16
	control := func(name, label, value string, dec, inc func()) {
		lw := textWidth(label, sizeSmall)
		drawText(dst, label, x, head.Y+9, sizeSmall, colDim)
		x += lw + 6
		a.button(dst, rect{x, head.Y + 3, 24, 26}, name+":-", "−", false, dec)
		x += 26
		vw := max(textWidth(value, sizeBody)+12, 40)
		fill(dst, rect{x, head.Y + 3, vw, 26}, colBG)
		drawTextIn(dst, value, rect{x, head.Y + 3, vw, 26}, sizeBody, colText)
		a.mark(name, rect{x, head.Y + 3, vw, 26})
		x += vw + 2
		a.button(dst, rect{x, head.Y + 3, 24, 26}, name+":+", "+", false, inc)
		x += 34
	}
	// "noise t0" is the level the input is noised to (the request's, or the
	// model's default as the frames report it), never the first step's t.
	t0 := e.t0
	if t0 == 0 && e.traj != nil {
		t0 = e.traj.StartT
	}
	steps := e.steps
	if steps == 0 && e.traj != nil {
		steps = e.traj.Total
	}
	control("t0", "noise t0", orAuto(t0), func() { e.t0 = max(t0Min, roundTo(t0, t0Step)-t0Step) }, func() { e.t0 = min(t0Max, roundTo(t0, t0Step)+t0Step) })
	control("steps", "steps", orAuto(steps), func() { e.steps = max(stepsMin, steps-1) }, func() { e.steps = min(stepsMax, steps+1) })
	control("seed", "seed", fmt.Sprint(e.seed), func() {
		if e.seed > 0 {
			e.seed--
		}
	}, func() { e.seed++ })
	a.button(dst, rect{x, head.Y + 3, 90, 26}, "rerun", "Run (r)", false, func() { e.rerun(a) })
	x += 98
	// Switches, shown while they fit.
	toggle := func(name string, w float32, labels [2]string, on *bool) {
		if x+w >= head.X+head.W {
			return
		}
		label := labels[0]
		if *on {
			label = labels[1]
		}
		a.button(dst, rect{x, head.Y + 3, w, 26}, name, label, *on, func() { *on = !*on })
		x += w + 8
	}
	// What to compare this trajectory with (v cycles).
	if cw := float32(170); x+cw < head.X+head.W {
		mode := 0
		if e.cmp != nil {
			mode = e.cmp.mode
		}
		a.button(dst, rect{x, head.Y + 3, cw, 26}, "compare", compareModes[mode].label, mode > 0, func() { e.cycleCompare(a) })
		x += cw + 8
	}
	toggle("scale", 150, [2]string{"colours: threshold", "colours: min-max"}, &a.scaleMinMax)
	toggle("latentview", 140, [2]string{"latent: RGB", "latent: channels"}, &a.latentChannels)

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
	// 1. input
	in := panel(dst, a.caption(dst, cols[0], "the image under test"), "Input")
	if e.inputTex != nil {
		a.mark("explorer:input", drawImageFit(dst, e.inputTex, in, ebiten.FilterLinear))
	} else {
		placeholder(dst, in, e.waiting())
	}
	// 2. reconstruction: the final one, or the step's prediction meanwhile
	rec := panel(dst, a.caption(dst, cols[1], "the last step's image: defects should be gone, the rest kept"), "Reconstruction")
	if t := e.tex["final:reconstruction"]; t != nil {
		a.mark("explorer:reconstruction", drawImageFit(dst, t, rec, ebiten.FilterLinear))
	} else if t := e.tex[fmt.Sprintf("step:%d:%s", step, shared.ProductImage)]; t != nil {
		drawImageFit(dst, t, rec, ebiten.FilterLinear)
		drawText(dst, "in progress", rec.X+4, rec.Y+rec.H-16, sizeSmall, colDim)
	} else {
		placeholder(dst, rec, "waiting for frames…")
	}
	// 3. heatmap overlay: the final map of this trajectory, else the run's
	hm := panel(dst, a.caption(dst, cols[2], "where input and reconstruction differ: the verdict"), "Anomaly map")
	var mapVals []float32
	mw, mh := e.mapW, e.mapH
	if e.traj != nil && e.traj.Final != nil {
		if b, ok := e.traj.Final.Blobs[shared.BlobMap]; ok {
			mapVals, mw, mh = shared.Dequantize(b.Blob, b.Data), b.Width, b.Height
		}
	}
	key := "final"
	if mapVals == nil {
		mapVals, key = e.stored, "stored"
	}
	if mapVals != nil && mw > 0 {
		t := a.heatTexture(e, key, mapVals, mw, mh, true)
		a.mark("explorer:heatmap", drawImageFit(dst, t, hm, ebiten.FilterLinear))
		verdict := "normal"
		score := e.image.Score
		if e.traj != nil && e.traj.Final != nil {
			score = e.traj.Final.Score
		}
		if shared.Predicted(score, a.threshold(e.image.Category)) {
			verdict = "ANOMALOUS"
		}
		drawText(dst, fmt.Sprintf("score %s · %s", fmtScore(score), verdict), hm.X+4, hm.Y+hm.H-16, sizeSmall, colText)
	} else {
		placeholder(dst, hm, e.waiting())
	}
	a.drawLegend(dst, legend, mapVals, e.image.Category)

	if e.cmp != nil {
		a.drawCompareRow(dst, stepRow, step)
		a.drawTimeline(dst, timeline)
		return
	}
	// Step row: z_t, predicted clean latent, predicted image, step map.
	srow := stepRow.columns(4, 8)
	if a.latentChannels {
		a.region(regionLatents, srow[0], srow[1])
	}
	tLabel := ""
	if step >= 0 && e.traj.Steps != nil && e.traj.Steps[step] != nil {
		tLabel = fmt.Sprintf(" (t=%d)", e.traj.Steps[step].T)
	}
	names := []struct{ key, raw, title, caption string }{
		{shared.ProductLatent, shared.BlobRawZt, "Latent z_t" + tLabel, "the input's latent with noise of level t: what the denoiser sees"},
		{shared.ProductX0Latent, shared.BlobRawX0, "Predicted clean latent", "the clean latent the denoiser, guided by the SG network, predicts from z_t"},
		{shared.ProductImage, "", "Predicted image", "that prediction decoded to pixels"},
	}
	for i, n := range names {
		channels := n.raw != "" && a.latentChannels
		title := n.title
		if channels {
			title += " · channels"
		}
		a.region(pictureRegion(n.key), srow[i])
		if n.key == shared.ProductImage { // also the reconstruction in progress
			a.region(pictureRegion(n.key), cols[1])
		}
		p := panel(dst, a.caption(dst, srow[i], n.caption), title)
		// While a step's picture decodes, the nearest earlier one stays
		// (a panel that had a picture never goes blank).
		t, shown := e.nearestTex(step, n.key)
		if channels {
			var caption rect
			p, caption = p.cutTop(p.H-16, 2)
			var limit float64
			t, limit = e.channelTexture(step, n.raw, !a.painting)
			if t != nil { // the scale below the tiles
				drawText(dst, clip(fmt.Sprintf("channels 1-4 · blue −%g … orange +%g (beyond: clamped)", limit, limit), caption.W, sizeSmall), caption.X+4, caption.Y, sizeSmall, colDim)
			}
		}
		if t != nil {
			a.mark("step:"+n.key, drawImageFit(dst, t, p, ebiten.FilterNearest))
			if !channels {
				decoding(dst, p, shown, step)
			}
		} else {
			placeholder(dst, p, "–")
		}
		if n.raw != "" { // a click on a latent panel switches its view (c)
			a.hit("latent:"+n.key, srow[i], func() { a.latentChannels = !a.latentChannels })
		}
	}
	p := panel(dst, a.caption(dst, srow[3], "anomaly map of this step's predicted image against the input"), "Step anomaly map")
	if step >= 0 {
		v, w, h, k := nearestMap(e.stepMap, step) // the nearest earlier map meanwhile
		if v != nil {
			t := a.heatTexture(e, fmt.Sprintf("step%d", k), v, w, h, false)
			a.mark("step:map", drawImageFit(dst, t, p, ebiten.FilterLinear))
			drawText(dst, fmt.Sprintf("step %d · score %s", k+1, fmtScore(e.traj.Steps[k].Score)), p.X+4, p.Y+p.H-16, sizeSmall, colText)
		} else {
			placeholder(dst, p, "–")
		}
	} else {
		placeholder(dst, p, "–")
	}
	a.drawTimeline(dst, timeline)
}

// exportTrajectory downloads the explorer's trajectory drawn for slides,
// with every panel; the server computes it from the same request (the same
// pictures as the stream).
func (a *App) exportTrajectory(format string) {
	e := a.exp
	if e == nil {
		return
	}
	r := e.request()
	r.Products = nil
	x := shared.TrajectoryExport{Denoise: r, Format: format, Panels: "input,latent,image,map"}
	ext := "gif"
	if format == shared.TrajectoryStrip {
		ext = "png"
	}
	name := fmt.Sprintf("trajectory-%s-%d.%s", e.run, e.image.ImageID, ext)
	if e.upload != "" {
		name = "trajectory-dropped." + ext
	}
	a.trajectoryExport = a.client.TrajectoryURL(x)
	download(a.trajectoryExport, name)
	a.setStatus(fmt.Sprintf("drawing %s's trajectory as %s (%s)…", e.name(), ext, name))
}

func roundTo(v, step int) int { return (v + step/2) / step * step }

// drawLegend shows the colour scale of a category's map with its anchor values.
func (a *App) drawLegend(dst *ebiten.Image, r rect, values []float32, category string) {
	inner := panel(dst, r, "")
	bar := rect{inner.X + 4, inner.Y + 18, 14, inner.H - 40}
	n := int(bar.H)
	for i := 0; i < n; i++ {
		c := visual.Colormap(1 - float64(i)/float64(max(n-1, 1)))
		fill(dst, rect{bar.X, bar.Y + float32(i), bar.W, 1}, c)
	}
	stroke(dst, bar, 1, colBorder)
	a.mark("legend", bar)
	s := a.scaleFor(values, category)
	label := func(frac float32, s string, bold bool) {
		y := bar.Y + bar.H*(1-frac) - 6
		if bold {
			drawBold(dst, s, bar.X+bar.W+4, y, sizeSmall, colText)
		} else {
			drawText(dst, s, bar.X+bar.W+4, y, sizeSmall, colDim)
		}
	}
	if a.scaleMinMax {
		drawText(dst, "min-max", inner.X, inner.Y, sizeSmall, colDim)
		label(1, fmtScore(s.Hi), false)
		label(0, fmtScore(s.Lo), false)
	} else {
		drawText(dst, "calibrated", inner.X, inner.Y, sizeSmall, colDim)
		label(1, fmtScore(s.Hi), false)
		label(0.5, "th "+fmtScore(a.threshold(category)), true)
		line(dst, bar.X-2, bar.Y+bar.H/2, bar.X+bar.W+2, bar.Y+bar.H/2, 1.5, colText)
		label(0, "0", false)
	}
	drawText(dst, "m: switch", inner.X, inner.Y+inner.H-14, sizeSmall, colDim)
}

// drawTimeline: transport buttons, the scrubber with a tick per step, and
// the score-vs-step chart.
func (a *App) drawTimeline(dst *ebiten.Image, r rect) {
	e := a.exp
	left, chart := r.cutLeft(r.W*0.5, 8)
	inner := panel(dst, left, "Timeline")
	t, p := e.traj, e.player
	bx := inner.X
	by := inner.Y + 2
	play := "play"
	if p != nil && p.Playing {
		play = "pause"
	}
	a.button(dst, rect{bx, by, 34, 28}, "step:back", "<", false, func() { p.StepBy(t, -1) })
	a.button(dst, rect{bx + 38, by, 80, 28}, "play", play, p != nil && p.Playing, func() { p.Toggle(t) })
	a.button(dst, rect{bx + 122, by, 34, 28}, "step:forward", ">", false, func() { p.StepBy(t, 1) })
	// Playback speed: how long each step stays on screen while playing.
	speed := fmt.Sprintf("%d ms/step", a.stepTime().Milliseconds())
	a.button(dst, rect{bx + 160, by, 104, 28}, "speed", speed, false, func() {
		a.speed = (a.speed + 1) % len(stepTimes)
		if p != nil {
			p.StepTime = a.stepTime()
		}
	})
	// Captions under every panel (h), for teaching.
	caps := "captions"
	a.button(dst, rect{bx + 268, by, 86, 28}, "captions", caps, a.captions, func() { a.captions = !a.captions })
	// For slides: the trajectory as an animated GIF or a PNG strip.
	switch {
	case bx+468 > inner.X+inner.W: // no room (presenter mode)
	case e.traj != nil:
		a.button(dst, rect{bx + 358, by, 50, 28}, "export:gif", "GIF", false, func() { a.exportTrajectory(shared.TrajectoryGIF) })
		a.button(dst, rect{bx + 412, by, 56, 28}, "export:strip", "strip", false, func() { a.exportTrajectory(shared.TrajectoryStrip) })
	default:
		a.disabledButton(dst, rect{bx + 358, by, 50, 28}, "export:gif", "GIF")
		a.disabledButton(dst, rect{bx + 412, by, 56, 28}, "export:strip", "strip")
	}
	bx += 310
	info := "no trajectory"
	if t != nil && t.Total > 0 {
		info = fmt.Sprintf("step %d / %d   t = %d   received %d/%d", p.Cursor+1, t.Total, stepT(t, p.Cursor), t.Received, t.Total)
		if t.Complete() {
			info += fmt.Sprintf("   done in %.1fs", t.Done.Sub(t.Started).Seconds())
		}
		if t.Dropped > 0 {
			info += fmt.Sprintf("   (%d frames skipped by the server for a slow connection)", t.Dropped)
		}
	} else if t != nil {
		info = "waiting for the first frame…"
	}
	drawText(dst, clip(info, inner.X+inner.W-(bx+166), sizeSmall), bx+166, by+8, sizeSmall, colDim)
	scrub := rect{inner.X, by + 38, inner.W, inner.H - 42}
	fill(dst, scrub, colBG)
	a.mark("scrubber", scrub)
	if t != nil && t.Total > 0 {
		w := scrub.W / float32(t.Total)
		for i := 0; i < t.Total; i++ {
			c := colRaised
			if t.Steps[i] != nil {
				c = colBorder
				if i <= p.Cursor {
					c = colAccent
				}
			}
			fill(dst, rect{scrub.X + float32(i)*w + 1, scrub.Y + 4, max(w-2, 1), scrub.H - 8}, c)
		}
		cx := scrub.X + (float32(p.Cursor)+0.5)*w
		line(dst, cx, scrub.Y, cx, scrub.Y+scrub.H, 2, colText)
		// Ticks labelled with their timestep t, as many as fit.
		every := max(1, int(math.Ceil(float64(t.Total)*44/float64(max(scrub.W, 1)))))
		for i := 0; i < t.Total; i += every {
			if t.Steps[i] != nil {
				drawText(dst, fmt.Sprint(stepT(t, i)), scrub.X+float32(i)*w+2, scrub.Y+scrub.H-14, sizeSmall, colText)
			}
		}
	}
	sched, scores := chart.cutLeft(chart.W*0.5, 8)
	a.drawSchedule(dst, sched)
	a.drawScoreChart(dst, scores)
}

// caption draws a one-line caption under a panel when captions are on and
// returns the panel's remaining area.
func (a *App) caption(dst *ebiten.Image, r rect, text string) rect {
	if !a.captions {
		return r
	}
	p, c := r.cutTop(r.H-16, 2)
	drawText(dst, clip(text, c.W, sizeSmall), c.X+2, c.Y, sizeSmall, colDim)
	return p
}

// scheduleHighlight is the timestep of step i and sqrt(abar) there (ok
// false before the schedule or the step came).
func scheduleHighlight(t *trajectory.Trajectory, i int) (ht int, signal float64, ok bool) {
	if i < 0 || i >= len(t.Steps) || t.Steps[i] == nil {
		return 0, 0, false
	}
	ht = t.Steps[i].T
	signal, ok = t.SignalAt(ht)
	return ht, signal, ok
}

// drawSchedule is the noise schedule: the shares of the clean latent
// (signal, sqrt(abar_t)) and of the noise (sqrt(1-abar_t)) in z_t over t,
// the start level, a tick at each step's t and the current step.
func (a *App) drawSchedule(dst *ebiten.Image, r rect) {
	inner := panel(dst, a.caption(dst, r, "z_t = signal x clean + noise x random; DDIM walks t down"), "Noise schedule")
	e := a.exp
	t := e.traj
	if t == nil || len(t.Signal) < 2 {
		placeholder(dst, inner, "–")
		return
	}
	plot := rect{inner.X + 2, inner.Y + 2, inner.W - 4, inner.H - 18}
	a.mark("schedule", plot)
	fill(dst, plot, colBG)
	tMax := float32((len(t.Signal) - 1) * t.ScheduleStride)
	px := func(ts int) float32 { return plot.X + plot.W*min(float32(ts)/tMax, 1) }
	py := func(v float64) float32 { return plot.Y + plot.H*(1-float32(v)) }
	noise := func(s float64) float64 { return math.Sqrt(max(0, 1-s*s)) }
	for i := 1; i < len(t.Signal); i++ {
		t0, t1 := (i-1)*t.ScheduleStride, i*t.ScheduleStride
		s0, s1 := float64(t.Signal[i-1]), float64(t.Signal[i])
		line(dst, px(t0), py(s0), px(t1), py(s1), 2, colAccent)
		line(dst, px(t0), py(noise(s0)), px(t1), py(noise(s1)), 2, colAnomaly)
	}
	if t.StartT > 0 { // the start level, dashed
		x := px(t.StartT)
		for y := plot.Y; y < plot.Y+plot.H; y += 6 {
			line(dst, x, y, x, min(y+3, plot.Y+plot.H), 1, colText)
		}
		drawText(dst, fmt.Sprintf("t0 %d", t.StartT), min(x+3, plot.X+plot.W-40), plot.Y+1, sizeSmall, colText)
	}
	for _, st := range t.Steps { // each sampler step's t
		if st == nil {
			continue
		}
		if s, ok := t.SignalAt(st.T); ok {
			fill(dst, rect{px(st.T) - 1, py(s) - 3, 3, 6}, colBorder)
		}
	}
	if ht, s, ok := scheduleHighlight(t, e.player.Cursor); ok {
		x := px(ht)
		line(dst, x, plot.Y, x, plot.Y+plot.H, 1, colDim)
		fill(dst, rect{x - 4, py(s) - 4, 8, 8}, colAccent)
		fill(dst, rect{x - 4, py(noise(s)) - 4, 8, 8}, colAnomaly)
		info := fmt.Sprintf("t %d: signal %.2f, noise %.2f", ht, s, noise(s))
		drawText(dst, clip(info, plot.W, sizeSmall), plot.X+2, plot.Y+plot.H+2, sizeSmall, colText)
	}
	drawText(dst, "signal", plot.X+4, py(1)+2, sizeSmall, colAccent)
	drawText(dst, "noise", plot.X+plot.W-textWidth("noise", sizeSmall)-4, py(1)+2, sizeSmall, colAnomaly)
}

func stepT(t *trajectory.Trajectory, i int) int {
	if i >= 0 && i < len(t.Steps) && t.Steps[i] != nil {
		return t.Steps[i].T
	}
	return 0
}

// drawScoreChart plots the image score of each step's predicted image
// against the threshold. While comparing, both trajectories share the
// chart with noise level on the x axis (t falling to the right), so steps
// at the same level line up whatever their count.
func (a *App) drawScoreChart(dst *ebiten.Image, r rect) {
	inner := panel(dst, r, "Score per step")
	e := a.exp
	if e.traj == nil || e.traj.Total == 0 {
		placeholder(dst, inner, "–")
		return
	}
	type series struct {
		t      *trajectory.Trajectory
		scores []float64
		cursor int
		col    color.RGBA
		label  string
	}
	all := []series{{t: e.traj, scores: e.traj.Scores(), cursor: e.player.Cursor, col: colAnomaly}}
	byT := e.cmp != nil && e.cmp.traj != nil && e.cmp.traj.Total > 0
	if byT {
		mode := compareModes[e.cmp.mode]
		all[0].label = mode.first
		all = append(all, series{t: e.cmp.traj, scores: e.cmp.traj.Scores(), cursor: e.compareCursor(), col: colNormal, label: mode.side})
	}
	th := a.threshold(e.image.Category)
	lo, hi := th, th
	tSpan := 1
	for _, sr := range all {
		for _, s := range sr.scores {
			if !math.IsNaN(s) {
				lo, hi = math.Min(lo, s), math.Max(hi, s)
			}
		}
		tSpan = max(tSpan, sr.t.StartT)
		for _, st := range sr.t.Steps {
			if st != nil {
				tSpan = max(tSpan, st.T)
			}
		}
	}
	pad := 0.15 * (hi - lo)
	lo, hi = lo-pad, hi+pad
	if hi <= lo {
		hi = lo + 1
	}
	plot := rect{inner.X + 2, inner.Y + 2, inner.W - 4, inner.H - 4}
	a.mark("scorechart", plot)
	fill(dst, plot, colBG)
	px := func(sr series, i int) float32 {
		if byT {
			return plot.X + plot.W*(1-float32(stepT(sr.t, i))/float32(tSpan))
		}
		return plot.X + plot.W*(float32(i)+0.5)/float32(len(sr.scores))
	}
	py := func(v float64) float32 { return plot.Y + plot.H*(1-float32((v-lo)/(hi-lo))) }
	ty := py(th)
	for x := plot.X; x < plot.X+plot.W; x += 8 {
		line(dst, x, ty, min(x+4, plot.X+plot.W), ty, 1, colDim)
	}
	drawText(dst, "threshold "+fmtScore(th), plot.X+plot.W-textWidth("threshold "+fmtScore(th), sizeSmall)-4, ty-14, sizeSmall, colDim)
	// Axis values: the score range, and the x axis at both ends.
	drawText(dst, fmtScore(hi), plot.X+2, plot.Y+1, sizeSmall, colDim)
	drawText(dst, fmtScore(lo), plot.X+2, plot.Y+plot.H-14, sizeSmall, colDim)
	last := fmt.Sprintf("step %d", len(all[0].scores))
	if byT {
		last = "t 0"
		drawText(dst, fmt.Sprintf("t %d", tSpan), plot.X+textWidth(fmtScore(lo), sizeSmall)+12, plot.Y+plot.H-14, sizeSmall, colDim)
	}
	drawText(dst, last, plot.X+plot.W-textWidth(last, sizeSmall)-4, plot.Y+plot.H-14, sizeSmall, colDim)
	for k, sr := range all {
		prev := -1
		for i, s := range sr.scores {
			if math.IsNaN(s) {
				continue
			}
			if prev >= 0 {
				line(dst, px(sr, prev), py(sr.scores[prev]), px(sr, i), py(s), 2, sr.col)
			}
			prev = i
		}
		if c := sr.cursor; c >= 0 && c < len(sr.scores) && !math.IsNaN(sr.scores[c]) {
			if k == 0 {
				line(dst, px(sr, c), plot.Y, px(sr, c), plot.Y+plot.H, 1, colText)
			}
			fill(dst, rect{px(sr, c) - 3, py(sr.scores[c]) - 3, 6, 6}, sr.col)
		}
		if sr.label != "" {
			drawText(dst, sr.label, plot.X+plot.W*0.35+float32(k)*textWidth(all[0].label+"   ", sizeSmall), plot.Y+1, sizeSmall, sr.col)
		}
	}
}
