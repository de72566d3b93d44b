//go:build js && wasm

// Package ui is the browser client: an ebiten application (compiled to
// WebAssembly) with four views - the gallery for analyst review, the
// denoising explorer, threshold tuning and the training monitor. It reaches
// the server only through package api. Network and image decoding run in
// goroutines that hand their results to the frame loop through an inbox, so
// a frame never waits for either.
package ui

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hajimehoshi/ebiten/v2"
	"github.com/hajimehoshi/ebiten/v2/inpututil"

	"github.com/diad-project/diad/frontend-wasm/api"
	"github.com/diad-project/diad/frontend-wasm/gallery"
	"github.com/diad-project/diad/frontend-wasm/monitor"
	"github.com/diad-project/diad/frontend-wasm/tuning"
	"github.com/diad-project/diad/shared"
)

// Config holds the client's tunables.
type Config struct {
	PollEvery     time.Duration // runs and jobs listing
	StepTime      time.Duration // playback speed of a trajectory
	ThumbSide     int           // thumbnail decode size
	MaxDecodes    int           // image decodes in flight
	ThumbCache    int           // thumbnail textures kept (the oldest go first)
	Reconnect     api.Backoff
	HistogramBins int
	CurvePoints   int
	DefaultRate   float64 // x of the FPR/FNR <= x presets
}

// DefaultConfig is what the page runs with.
func DefaultConfig() Config {
	return Config{PollEvery: 15 * time.Second, StepTime: 180 * time.Millisecond, ThumbSide: 160, MaxDecodes: 6, ThumbCache: 600,
		Reconnect: api.Backoff{Min: 250 * time.Millisecond, Max: 5 * time.Second}, HistogramBins: 40, CurvePoints: 256, DefaultRate: 0.05}
}

// Views.
const (
	tabGallery = iota
	tabExplorer
	tabThreshold
	tabTraining
)

var tabNames = []string{"Gallery", "Explorer", "Threshold", "Training"}

// A view is one tab of the client, like a scene in ebiten's examples.
// Update is the view's part of the frame's layout pass: its keys, then its
// layout with no image to paint on, which places its widgets, takes the
// click (the widget's action runs right after) and moves state (scrolling,
// textures, downloads). Draw paints the same layout and changes nothing: the
// App is in its painting pass, where hit tests, widget marks and loads are
// off. The two passes share one layout function per view so that what is
// painted is exactly what was hit-tested.
type view interface {
	Update(a *App, body rect)
	Draw(a *App, dst *ebiten.Image, body rect)
}

// galleryView is the gallery: the shown run's images as filtered and
// selected (nil until they are loaded), their thumbnails and overlays, the
// grid's scroll, and what the last bulk verdict replaced.
type galleryView struct {
	view   *gallery.View
	thumbs *textureCache
	// overlay is the overlay mode (overlayOff...), overlays what it is
	// drawn from.
	overlay  int
	overlays *overlayCache
	scroll   float32
	// scrollToSelected brings the selected image on screen at the next
	// layout; lastScroll is when the grid last scrolled (zero once
	// settled): thumbnails are fetched only for where it comes to rest.
	scrollToSelected bool
	lastScroll       time.Time
	// undo holds what bulk verdicts replaced (z puts it back); bulkSaved
	// counts the images the last bulk request or undo saved.
	undo      gallery.Undo
	bulkSaved int
}

func (v *galleryView) Update(a *App, body rect)                  { a.layoutGallery(nil, body) }
func (v *galleryView) Draw(a *App, dst *ebiten.Image, body rect) { a.layoutGallery(dst, body) }

// explorerView is the explorer: the trajectory shown (nil until an image is
// opened), the requests its feeds serve (the trajectory's and the
// comparison's), and how its panels are drawn.
type explorerView struct {
	exp        *explorer
	denoiseReq chan shared.DenoiseRequest
	compareReq chan shared.DenoiseRequest // nil until the first comparison
	speed      int                        // the playback speed: an index into stepTimes (0: the config's)
	// scaleMinMax colours maps from their own range instead of the run's
	// threshold; latentChannels shows each latent channel on its own
	// (signed scale) instead of the RGB projection; captions shows a line
	// under each panel saying what it is.
	scaleMinMax, latentChannels, captions bool
	// trajectoryExport is the link of the last trajectory export.
	trajectoryExport string
}

func (v *explorerView) Update(a *App, body rect) {
	if v.exp != nil && !a.editing {
		v.exp.keys(a)
	}
	a.layoutExplorer(nil, body)
}
func (v *explorerView) Draw(a *App, dst *ebiten.Image, body rect) { a.layoutExplorer(dst, body) }

// thresholdView is the threshold tuner: the shown run's scores being tuned
// (nil until they are loaded), the rate its FPR/FNR presets aim at, and the
// run's metrics table (nil: none, e.g. a predict run).
type thresholdView struct {
	tune    *tuning.Tuner
	rate    float64
	metrics []shared.MetricValue
}

func (v *thresholdView) Update(a *App, body rect) {
	if v.tune != nil && !a.editing {
		d := 0.0
		if inpututil.IsKeyJustPressed(ebiten.KeyArrowLeft) || inpututil.KeyPressDuration(ebiten.KeyArrowLeft) > 20 {
			d = -0.005
		}
		if inpututil.IsKeyJustPressed(ebiten.KeyArrowRight) || inpututil.KeyPressDuration(ebiten.KeyArrowRight) > 20 {
			d = 0.005
		}
		if d != 0 {
			m := v.tune.Shown()
			v.tune.Drag(m.Fraction(m.Threshold) + d)
			a.thresholdChanged()
		}
	}
	a.layoutThreshold(nil, body)
}
func (v *thresholdView) Draw(a *App, dst *ebiten.Image, body rect) { a.layoutThreshold(dst, body) }

// App is the client's whole state. Only the frame loop (Update/Draw) reads
// or changes it; goroutines post closures to the inbox.
type App struct {
	cfg    Config
	client *api.Client
	user   string
	ctx    context.Context

	// work is the page's Go time per kind of work (hook.State.WorkMS), for
	// the browser test's account of where a frame rate goes; goroutines'
	// work is added when they post their result.
	work map[string]time.Duration

	inboxMu     sync.Mutex
	inbox       []func()
	quietInbox  []func()     // postQuiet's
	regionInbox []regionPost // postRegion's
	// quietNews: quiet posts ran since the last layout pass (lastLayout).
	quietNews  bool
	lastLayout time.Time
	// wake ends an idle wait (see idleWait): new data, or input the
	// browser saw; awakeUntil keeps frames coming shortly after input.
	wake       chan struct{}
	awakeUntil time.Time
	busy       bool // something moves: frames flow without waiting

	// The change feed: pollNow asks for the listing at once; labelsPushed
	// counts images updated from it; feedErr is why it is down.
	pollNow      chan struct{}
	labelsPushed int
	feedErr      string

	disabled map[string]bool // widgets shown but not clickable yet
	exported int             // rows in the last export (for the state hook)

	w, h     int
	tab      int
	lastTick time.Time
	frames   int64

	// Redraw only on change: an idle page costs the browser little, and a
	// busy one (frames streaming) spends its time on what changed. dirty
	// asks for the whole page; repaint names the only regions that changed
	// (a scrolled grid, the explorer's playing panels), which Draw repaints
	// alone when nothing else did; regions are their rectangles, placed by
	// the last layout pass.
	dirty      bool
	repaint    map[string]bool
	regions    map[string][]rect
	partials   int64 // partial repaints drawn (the state hook's)
	painting   bool  // inside Draw: views only paint
	lastDraw   time.Time
	drawnW     int
	drawnH     int
	drawnScale float32

	// Input of the current frame. A click waits until a widget drawn under
	// it takes it.
	mx, my         int
	click          bool
	clickX, clickY int
	actions        []func()
	widgets        map[string]rect
	dragging       string
	dragHigh       bool // the score-range drag holds the upper handle

	// Server data.
	runs  []shared.RunInfo
	runID string
	run   shared.RunInfo

	// views are indexed by the tab constants; each holds its own state.
	views         []view
	galleryView   *galleryView
	explorerView  *explorerView
	thresholdView *thresholdView
	trainingView  *trainingView

	// Connection and messages.
	connected  bool
	server     string
	reconnects int
	status     string
	statusErr  bool
	statusAt   time.Time
	errors     []string
	decodes    int

	// presenter shows the explorer alone, larger, for a projector (p).
	presenter bool
	// cssW and cssH are the page's size in CSS pixels (w and h are the
	// layout's, smaller in presenter mode).
	cssW, cssH int
	editing    bool
	note       []rune
	runes      []rune
}

// baseline is an empty ebiten game: opened with ?baseline=1 it shows what
// frame rate this browser reaches with nothing to draw, the yardstick for
// the client's own (see the e2e test).
type baseline struct{ frames int64 }

func (b *baseline) Update() error              { return nil }
func (b *baseline) Draw(s *ebiten.Image)       { s.Fill(colBG); b.frames++ }
func (b *baseline) Layout(w, h int) (int, int) { return w, h }

// Run starts the client; it returns only when the page goes away.
func Run() error {
	if pageParam("baseline") == "1" {
		b := &baseline{}
		b.exposeTestState()
		ebiten.SetRunnableOnUnfocused(true)
		return ebiten.RunGame(b)
	}
	cfg := DefaultConfig()
	a := &App{cfg: cfg, client: api.New(origin(), pageParam("token")), ctx: context.Background(),

		widgets: map[string]rect{}, disabled: map[string]bool{},
		repaint: map[string]bool{}, regions: map[string][]rect{}}
	a.trainingView = &trainingView{board: monitor.NewBoard()}
	a.galleryView = &galleryView{thumbs: newTextureCache(cfg.ThumbCache), overlays: newOverlayCache(cfg.ThumbCache)}
	a.thresholdView = &thresholdView{rate: cfg.DefaultRate}
	a.explorerView = &explorerView{denoiseReq: make(chan shared.DenoiseRequest, 1)}
	a.views = []view{a.galleryView, a.explorerView, a.thresholdView, a.trainingView}
	a.user = pageParam("user")
	if a.user == "" {
		a.user = storageGet("diad.user")
	}
	if a.user == "" {
		a.user = "analyst"
	}
	storageSet("diad.user", a.user)
	a.exposeTestState()
	go a.denoiseLoop(a.explorerChannel())
	a.pollNow = make(chan struct{}, 1)
	go a.pollLoop()
	go a.changesLoop()
	go a.showNotices()
	ebiten.SetRunnableOnUnfocused(true) // keep streaming in a background tab
	ebiten.SetScreenClearedEveryFrame(false)
	// Frames only on input or when something changes: an idle page costs
	// nothing, which matters on software-rendered WebGL. Update waits when
	// nothing moves (idleWait); the browser's input events and new data end
	// the wait.
	a.wake = make(chan struct{}, 1)
	onInput(a.nudge)
	// One Update per frame (Update measures its own time step), so a frame
	// never runs two Updates that could both wait.
	ebiten.SetTPS(ebiten.SyncWithFPS)
	ebiten.SetWindowTitle("diad")
	return ebiten.RunGame(a)
}

func (a *App) setStatus(msg string) {
	a.status, a.statusErr, a.statusAt = msg, false, time.Now()
}

// fail shows an error plainly in the status bar and keeps it in the list.
func (a *App) fail(err error) {
	msg := err.Error()
	a.status, a.statusErr, a.statusAt = msg, true, time.Now()
	a.errors = append(a.errors, msg)
	if len(a.errors) > 20 {
		a.errors = a.errors[len(a.errors)-20:]
	}
}

// survive turns a panic of the frame loop into a plain error message: the
// page stays usable and the message says what to report.
func (a *App) survive(where string) {
	if r := recover(); r != nil {
		a.fail(fmt.Errorf("internal error in %s: %v (please report it)", where, r))
		a.dirty = true
	}
}

// Layout: the canvas fills the page; the app lays out in CSS pixels (w, h)
// and renders at device resolution.
// In presenter mode the layout viewport is presenterZoom times smaller, so
// everything is drawn that much larger.
func (a *App) Layout(w, h int) (int, int) {
	presentZoom = 1
	if a.presenter {
		presentZoom = presenterZoom
	}
	dpr := float32(max(ebiten.Monitor().DeviceScaleFactor(), 1))
	uiScale = dpr * presentZoom
	a.w, a.h = int(float32(w)/presentZoom), int(float32(h)/presentZoom)
	a.cssW, a.cssH = w, h
	return int(float32(w) * dpr), int(float32(h) * dpr)
}

// scrollSettle is how long the gallery must rest before the thumbnails on
// screen are fetched: a fling through thousands of images fetches and
// decodes none of those it passes (each would cost the single WebAssembly
// thread a decode while frames are due).
const scrollSettle = 120 * time.Millisecond

// presenterZoom is presenter mode's scale: text and panels readable from
// the back of a room.
const presenterZoom = 1.5

// Update runs once per tick: inbox, input, queued widget actions, playback.
func (a *App) Update() error {
	defer a.survive("update")
	updateStart := time.Now()
	changed, quiet := a.runPosts()
	now := time.Now()
	a.quietNews = a.quietNews || quiet
	if a.quietNews && now.Sub(a.lastLayout) >= quietRepaint {
		// Quiet news (frames of steps not on screen) show in the
		// explorer's timeline only.
		a.repaint[regionTimeline] = true
	}
	dt := now.Sub(a.lastTick)
	if a.lastTick.IsZero() || dt > time.Second {
		dt = 0
	}
	a.lastTick = now
	changed = a.readPointer() || changed
	a.keys()
	if fsys := ebiten.DroppedFiles(); fsys != nil {
		changed = true
		a.setStatus("uploading the dropped file…")
		go a.uploadDropped(fsys)
	}
	if a.explorerView.exp != nil && a.explorerView.exp.traj != nil {
		if a.explorerView.exp.advance(dt) {
			a.repaint[regionLive] = true
		}
		a.decodeShown(a.explorerView.exp)
	}
	acted := a.layoutPass(changed, now)
	a.dirty = a.dirty || changed || acted
	// Waiting at the end of Update, not the start: the frame after a wake
	// reads the new input before it could wait again.
	a.addWork("update", time.Since(updateStart))
	a.busy = a.dirty || len(a.repaint) > 0 || a.quietNews || a.dragging != "" || !a.galleryView.lastScroll.IsZero() || (a.explorerView.exp != nil && a.explorerView.exp.player != nil && a.explorerView.exp.player.Playing)
	a.idleWait(a.busy)
	return nil
}

// readPointer reads the mouse (position, click, drag) and the wheel, and
// reports whether the input may change the page.
func (a *App) readPointer() bool {
	mx, my := ebiten.CursorPosition() // device pixels
	mx, my = int(float32(mx)/uiScale), int(float32(my)/uiScale)
	changed := mx != a.mx || my != a.my || a.dragging != "" || a.editing ||
		len(inpututil.AppendPressedKeys(nil)) > 0 || len(inpututil.AppendJustReleasedKeys(nil)) > 0 ||
		inpututil.IsMouseButtonJustReleased(ebiten.MouseButtonLeft)
	a.mx, a.my = mx, my
	if inpututil.IsMouseButtonJustPressed(ebiten.MouseButtonLeft) {
		changed = true
		a.click, a.clickX, a.clickY = true, a.mx, a.my
		a.startDrag()
	}
	if a.dragging != "" {
		if ebiten.IsMouseButtonPressed(ebiten.MouseButtonLeft) {
			a.drag()
		} else {
			a.endDrag()
		}
	}
	if _, wy := ebiten.Wheel(); wy != 0 && a.tab == tabGallery {
		a.galleryView.scroll -= float32(wy) * 40
		a.galleryView.lastScroll = time.Now()
		a.repaint[regionGrid] = true
	} else if !a.galleryView.lastScroll.IsZero() && time.Since(a.galleryView.lastScroll) >= scrollSettle {
		a.galleryView.lastScroll = time.Time{} // settled: draw once more, fetching what is on screen
		a.repaint[regionGrid] = true
	}
	return changed
}

// layoutPass lays the page out when anything may have changed: the view's
// keys and layout place the widgets and take the click; what was clicked
// runs now, and the page is laid out again for it, so that Draw paints, and
// the state hook reports, the page as it now is. It reports whether a
// widget's action ran.
func (a *App) layoutPass(changed bool, now time.Time) bool {
	resized := a.w != a.drawnW || a.h != a.drawnH || uiScale != a.drawnScale
	if !changed && !a.dirty && !a.click && !resized && len(a.repaint) == 0 {
		return false
	}
	a.lastLayout, a.quietNews = now, false
	a.frame(nil)
	actions := a.actions
	a.actions = nil
	for _, fn := range actions {
		fn()
	}
	if len(actions) > 0 {
		a.frame(nil)
	}
	return len(actions) > 0
}

// Draw renders the frame; widgets register their rectangles and turn
// clicks into actions for the next Update.
func (a *App) Draw(screen *ebiten.Image) {
	// Nothing changed: draw nothing (ebiten then presents nothing), unless
	// the caret blinks or the status message dims now.
	next := a.nextTimed()
	due := !next.IsZero() && !time.Now().Before(next)
	resized := a.w != a.drawnW || a.h != a.drawnH || uiScale != a.drawnScale
	if !a.dirty && len(a.repaint) == 0 && !due && !resized {
		return
	}
	full := a.dirty || due || resized
	var clips []rect
	if !full {
		for name := range a.repaint {
			clips = append(clips, a.regions[name]...)
		}
		clips = outermost(append(clips, a.regions[regionStatus]...))
	}
	clear(a.repaint)
	a.dirty, a.lastDraw, a.drawnW, a.drawnH = false, time.Now(), a.w, a.h
	a.drawnScale = uiScale
	a.painting = true
	defer func() { a.painting = false }()
	defer a.survive("draw")
	defer func(start time.Time) { a.addWork("draw", time.Since(start)) }(time.Now())
	if full {
		screen.Fill(colBG)
		a.frame(screen)
		a.frames++
		return
	}
	// Only regions changed: the page is painted again into each of them
	// alone (ebiten keeps the screen between frames, and clips drawing to
	// a sub-image), so the browser fills only their pixels. A region not
	// on this page (the explorer's, while the gallery shows) paints nothing.
	for _, r := range clips {
		if r.W <= 0 || r.H <= 0 {
			continue
		}
		sub := screen.SubImage(r.image()).(*ebiten.Image)
		sub.Fill(colBG)
		a.frame(sub)
	}
	a.partials++
}

// frame lays out the whole page: on a nil dst it is Update's layout pass
// (widgets placed, the click taken), else Draw's painting pass.
func (a *App) frame(dst *ebiten.Image) {
	if dst == nil {
		clear(a.widgets)
		clear(a.disabled)
		clear(a.regions)
	}
	W, H := float32(a.w), float32(a.h)
	rest, tab := rect{0, 0, W, H}, a.tab
	if a.presenter { // the explorer alone, no tabs
		tab = tabExplorer
	} else {
		var top rect
		top, rest = rest.cutTop(40, 0)
		a.drawTopBar(dst, top)
	}
	body, bar := rest.cutTop(rest.H-24, 0)
	body = body.inset(10)
	if dst == nil {
		a.views[tab].Update(a, body)
		a.click = false // nothing under it took it
	} else {
		a.views[tab].Draw(a, dst, body)
	}
	a.region(regionStatus, bar)
	a.drawStatusBar(dst, bar)
}

// export downloads the run's image table as the gallery shows it: every
// image, or with a filter set exactly the visible ones.
func (a *App) export(format string) {
	if a.galleryView.view == nil {
		return
	}
	ext := "csv"
	if format == api.ExportParquet {
		ext = "parquet"
	}
	var ids []int64
	what := fmt.Sprintf("all %d images", len(a.galleryView.view.Images))
	if vis := a.galleryView.view.Visible(); len(vis) < len(a.galleryView.view.Images) {
		ids = make([]int64, len(vis))
		for i, k := range vis {
			ids[i] = a.galleryView.view.Images[k].ImageID
		}
		what = fmt.Sprintf("the %d images of this view (of %d)", len(vis), len(a.galleryView.view.Images))
	}
	download(a.client.ExportURL(a.runID, format, ids), fmt.Sprintf("%s-images.%s", a.runID, ext))
	a.setStatus(fmt.Sprintf("exporting %s of run %s as %s", what, a.runID, ext))
	a.exported = len(a.galleryView.view.Images)
	if ids != nil {
		a.exported = len(ids)
	}
}

func trimFloat(v float64, prec int) string {
	s := strconv.FormatFloat(v, 'f', prec, 64)
	if prec < 0 {
		s = strconv.FormatFloat(v, 'g', 3, 64)
	}
	if strings.Contains(s, ".") && !strings.ContainsAny(s, "e") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// addWork counts d of the page's time as kind's (frame loop only).
func (a *App) addWork(kind string, d time.Duration) {
	if a.work == nil {
		a.work = map[string]time.Duration{}
	}
	a.work[kind] += d
}
