//go:build js && wasm

package ui

import "time"

// post hands a state change to the frame loop.
func (a *App) post(fn func()) {
	a.inboxMu.Lock()
	a.inbox = append(a.inbox, fn)
	a.inboxMu.Unlock()
	a.nudge()
}

// regionPost is a change that only a named region of the page shows.
type regionPost struct {
	region string
	fn     func()
}

// postRegion is post for a change that only region shows (a thumbnail:
// regionGrid): the page repaints that region alone, unless fn or another
// change in the same tick marks the page dirty.
func (a *App) postRegion(region string, fn func()) {
	a.inboxMu.Lock()
	a.regionInbox = append(a.regionInbox, regionPost{region, fn})
	a.inboxMu.Unlock()
	a.nudge()
}

// region records the rectangles of a region (layout pass only).
func (a *App) region(name string, rs ...rect) {
	if !a.painting {
		a.regions[name] = append(a.regions[name], rs...)
	}
}

// outermost drops the rectangles that lie within another of rs (regions
// nest: the explorer's live panels hold its timeline), so that nothing is
// painted twice - text drawn over itself would come out bolder.
func outermost(rs []rect) []rect {
	var out []rect
	for i, r := range rs {
		inside := false
		for j, o := range rs {
			if i != j && o.X <= r.X && o.Y <= r.Y && r.X+r.W <= o.X+o.W && r.Y+r.H <= o.Y+o.H && (r != o || j < i) {
				inside = true
				break
			}
		}
		if !inside {
			out = append(out, r)
		}
	}
	return out
}

// postQuiet is post for news that need not be drawn at once (a streamed
// frame of a step not on screen): fn runs at the next tick as post's do,
// but the page is repainted for it at most every quietRepaint, unless fn
// marks the page dirty itself. Nine frames a second each repainting the
// whole explorer left the page too little time for anything else.
func (a *App) postQuiet(fn func()) {
	a.inboxMu.Lock()
	a.quietInbox = append(a.quietInbox, fn)
	a.inboxMu.Unlock()
	a.nudge()
}

// quietRepaint bounds how long quiet news waits for a repaint.
const quietRepaint = 250 * time.Millisecond

// nudge ends an idle wait; it never blocks (JS callbacks call it).
func (a *App) nudge() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// nextTimed is when the screen next changes with time alone: the caret's
// blink while a note is edited, the status message dimming. Zero: never.
func (a *App) nextTimed() time.Time {
	if a.editing {
		return a.lastDraw.Add(caretBlink)
	}
	if dim := a.statusAt.Add(statusDims); a.status != "" && !a.statusErr && a.lastDraw.Before(dim) {
		return dim
	}
	return time.Time{}
}

// idleWait blocks the frame loop while nothing moves, until input, new data
// or the heartbeat. Ebiten's browser loop asks for the next animation frame
// only when a frame ends, so a waiting Update stops the loop - and with it
// the per-frame cost - entirely. (The deprecated FPSModeVsyncOffMinimum
// stopped Update but kept requesting animation frames; skipping draws alone
// still ran Update and ebiten's frame 60 times a second: the browser test's
// idle figure measured 0.46 and 1.76 of a core for those two.)
func (a *App) idleWait(busy bool) {
	now := time.Now()
	if busy || now.Before(a.awakeUntil) {
		return
	}
	a.inboxMu.Lock()
	pending := len(a.inbox) > 0 || len(a.quietInbox) > 0 || len(a.regionInbox) > 0
	a.inboxMu.Unlock()
	if pending {
		return
	}
	wait := idleHeartbeat
	if next := a.nextTimed(); !next.IsZero() {
		wait = min(wait, max(time.Until(next), 0))
	}
	select {
	case <-a.wake:
		// Input is read by ebiten at the start of a frame: keep a few
		// frames coming so that the event that woke us is handled.
		a.awakeUntil = time.Now().Add(100 * time.Millisecond)
	case <-time.After(wait):
	}
}

// The regions Draw can repaint alone: the gallery's grid (scrolling), the
// explorer's panels that follow the playing step (the reconstruction in
// progress, the step row, the timeline), its timeline alone (a frame of a
// step not on screen), its latent panels while they show raw channels (a
// decoded raw latent; in the picture view those change nothing on screen),
// and the panels of each kind of step picture (pictureRegion: a decoded
// picture). The status bar, whose frame rate changes while anything moves, is
// repainted with any region.
const (
	regionGrid     = "grid"
	regionLive     = "explorer:live"
	regionTimeline = "explorer:timeline"
	regionLatents  = "explorer:latents"
	regionStatus   = "status"
)

// An idle page wakes every idleHeartbeat only to look; it draws only when
// something changed or when the screen changes with time (nextTimed).
const (
	idleHeartbeat = 5 * time.Second
	caretBlink    = 500 * time.Millisecond
	statusDims    = 6 * time.Second
)

// runPosts runs what goroutines posted for the frame loop. changed: the
// whole page may differ (a plain post); quiet: quiet posts ran; a region
// post marks only its region for repainting.
func (a *App) runPosts() (changed, quiet bool) {
	a.inboxMu.Lock()
	inbox, quietPosts, regional := a.inbox, a.quietInbox, a.regionInbox
	a.inbox, a.quietInbox, a.regionInbox = nil, nil, nil
	a.inboxMu.Unlock()
	for _, fn := range inbox {
		fn()
	}
	for _, p := range regional {
		p.fn()
		a.repaint[p.region] = true
	}
	for _, fn := range quietPosts {
		fn()
	}
	return len(inbox) > 0, len(quietPosts) > 0
}
