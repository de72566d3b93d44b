//go:build !js

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/frontend-wasm/hook"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

func (br *browserRun) layoutAdapts(t *testing.T) {
	e, p, want := br.e, br.pageFor(t), br.want
	p.key("1")
	wide := p.wait("gallery", 10*time.Second, func(s hook.State) bool { return s.Tab == "Gallery" && s.Columns > 0 })
	p.do("narrow viewport", chromedp.EmulateViewport(720, 760))
	narrow := p.wait("a narrow layout", 10*time.Second, func(s hook.State) bool { return s.Width == 720 })
	g, r := narrow.Widgets["grid"], narrow.Widgets["review"]
	if narrow.Columns >= wide.Columns || r[1] <= g[1] {
		t.Fatalf("narrow window: %d columns (wide %d), review at y %.0f, grid at y %.0f", narrow.Columns, wide.Columns, r[1], g[1])
	}
	p.shot("gallery-narrow")
	// A HiDPI screen (its own page: browsers fix the pixel ratio per
	// page load): rendered at twice the resolution, laid out and
	// clicked in CSS pixels as before.
	hp := openBrowser(t, e.base+"/?user=e2e", 1024, 700, 2)
	hi := hp.wait("a HiDPI page", time.Minute, func(s hook.State) bool { return s.Ready && s.Images == want.Total && s.DPR == 2 })
	hp.click("tab:threshold")
	hp.wait("a click at CSS coordinates on a HiDPI canvas", 10*time.Second, func(s hook.State) bool { return s.Tab == "Threshold" })
	img := hp.shot("threshold-hidpi")
	if b := img.Bounds(); b.Dx() != 2*hi.Width {
		t.Fatalf("HiDPI screenshot %dx%d for a %d px wide page", b.Dx(), b.Dy(), hi.Width)
	}
	hp.close()
	p.key("1")
	p.do("wide viewport", chromedp.EmulateViewport(1280, 800))
}

func (br *browserRun) reconnect(t *testing.T) {
	e, p, want, runID, trainJob := br.e, br.pageFor(t), br.want, br.runID, br.trainJob
	e.stop()
	p.wait("the client to notice the server is gone", 30*time.Second, func(s hook.State) bool {
		return !s.Connected && strings.HasPrefix(s.Status, "error:")
	})
	p.shot("offline")
	addr, stop := startServer(t, e.cfg)
	e.stop = stop
	if "http://"+addr != e.base {
		t.Fatalf("restarted on %s, not %s", addr, e.base)
	}
	s := p.wait("the client to reconnect", 30*time.Second, func(s hook.State) bool { return s.Connected && s.Reconnects >= 1 })
	if s.Run != runID || s.Images != want.Total {
		t.Fatalf("after reconnect: run %s with %d images", s.Run, s.Images)
	}
	for _, msg := range s.Errors {
		if strings.Contains(msg, "internal error") {
			t.Errorf("the client hit a bug: %s", msg)
		}
	}
	// A page opened after the restart still shows the finished train
	// job's loss curve: the server replays the job's logged events.
	if trainJob == "" {
		t.Skip("the training monitor subtest did not run")
	}
	np := openBrowser(t, e.base+"/?user=e2e", 1280, 800, 1)
	np.wait("a new page", time.Minute, func(s hook.State) bool { return s.Ready && s.Connected })
	np.key("4")
	np.wait("the train job's loss curve after the restart", 30*time.Second, np.whileJobLives(trainJob, func(s hook.State, x hook.Job) bool {
		return s.SelectedJob == trainJob && x.State == shared.JobSucceeded && x.LossPoints >= 2
	}))
	np.close()
}

func (br *browserRun) tenThousandImages(t *testing.T) {
	e, baselineFPS := br.e, br.baselineFPS
	// A run of 10,000 images (synthetic scores; each image one of the
	// dataset's test files, fetched as its own thumbnail) in a new page:
	// how long it takes to show, the frame rate while the gallery
	// scrolls through it against the empty-game baseline, and whether
	// the page's memory stays bounded.
	const n = 10_000
	big := "29991231T235959Z-10c000"
	writeBigRun(t, e, big, n)
	opened := time.Now()
	bp := openBrowser(t, e.base+"/?user=e2e", 1280, 800, 1)
	defer bp.close()
	s := bp.wait("the new page", time.Minute, func(s hook.State) bool { return s.Ready && s.Runs >= 2 && s.Run != "" })
	for i := 0; i < s.Runs && s.Run != big; i++ { // ] shows the next run
		bp.key("]")
		s = bp.state()
	}
	bp.wait("the 10,000-image run", 2*time.Minute, func(s hook.State) bool { return s.Ready && s.Run == big && s.Images == n && s.Visible == n })
	loaded := time.Since(opened)
	bp.wait("the first screen of thumbnails", time.Minute, func(s hook.State) bool { return s.Pending == 0 && s.Thumbs > 0 })
	first := bp.state()
	grid := first.Widgets["grid"]
	x, y := grid.Center()
	// Scroll down through the run for 8 s, a wheel notch every 50 ms,
	// sampling the frame rate.
	f0, t0 := first.Frames, time.Now()
	fps := scrollFor(bp, x, y, 8*time.Second)
	scrolled := bp.state()
	redraws := float64(scrolled.Frames-f0) / time.Since(t0).Seconds()
	partials := float64(scrolled.Partials-first.Partials) / time.Since(t0).Seconds()
	scrollWork := workPerSecond(first.WorkMS, scrolled.WorkMS, time.Since(t0))
	bp.wait("the thumbnails in flight", time.Minute, func(s hook.State) bool { return s.ThumbsLoading == 0 && s.Pending == 0 })
	time.Sleep(time.Second)
	after := bp.state()
	bp.shot("gallery-10000")
	sum := summarize(fps)
	msg := fmt.Sprintf("gallery of %d images (1280x800, headless Chromium, SwiftShader, 2 CPUs shared with the server)\n"+
		"shown %.1f s after the page opened (switching to it with ])\n"+
		"scrolling 8 s, a wheel notch every 50 ms: %s -> %.2f of the %.1f frames/s baseline (full redraws %.1f/s, partial %.1f/s)\n"+
		"page Go work while scrolling, ms per s: %s\n"+
		"scrolled %.0f px\n"+
		"memory: Go heap %.1f MB on the first screen, %.1f MB after scrolling; Go runtime %.1f -> %.1f MB; thumbnail textures %d -> %d (cache %d)\n",
		n, loaded.Seconds(), sum, sum.mean/baselineFPS, baselineFPS, redraws, partials, scrollWork,
		scrolled.GalleryScroll, first.GoHeapMB, after.GoHeapMB, first.GoSysMB, after.GoSysMB, first.Thumbs, after.Thumbs, after.ThumbCache)
	t.Log(msg)
	filetest.Write(t, filepath.Join(bp.dir, "gallery-10000.txt"), []byte(msg))
	if redraws+partials < 1 {
		t.Fatalf("the gallery stopped drawing while it scrolled: %.2f redraws/s, %.2f partial", redraws, partials)
	}
	if partials == 0 {
		t.Errorf("scrolling repainted the whole page every time (%.1f/s), never the grid alone", redraws)
	}
	// Three notches on, to rows whose thumbnails are not loaded: the
	// scroll and the arriving thumbnails repaint the grid alone, and
	// the grid they leave must be the one a whole repaint draws.
	for _, dy := range []float64{240, 240, 240} {
		bp.do("wheel", call(input.DispatchMouseEvent, input.DispatchMouseEventParams{Type: input.DispatchMouseEventTypeMouseWheel, X: x, Y: y, DeltaX: 1e-6, DeltaY: dy}))
		time.Sleep(100 * time.Millisecond)
	}
	// The gallery fetches thumbnails once it has rested 120 ms: wait
	// past that before waiting for the fetches to end.
	time.Sleep(500 * time.Millisecond)
	bp.wait("the scroll to settle", 10*time.Second, func(s hook.State) bool { return s.Pending == 0 && s.ThumbsLoading == 0 })
	time.Sleep(time.Second)
	bp.partialMatchesFull("gallery-scrolled", x+1, y+1, grid)
	if scrolled.GalleryScroll <= first.GalleryScroll {
		t.Fatalf("the wheel did not scroll the gallery (%v px)", scrolled.GalleryScroll)
	}
	// Bounded: thumbnails for what was on screen, the oldest evicted,
	// and a heap that does not grow with the images scrolled past.
	if after.Thumbs > after.ThumbCache {
		t.Errorf("%d thumbnail textures kept, the cache holds %d", after.Thumbs, after.ThumbCache)
	}
	if after.GoHeapMB > 2*first.GoHeapMB+64 {
		t.Errorf("Go heap grew from %.1f to %.1f MB while scrolling", first.GoHeapMB, after.GoHeapMB)
	}
}

// writeBigRun stores a run of n images with synthetic scores, each image one
// of the dataset's test files.
func writeBigRun(t *testing.T, e *env, big string, n int) {
	var files []string
	if err := filepath.WalkDir(filepath.Join(e.root, "synth"), func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(path, string(filepath.Separator)+"test"+string(filepath.Separator)) && strings.HasSuffix(path, ".png") {
			files = append(files, path)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no test images")
	}
	meta := results.RunMeta{RunID: big, Kind: "test", Preset: "tiny", Checkpoint: e.model, Scorer: "pixel", Threshold: results.ThresholdInfo{Value: 0.5, Policy: "manual"}}
	meta.Dataset.Root = filepath.Join(e.root, "synth")
	rows := make([]results.ImageRow, n)
	maps := make([]results.MapRow, n)
	for i := range rows {
		score := float64((i*7919)%n) / float64(n) // a permutation of [0, 1)
		rows[i] = results.ImageRow{RunID: big, ImageID: int64(i), Category: []string{"woven", "disc"}[i%2], Path: files[i%len(files)], Split: "test",
			GroundTruth: int32(i % 3 % 2), Score: score, Scorer: "pixel", Threshold: 0.5}
		if score >= 0.5 {
			rows[i].Predicted = 1
		}
		maps[i] = results.Quantize(big, int64(i), 4, 4, make([]float32, 16))
	}
	if err := (results.Store{Root: filepath.Join(e.dataDir, "results")}).Write(results.Run{Meta: meta, Images: rows, Maps: maps}); err != nil {
		t.Fatal(err)
	}
}

// scrollFor turns the mouse wheel over (x, y) for d, a notch every 50 ms,
// sampling the frame rate.
func scrollFor(p *page, x, y float64, d time.Duration) []float64 {
	var fps []float64
	for t0 := time.Now(); time.Since(t0) < d; {
		// DevTools wants deltaX, and cdproto leaves a zero out: a
		// horizontal nudge far below a pixel.
		p.do("wheel", call(input.DispatchMouseEvent, input.DispatchMouseEventParams{Type: input.DispatchMouseEventTypeMouseWheel, X: x, Y: y, DeltaX: 1e-6, DeltaY: 240}))
		time.Sleep(50 * time.Millisecond)
		if st := p.state(); st.FPS > 0 {
			fps = append(fps, st.FPS)
		}
	}
	return fps
}
