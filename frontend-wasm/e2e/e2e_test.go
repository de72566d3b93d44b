//go:build !js

// Package e2e tests the browser client end to end: the client is compiled to
// WebAssembly, served by a real diad server on loopback (a tiny model, a
// synthetic dataset, a real test job), and driven in a real headless
// Chromium through the DevTools protocol - keyboard and mouse events like a
// user's, state read through window.diadState() (package hook), pictures
// checked on screenshots, which are kept in artifacts/e2e.
package e2e

import (
	"context"
	"image"
	"testing"
	"time"

	"github.com/diad-project/diad/frontend-wasm/hook"
	"github.com/diad-project/diad/frontend-wasm/web"
	"github.com/diad-project/diad/shared"
)

// TestBrowserClient drives the client through a user's day, one step after
// another on the same page: each step starts where the one before left the
// page (the run's images, their verdicts, the tab shown).
func TestBrowserClient(t *testing.T) {
	br := startBrowserRun(t)
	for _, step := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"review", br.review},
		{"export", br.export},
		{"labels from elsewhere", br.labelsFromElsewhere},
		{"score filter", br.scoreFilter},
		{"bulk review", br.bulkReview},
		{"overlays", br.overlays},
		{"explorer", br.explorer},
		{"explorer colours", br.explorerColours},
		{"explorer playback", br.explorerPlayback},
		{"explorer comparisons", br.explorerComparisons},
		{"explorer exports", br.explorerExports},
		{"explorer re-run", br.explorerRerun},
		{"drop an image", br.dropAnImage},
		{"threshold", br.threshold},
		{"threshold per category", br.thresholdPerCategory},
		{"training monitor", br.trainingMonitor},
		{"layout adapts", br.layoutAdapts},
		{"reconnect", br.reconnect},
		{"10000 images", br.tenThousandImages},
	} {
		t.Run(step.name, step.run)
	}
}

// browserRun is what the browser test's steps share: the server, the page,
// the test run whose images the gallery shows, and the frame-rate yardstick.
type browserRun struct {
	e       *env
	p       *page
	testJob shared.Job
	runID   string
	want    shared.ImagePage // the run's images, highest score first
	// baselineFPS is the frame rate of an empty ebiten game in this
	// browser, baselineCores how much of the cores it kept busy.
	baselineFPS, baselineCores float64
	// The explorer's trajectory: its steps, its first screenshot, where its
	// scrubber is.
	steps        int
	explorerShot image.Image
	scrubber     hook.Rect
	// trainJob is the train job the training monitor started ("" until then).
	trainJob string
}

// pageFor hands the page to step t (its failures fail t).
func (br *browserRun) pageFor(t *testing.T) *page {
	br.p.t = t
	return br.p
}

// startBrowserRun builds the client, starts the server with a test run,
// measures the yardstick and opens the client on the gallery.
func startBrowserRun(t *testing.T) *browserRun {
	chromium(t)
	webDir := t.TempDir()
	bctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := web.Build(bctx, webDir, web.TestHookTag); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, webDir)
	testJob := e.job(t, shared.JobRequest{Kind: shared.JobTest, Config: map[string]any{"checkpoint": e.model, "data": map[string]any{"root": "synth"}, "batch_size": 4}})
	runID := e.waitJob(t, testJob.ID).RunID
	var want shared.ImagePage
	e.call(t, "GET", "/api/v1/runs/"+runID+"/images?sort=-score&limit=1000", nil, &want)

	// The yardstick for frame rates: this browser with an empty ebiten game.
	base := openBrowser(t, e.base+"/?baseline=1", 1280, 800, 1)
	base.wait("the baseline page", time.Minute, func(s hook.State) bool { return s.Ready && s.Frames > 30 })
	time.Sleep(2 * time.Second)
	bs0, bc0, bt0 := base.state(), browserCPUSeconds(t), time.Now()
	time.Sleep(3 * time.Second)
	bs1 := base.state()
	baselineFPS := float64(bs1.Frames-bs0.Frames) / time.Since(bt0).Seconds()
	// How much of the 2 cores the empty game itself keeps busy: near 2, any
	// work beside it (the server's) takes frames from it.
	baselineCores := (browserCPUSeconds(t) - bc0) / time.Since(bt0).Seconds()
	t.Logf("baseline: empty ebiten game draws %.1f frames/s (ActualFPS %.1f), the browser using %.2f cores", baselineFPS, bs1.FPS, baselineCores)
	base.close()

	p := openBrowser(t, e.base+"/?user=e2e", 1280, 800, 1)
	s := p.wait("the client to load, connect and show the gallery", 2*time.Minute, func(s hook.State) bool {
		return s.Ready && s.Connected && s.Run == runID && s.Images == want.Total && s.Visible == want.Total
	})
	if s.Tab != "Gallery" || s.Selected != want.Images[0].ImageID || s.Columns < 2 {
		t.Fatalf("gallery: tab %s, selected %d (want the top score %d), %d columns", s.Tab, s.Selected, want.Images[0].ImageID, s.Columns)
	}
	// Thumbnails decode in the background; wait for them, then look.
	p.wait("thumbnails", time.Minute, func(s hook.State) bool { return s.Pending == 0 })
	time.Sleep(300 * time.Millisecond)
	img := p.shot("gallery")
	if std, _ := colourful(img, s.Widgets["grid"]); std < 10 {
		t.Fatalf("gallery grid looks blank (luma std %.1f)", std)
	}
	// What an idle page costs: the browser's CPU time over 5 s with nothing
	// happening (reported, not asserted: this machine is shared and noisy).
	f0 := p.state().Frames
	c0, w0 := browserCPUSeconds(t), time.Now()
	time.Sleep(5 * time.Second)
	t.Logf("idle gallery: the browser used %.2f of a core; the client painted %d frames in %.1f s",
		(browserCPUSeconds(t)-c0)/time.Since(w0).Seconds(), p.state().Frames-f0, time.Since(w0).Seconds())
	return &browserRun{e: e, p: p, testJob: testJob, runID: runID, want: want, baselineFPS: baselineFPS, baselineCores: baselineCores}
}
