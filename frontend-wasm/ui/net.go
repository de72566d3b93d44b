//go:build js && wasm

package ui

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io/fs"
	"maps"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hajimehoshi/ebiten/v2"

	"github.com/diad-project/diad/backend/visual"
	"github.com/diad-project/diad/frontend-wasm/api"
	"github.com/diad-project/diad/frontend-wasm/gallery"
	"github.com/diad-project/diad/frontend-wasm/trajectory"
	"github.com/diad-project/diad/frontend-wasm/tuning"
	"github.com/diad-project/diad/shared"
)

// pollLoop lists runs and jobs; new runs appear in the run selector and the
// first one is opened; active jobs get a websocket follower.
func (a *App) pollLoop() {
	var seen string
	for {
		runs, err := a.client.Runs(a.ctx)
		jobs, err2 := a.client.Jobs(a.ctx)
		// Unchanged answers change nothing on screen: posting them would
		// repaint an idle page every PollEvery.
		if err == nil && err2 == nil {
			if now := fmt.Sprint(runs, jobs); now == seen {
				a.waitPoll()
				continue
			} else {
				seen = now
			}
		} else {
			seen = ""
		}
		a.post(func() {
			if err != nil {
				a.fail(fmt.Errorf("list runs: %w", err))
			} else {
				a.runs = runs
				if a.runID == "" && len(runs) > 0 {
					a.selectRun(runs[len(runs)-1].RunID)
				}
			}
			if err2 == nil {
				a.updateJobs(jobs)
			}
		})
		a.waitPoll()
	}
}

// waitPoll waits for the next listing: PollEvery, or at once when the
// change feed says jobs or runs changed.
func (a *App) waitPoll() {
	select {
	case <-a.pollNow:
	case <-time.After(a.cfg.PollEvery):
	case <-a.ctx.Done():
	}
}

// changesLoop follows the server's change feed for the life of the page:
// labels other analysts set appear at once, new jobs and runs are listed at
// once. Missed changes are caught up by the slow poll.
func (a *App) changesLoop() {
	backoff := a.cfg.Reconnect
	for a.ctx.Err() == nil {
		err := a.client.FollowChanges(a.ctx, func(c shared.Change) {
			backoff.Reset()
			a.post(func() { a.feedErr = ""; a.onChange(c) })
		})
		if a.ctx.Err() != nil {
			return
		}
		// Retried below; the denoise connection reports the server's state
		// in the status bar, the state hook this.
		a.post(func() { a.feedErr = err.Error() })
		time.Sleep(backoff.Next())
		// The feed was down: whatever changed meanwhile is listed now.
		select {
		case a.pollNow <- struct{}{}:
		default:
		}
	}
}

// onChange refetches what a change names.
func (a *App) onChange(c shared.Change) {
	switch c.Kind {
	case shared.ChangeJobs, shared.ChangeRuns:
		select {
		case a.pollNow <- struct{}{}:
		default:
		}
	case shared.ChangeThreshold:
		if c.RunID == a.runID {
			a.reloadThreshold(c.RunID)
		}
	case shared.ChangeLabels:
		if c.RunID != a.runID || a.view == nil || len(c.ImageIDs) == 0 {
			return
		}
		run := c.RunID
		go func() {
			infos, err := a.client.ImagesByID(a.ctx, run, c.ImageIDs)
			a.post(func() {
				if err != nil || run != a.runID || a.view == nil {
					return // the slow poll of a reload will show it
				}
				a.view.ReplaceAll(infos) // one refresh, however many
				a.labelsPushed += len(infos)
			})
		}()
	}
}

// showNotices puts the server's notices (e.g. that the demo model could not
// be loaded) in the status bar once, at start.
func (a *App) showNotices() {
	st, err := a.client.Status(a.ctx)
	if err != nil || len(st.Notices) == 0 {
		return
	}
	a.post(func() { a.setStatus("notice: " + strings.Join(st.Notices, " ")) })
}

// selectRun loads a run's record and images into the gallery and tuner.
func (a *App) selectRun(id string) {
	if id == a.runID && a.view != nil {
		return
	}
	a.runID, a.view, a.tune, a.exp = id, nil, nil, nil
	a.undo.Drop() // undo belongs to the run it was done on
	a.thumbs.reset()
	a.overlays.reset()
	a.galleryScroll = 0
	a.setStatus("loading run " + id)
	go func() {
		run, err := a.client.Run(a.ctx, id)
		var images []shared.ImageInfo
		if err == nil {
			images, err = a.client.Images(a.ctx, id)
		}
		// The metrics table is extra: a run without one (predict) still
		// shows its images.
		table, merr := a.client.Metrics(a.ctx, id)
		a.post(func() {
			if id != a.runID {
				return
			}
			if err != nil {
				a.fail(fmt.Errorf("load run %s: %w", id, err))
				a.runID = ""
				return
			}
			a.run, a.metrics = run, table
			if merr != nil {
				a.metrics = nil
			}
			a.view = gallery.NewView(images, run.Threshold)
			if m, err := tuning.NewTuner(images, run.Threshold); err == nil {
				a.tune = m
			} else {
				a.fail(err)
			}
			a.setStatus(fmt.Sprintf("run %s: %d images, threshold %s (%s)", id, len(images), fmtScore(run.Threshold.Value), run.Threshold.Policy))
		})
	}()
}

// thumb returns an image's thumbnail, starting its download and decode when
// it is not there yet (nil meanwhile).
func (a *App) thumb(im shared.ImageInfo) *ebiten.Image {
	if t, ok := a.thumbs.tex[im.ImageID]; ok {
		return t
	}
	if a.painting || a.thumbs.loading[im.ImageID] || a.decodes >= a.cfg.MaxDecodes || !a.lastScroll.IsZero() {
		return nil
	}
	a.thumbs.loading[im.ImageID] = true
	a.decodes++
	run, id, side := a.runID, im.ImageID, a.cfg.ThumbSide
	go func() {
		data, err := a.client.Source(a.ctx, run, id)
		var img *image.RGBA
		if err == nil {
			img, err = decodeImage(data, side)
		}
		// A thumbnail shows in the grid, and in the review panel when its
		// image is the selected one (then the page repaints whole).
		a.postRegion(regionGrid, func() {
			a.decodes--
			if run != a.runID {
				return
			}
			if err != nil {
				delete(a.thumbs.loading, id)
				a.fail(fmt.Errorf("image %d: %w", id, err))
				return
			}
			a.thumbs.put(id, img)
			if sel, ok := a.selected(); ok && sel.ImageID == id {
				a.dirty = true
			}
		})
	}()
	return nil
}

// setVerdict writes the analyst verdict (keeping notes) of the selected
// image, or of every image of the selected range at once.
func (a *App) setVerdict(v string) {
	if a.view == nil {
		return
	}
	if rng := a.view.Range(); len(rng) > 1 {
		a.bulkVerdict(rng, v, fmt.Sprintf("%d selected images", len(rng)))
		return
	}
	if im, ok := a.selected(); ok {
		a.saveLabel(im, shared.LabelRequest{Verdict: v, Note: im.AnalystNote, User: a.user})
	}
}

// viewVerdict sets a verdict on every image the gallery's filters show.
func (a *App) viewVerdict(v string) {
	if a.view == nil {
		return
	}
	vis := a.view.Visible()
	images := make([]shared.ImageInfo, len(vis))
	for k, i := range vis {
		images[k] = a.view.Images[i]
	}
	if len(images) > 0 {
		a.bulkVerdict(images, v, fmt.Sprintf("all %d images of this view", len(images)))
	}
}

// bulkVerdict saves one verdict for many images in one request and
// remembers their labels before it, so that z undoes it.
func (a *App) bulkVerdict(images []shared.ImageInfo, verdict, what string) {
	run := a.runID
	req := gallery.BulkVerdict(images, verdict, a.user)
	label := verdict
	if label == "" {
		label = "cleared"
	}
	desc := fmt.Sprintf("%s → %s", what, label)
	a.setStatus("saving " + desc + "…")
	go func() {
		infos, err := a.client.SetLabels(a.ctx, run, req)
		a.post(func() {
			if err != nil {
				a.fail(fmt.Errorf("save %s: %w", desc, err))
				return
			}
			if run == a.runID && a.view != nil {
				a.undo.Push(desc, images)
				a.view.ReplaceAll(infos)
			}
			a.bulkSaved = len(infos)
			a.setStatus(fmt.Sprintf("%s, saved by %s (z undoes)", desc, a.user))
		})
	}()
}

// undoBulk puts back the labels the last bulk verdict replaced.
func (a *App) undoBulk() {
	req, e, ok := a.undo.Pop(a.user)
	if !ok {
		a.setStatus("nothing to undo")
		return
	}
	run := a.runID
	a.setStatus("undoing " + e.What + "…")
	go func() {
		infos, err := a.client.SetLabels(a.ctx, run, req)
		a.post(func() {
			if err != nil {
				if run == a.runID {
					a.undo.Restore(e) // still undoable
				}
				a.fail(fmt.Errorf("undo %s: %w", e.What, err))
				return
			}
			if run == a.runID && a.view != nil {
				a.view.ReplaceAll(infos)
			}
			a.bulkSaved = len(infos)
			a.setStatus(fmt.Sprintf("undone: %s (%d images as before)", e.What, len(infos)))
		})
	}()
}

// selected is the gallery's selected image, if a run is loaded.
func (a *App) selected() (shared.ImageInfo, bool) {
	if a.view == nil {
		return shared.ImageInfo{}, false
	}
	return a.view.Selected()
}

func (a *App) startNote() {
	im, ok := a.selected()
	if !ok {
		return
	}
	if im.AnalystLabel == "" {
		a.fail(errors.New("set a verdict first (a, n or u), then t to add a note"))
		return
	}
	a.editing, a.note = true, []rune(im.AnalystNote)
}

func (a *App) saveNote(note string) {
	if im, ok := a.selected(); ok {
		a.saveLabel(im, shared.LabelRequest{Verdict: im.AnalystLabel, Note: note, User: a.user})
	}
}

func (a *App) saveLabel(im shared.ImageInfo, req shared.LabelRequest) {
	run := a.runID
	a.setStatus(fmt.Sprintf("saving verdict of image %d…", im.ImageID))
	go func() {
		info, err := a.client.SetLabel(a.ctx, run, im.ImageID, req)
		a.post(func() {
			if err != nil {
				a.fail(fmt.Errorf("save verdict of image %d: %w", im.ImageID, err))
				return
			}
			if run == a.runID && a.view != nil {
				a.view.Replace(info)
				a.view.Select(info.ImageID)
			}
			v := info.AnalystLabel
			if v == "" {
				v = "cleared"
			}
			a.setStatus(fmt.Sprintf("image %d: %s, saved by %s", info.ImageID, v, info.AnalystUser))
		})
	}()
}

// reloadThreshold shows a threshold saved (by this page or another) with
// the open run: the "saved" line always, and the tuner and gallery too
// unless this page holds a threshold of its own not yet saved.
func (a *App) reloadThreshold(run string) {
	go func() {
		info, err := a.client.Run(a.ctx, run)
		a.post(func() {
			if err != nil || run != a.runID || a.tune == nil || a.view == nil {
				return // the next selection of the run shows it
			}
			unsaved := !sameThreshold(a.tune.Threshold(), a.run.Threshold)
			a.run = info
			if unsaved || sameThreshold(a.tune.Threshold(), info.Threshold) {
				return
			}
			tu, err := tuning.NewTuner(a.view.Images, info.Threshold)
			if err != nil {
				a.fail(err)
				return
			}
			tu.Scope = a.tune.Scope
			a.tune = tu
			a.thresholdChanged()
			a.setStatus(fmt.Sprintf("threshold of run %s set to %s (%s) by %s", run, thresholdLabel(info.Threshold, gallery.Any), info.Threshold.Policy, info.Threshold.SetBy))
		})
	}()
}

// sameThreshold compares what two thresholds decide (not who set them).
func sameThreshold(x, y shared.RunThreshold) bool {
	return x.Value == y.Value && x.Policy == y.Policy && maps.Equal(x.PerCategory, y.PerCategory)
}

// thresholdChanged spreads a new threshold from the tuner to the gallery.
func (a *App) thresholdChanged() {
	if a.view != nil && a.tune != nil {
		a.view.Threshold = a.tune.Threshold()
		a.view.Refresh()
	}
}

func (a *App) saveThreshold() {
	if a.tune == nil {
		return
	}
	th := a.tune.Threshold()
	run, req := a.runID, shared.ThresholdRequest{Value: th.Value, PerCategory: th.PerCategory, Policy: th.Policy, User: a.user}
	go func() {
		info, err := a.client.SetThreshold(a.ctx, run, req)
		a.post(func() {
			if err != nil {
				a.fail(fmt.Errorf("save threshold: %w", err))
				return
			}
			if run == a.runID {
				a.run = info
			}
			what := fmtScore(req.Value)
			if len(req.PerCategory) > 0 {
				what = fmt.Sprintf("per category (%d)", len(req.PerCategory))
			}
			a.setStatus(fmt.Sprintf("threshold %s (%s) saved with run %s", what, req.Policy, run))
		})
	}()
}

// denoiseChannel is one denoise websocket's purpose: where its requests
// come from and where its frames and refusals go. The explorer's trajectory
// has one, a comparison beside it another, so that both stream at once.
type denoiseChannel struct {
	reqs chan shared.DenoiseRequest
	// onFrame stores a frame; onRefused shows why a request could not run.
	onFrame   func(shared.Frame, [][]byte)
	onRefused func(msg string)
	// primary channels report the connection state on the page.
	primary bool
}

// explorerChannel carries the explorer's own trajectories.
func (a *App) explorerChannel() denoiseChannel {
	return denoiseChannel{reqs: a.denoiseReq, onFrame: a.onFrame, primary: true, onRefused: func(msg string) {
		if a.exp != nil && a.exp.traj != nil && !a.exp.traj.Complete() {
			a.exp.failed = msg
		}
	}}
}

// requestComparison asks for a comparison trajectory on a second websocket,
// opened on first use (a page that never compares keeps one connection).
func (a *App) requestComparison(r shared.DenoiseRequest) {
	if a.compareReq == nil {
		a.compareReq = make(chan shared.DenoiseRequest, 1)
		go a.denoiseLoop(denoiseChannel{reqs: a.compareReq, onFrame: a.onCompareFrame, onRefused: func(msg string) {
			if e := a.exp; e != nil && e.cmp != nil && e.cmp.traj != nil && !e.cmp.traj.Complete() {
				e.cmp.failed = msg
			}
		}})
	}
	replaceRequest(a.compareReq, r)
}

// denoiseLoop keeps one denoise websocket open, reconnecting with backoff.
// A new request while one streams drops the connection and starts over on a
// fresh one (the server keeps computing; its result stays cached), so frames
// of an abandoned trajectory never reach the screen.
func (a *App) denoiseLoop(ch denoiseChannel) {
	backoff := a.cfg.Reconnect
	var pending *shared.DenoiseRequest // to (re)send once connected
	// gen numbers connections; frames of an older one are stale. It is
	// read by the frame loop, hence atomic.
	var gen atomic.Int64
	for {
		ctx, cancel := context.WithCancel(a.ctx)
		d, err := a.client.DialDenoise(ctx)
		if err != nil {
			cancel()
			if ch.primary {
				a.post(func() {
					if a.connected {
						a.fail(err)
					}
					a.connected = false
				})
			}
			select {
			case r := <-ch.reqs:
				pending = &r
			case <-time.After(backoff.Next()):
			}
			continue
		}
		backoff.Reset()
		myGen := gen.Add(1)
		if ch.primary {
			a.post(func() {
				if a.server != "" {
					a.reconnects++
					a.setStatus("reconnected to " + d.Server)
				}
				a.connected, a.server = true, d.Server
			})
		}
		done := make(chan struct{}, 1)
		readErr := make(chan error, 1)
		go func() {
			for {
				f, blobs, err := d.Next(ctx)
				var se *api.StreamError
				if errors.As(err, &se) {
					a.post(func() {
						a.fail(se)
						ch.onRefused(se.Message)
					})
					select {
					case done <- struct{}{}:
					case <-ctx.Done():
						return
					}
					continue
				}
				if err != nil {
					readErr <- err
					return
				}
				deliver := func() {
					if myGen == gen.Load() {
						ch.onFrame(f, blobs)
					}
				}
				if ch.primary {
					a.postQuiet(deliver) // onFrame repaints what it changes on screen
				} else {
					a.post(deliver)
				}
				if f.Type == shared.TypeFinal {
					select {
					case done <- struct{}{}:
					case <-ctx.Done():
						return
					}
				}
			}
		}()
		busy := false
		var sent shared.DenoiseRequest
		send := func(r shared.DenoiseRequest) bool {
			if err := d.Request(ctx, r); err != nil {
				return false
			}
			busy, pending, sent = true, nil, r
			return true
		}
		if pending != nil && !send(*pending) {
			cancel()
			continue
		}
	conn:
		for {
			select {
			case r := <-ch.reqs:
				if busy {
					pending = &r
					break conn // abandon the running stream
				}
				if !send(r) {
					pending = &r
					break conn
				}
			case <-done:
				busy = false
			case err := <-readErr:
				if busy && pending == nil {
					// Resend what was streaming; the server replays it.
					pending = &sent
				}
				a.post(func() {
					if ch.primary {
						a.connected = false
					}
					a.fail(fmt.Errorf("connection lost (%v); reconnecting", err))
				})
				time.Sleep(backoff.Next())
				break conn
			}
		}
		d.Close()
		cancel()
		gen.Add(1) // frames still queued from this connection are stale
	}
}

// requestTrajectory asks for a new trajectory (replacing one not yet sent).
func (a *App) requestTrajectory(r shared.DenoiseRequest) { replaceRequest(a.denoiseReq, r) }

// replaceRequest queues r on a channel of capacity one, replacing a request
// not yet taken. Only the frame loop sends, so the send never blocks.
func replaceRequest(reqs chan shared.DenoiseRequest, r shared.DenoiseRequest) {
	select {
	case <-reqs:
	default:
	}
	reqs <- r
}

// onFrame stores a frame of the explorer's trajectory and starts decoding
// its pictures.
func (a *App) onFrame(f shared.Frame, blobs [][]byte) {
	defer func(start time.Time) { a.addWork("frames", time.Since(start)) }(time.Now())
	e := a.exp
	if e == nil || e.traj == nil {
		return
	}
	if e.traj.ID != "" && f.Trajectory != e.traj.ID {
		return // an older request's frames
	}
	first := e.traj.Steps == nil
	e.prefetched = false // a step may have come to decode
	if err := e.traj.Add(f, blobs, time.Now()); err != nil {
		a.fail(err)
		return
	}
	// A frame of a step not on screen changes only the timeline's count,
	// repainted with the next quiet repaint; the first frame (the layout
	// of the steps), the shown step's and the final one repaint now.
	if first || f.Type == shared.TypeFinal || e.player == nil {
		a.dirty = true
	} else if f.Step == e.player.Cursor {
		a.repaint[regionLive] = true
	}
	e.startCompare(a) // a comparison waits for the start level
	if f.Type == shared.TypeFinal {
		a.setStatus(fmt.Sprintf("%s: %d steps in %.1fs, score %s", e.name(), e.traj.Total,
			e.traj.Done.Sub(e.traj.Started).Seconds(), fmtScore(f.Score)))
		if b, ok := e.traj.Final.Blobs[shared.BlobReconstruction]; ok {
			a.decodeInto(e, "final:reconstruction", regionLive, b.Data)
		}
		return
	}
	// A dropped image is shown at the model's resolution, like run images,
	// so its map can be blended over it.
	if b, ok := e.traj.Steps[f.Step].Blobs[shared.ProductMap]; ok && e.source != nil && e.mapW == 0 {
		e.mapW, e.mapH = b.Width, b.Height
		src, w, h := e.source, b.Width, b.Height
		a.decodes++
		go func() {
			img, err := decodeImageTo(src, w, h)
			a.post(func() {
				a.decodes--
				if err != nil {
					a.fail(fmt.Errorf("dropped image: %w", err))
				} else if a.exp == e {
					e.setInput(img)
				}
			})
		}()
	}
	// The step's pictures are decoded when shown (decodeShown). Its raw
	// latents are decoded now: each widens the range the channel view
	// draws every step at.
	for _, raw := range []string{shared.BlobRawZt, shared.BlobRawX0} {
		if b, ok := e.traj.Steps[f.Step].Blobs[raw]; ok {
			a.latentInto(e, f.Step, raw, b)
		}
	}
}

// latentInto decodes a raw [c, h, w] latent in the background and keeps it
// for the channel view.
func (a *App) latentInto(e *explorer, step int, name string, b trajectory.Blob) {
	a.decodes++
	traj := e.traj
	go func() {
		start := time.Now()
		values, err := shared.DecodeF16(b.Blob, b.Data)
		if err == nil && len(b.Shape) != 3 {
			err = fmt.Errorf("latent of shape %v, want [c, h, w]", b.Shape)
		}
		spread := visual.AbsQuantile(values, visual.LatentQuantile)
		took := time.Since(start)
		a.postRegion(regionLatents, func() {
			a.addWork("latents", took)
			a.decodes--
			if err != nil {
				a.fail(fmt.Errorf("step %d %s: %w", step, name, err))
				return
			}
			if e.current(a, traj) {
				e.setLatent(step, name, rawLatent{values, b.Shape}, spread)
			}
		})
	}()
}

// decodeInto decodes a PNG in the background into the explorer's textures;
// region is what shows it.
func (a *App) decodeInto(e *explorer, key, region string, data []byte) {
	traj := e.traj
	a.decodeTexture(key, data, region, func() bool { return e.current(a, traj) }, func(img *ebiten.Image) {
		if old := e.tex[key]; old != nil {
			old.Deallocate()
		}
		e.tex[key] = img
		delete(e.decoding, key)
	})
}

// decodeTexture decodes a PNG in the background and hands it to set as a
// texture, if current still says it belongs on screen; the page repaints
// region for it (and the status bar, which a failure's message goes to).
func (a *App) decodeTexture(what string, data []byte, region string, current func() bool, set func(*ebiten.Image)) {
	a.decodes++
	go func() {
		img, err := decodeImage(data, 0)
		a.postRegion(region, func() {
			a.decodes--
			if err != nil {
				a.fail(fmt.Errorf("%s: %w", what, err))
				return
			}
			if current() {
				set(ebiten.NewImageFromImage(img))
			}
		})
	}()
}

// openSelected opens the gallery's selected image in the explorer.
func (a *App) openSelected() {
	im, ok := a.selected()
	if !ok {
		return
	}
	a.tab = tabExplorer
	if a.exp != nil && a.exp.image.ImageID == im.ImageID && a.exp.run == a.runID {
		return
	}
	a.replaceExplorer(im)
	run, id := a.runID, im.ImageID
	e := a.exp
	a.decodes++
	go func() {
		src, err := a.client.Source(a.ctx, run, id)
		var m api.MapPNG
		if err == nil {
			m, err = a.client.Map(a.ctx, run, id)
		}
		var mapImg, srcImg *image.RGBA
		if err == nil {
			mapImg, err = decodeImage(m.PNG, 0)
		}
		if err == nil {
			srcImg, err = decodeImageTo(src, mapImg.Bounds().Dx(), mapImg.Bounds().Dy())
		}
		a.post(func() {
			a.decodes--
			if err != nil {
				a.fail(fmt.Errorf("open image %d: %w", id, err))
				return
			}
			if a.exp == e {
				e.setStored(srcImg, mapImg, m.Offset, m.Scale)
			}
		})
	}()
	a.exp.rerun(a)
}

// uploadDropped sends the first file dropped on the page to the server and
// opens it in the explorer (runs in a goroutine: reading a dropped file
// waits for the browser).
func (a *App) uploadDropped(fsys fs.FS) {
	entries, err := fs.ReadDir(fsys, ".")
	var name string
	var data []byte
	if err == nil {
		err = errors.New("no file in the drop")
		for _, en := range entries {
			if !en.IsDir() {
				name = en.Name()
				data, err = fs.ReadFile(fsys, name)
				break
			}
		}
	}
	var up shared.Upload
	if err == nil {
		up, err = a.client.Upload(a.ctx, data)
	}
	a.post(func() {
		if err != nil {
			a.fail(fmt.Errorf("dropped file %s: %w", name, err))
			return
		}
		a.openUpload(name, data, up)
	})
}

// openUpload shows an uploaded image in the explorer.
func (a *App) openUpload(name string, data []byte, up shared.Upload) {
	a.tab = tabExplorer
	e := a.replaceExplorer(shared.ImageInfo{ImageID: -1, Category: "upload", Path: name})
	e.upload, e.source, e.run = up.ID, data, ""
	e.rerun(a)
	// Show the file at once (at its own size); the first map frame
	// replaces it with the model's resolution.
	a.decodes++
	go func() {
		img, err := decodeImage(data, 512)
		a.post(func() {
			a.decodes--
			if err == nil && a.exp == e && e.mapW == 0 {
				e.setInput(img)
			}
		})
	}()
}

// replaceExplorer frees the explorer's textures and starts a new one for im
// with the same sampling controls.
func (a *App) replaceExplorer(im shared.ImageInfo) *explorer {
	prev := a.exp
	if prev != nil {
		prev.free()
	}
	a.exp = newExplorer(a, im, prev)
	return a.exp
}

// jobView is a job as the training monitor follows it.
type jobView struct {
	job       shared.Job
	loss, val []point // (step, loss)
	events    int
	messages  []string
	following bool
	loaded    bool // its history was streamed once (finished jobs)
}

// point is one loss value: x the step, stage the training stage it belongs
// to (each stage is its own series: their steps restart and their losses
// differ in scale).
type point struct {
	x, y  float64
	stage string
}

func (a *App) updateJobs(jobs []shared.Job) {
	for _, j := range jobs {
		v, ok := a.jobs[j.ID]
		if !ok {
			v = &jobView{}
			a.jobs[j.ID] = v
			a.jobOrder = append(a.jobOrder, j.ID)
		}
		// The websocket is fresher than the listing while it runs.
		if !v.following || j.State != shared.JobRunning {
			v.job = j
		}
		// Active jobs are followed live; a finished one replays its
		// history once, when the monitor shows it.
		active := !api.JobEnded(j.State)
		if !v.following && (active || (j.ID == a.selJob && !v.loaded && a.tab == tabTraining)) {
			v.following, v.loaded = true, true
			go a.followJob(j.ID)
		}
	}
	sort.SliceStable(a.jobOrder, func(x, y int) bool { return a.jobs[a.jobOrder[x]].job.Created.After(a.jobs[a.jobOrder[y]].job.Created) })
	// Until the user picks one, the monitor shows the newest job.
	if !a.selJobPicked && len(a.jobOrder) > 0 {
		a.selJob = a.jobOrder[0]
	}
}

// followShownJob replays the events of the job the monitor shows, once,
// when it is finished (running jobs are followed from the listing).
func (a *App) followShownJob() {
	if v := a.jobs[a.selJob]; v != nil && !v.following && !v.loaded {
		v.following, v.loaded = true, true
		go a.followJob(a.selJob)
	}
}

// followJob streams a job's events; after a dropped connection the poll
// loop starts it again and the history is replayed from the start.
func (a *App) followJob(id string) {
	a.post(func() {
		if v := a.jobs[id]; v != nil {
			v.loss, v.val, v.events, v.messages = nil, nil, 0, nil
		}
	})
	err := a.client.FollowJob(a.ctx, id, func(ev shared.JobEvent) {
		a.post(func() { a.onJobEvent(id, ev) })
	})
	a.post(func() {
		if v := a.jobs[id]; v != nil {
			v.following = false
		}
		if err != nil {
			a.fail(err)
		}
	})
}

func (a *App) onJobEvent(id string, ev shared.JobEvent) {
	v := a.jobs[id]
	if v == nil {
		return
	}
	v.events++
	if ev.State != "" {
		v.job.State = ev.State
	}
	if ev.Total > 0 {
		v.job.Progress = ev.JobProgress
	}
	switch ev.Kind {
	case shared.EventStep:
		if ev.Loss != 0 {
			v.loss = append(v.loss, point{float64(ev.Step), ev.Loss, ev.Stage})
		}
	case "validation":
		v.val = append(v.val, point{float64(ev.Step), ev.ValLoss, ev.Stage})
	}
	if ev.Message != "" {
		v.messages = append(v.messages, ev.Time.Format("15:04:05")+"  "+ev.Kind+": "+ev.Message)
		if len(v.messages) > 200 {
			v.messages = v.messages[len(v.messages)-200:]
		}
	}
	if ev.Kind == shared.EventDone || ev.State == shared.JobSucceeded {
		a.setStatus(fmt.Sprintf("%s job %s %s", v.job.Kind, id, ev.State))
	}
}
