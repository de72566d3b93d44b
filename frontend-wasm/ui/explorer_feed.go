//go:build js && wasm

package ui

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io/fs"
	"sync/atomic"
	"time"

	"github.com/hajimehoshi/ebiten/v2"

	"github.com/diad-project/diad/backend/visual"
	"github.com/diad-project/diad/frontend-wasm/api"
	"github.com/diad-project/diad/frontend-wasm/trajectory"
	"github.com/diad-project/diad/shared"
)

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
	return denoiseChannel{reqs: a.explorerView.denoiseReq, onFrame: a.onFrame, primary: true, onRefused: func(msg string) {
		if a.explorerView.exp != nil && a.explorerView.exp.traj != nil && !a.explorerView.exp.traj.Complete() {
			a.explorerView.exp.failed = msg
		}
	}}
}

// requestComparison asks for a comparison trajectory on a second websocket,
// opened on first use (a page that never compares keeps one connection).
func (a *App) requestComparison(r shared.DenoiseRequest) {
	if a.explorerView.compareReq == nil {
		a.explorerView.compareReq = make(chan shared.DenoiseRequest, 1)
		go a.denoiseLoop(denoiseChannel{reqs: a.explorerView.compareReq, onFrame: a.onCompareFrame, onRefused: func(msg string) {
			if e := a.explorerView.exp; e != nil && e.cmp != nil && e.cmp.traj != nil && !e.cmp.traj.Complete() {
				e.cmp.failed = msg
			}
		}})
	}
	replaceRequest(a.explorerView.compareReq, r)
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
		go a.readFrames(ctx, d, ch, func() bool { return myGen == gen.Load() }, done, readErr)
		pending = a.streamRequests(ctx, d, ch, pending, done, readErr, &backoff)
		d.Close()
		cancel()
		gen.Add(1) // frames still queued from this connection are stale
	}
}

// readFrames hands the connection's frames to the frame loop while current
// says the connection is the latest, and signals done after each
// trajectory's final frame (or the server's refusal) and readErr when the
// connection fails.
func (a *App) readFrames(ctx context.Context, d *api.Denoiser, ch denoiseChannel, current func() bool, done chan<- struct{}, readErr chan<- error) {
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
			if current() {
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
}

// streamRequests sends the requests of ch on one connection, one trajectory
// at a time, until a request must abandon a running stream or the
// connection fails; it returns the request to send on the next connection
// (nil: none).
func (a *App) streamRequests(ctx context.Context, d *api.Denoiser, ch denoiseChannel, pending *shared.DenoiseRequest,
	done <-chan struct{}, readErr <-chan error, backoff *api.Backoff) *shared.DenoiseRequest {
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
		return pending
	}
	for {
		select {
		case r := <-ch.reqs:
			if busy || !send(r) {
				return &r // abandon the running stream, or resend on a new connection
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
			return pending
		}
	}
}

// requestTrajectory asks for a new trajectory (replacing one not yet sent).
func (a *App) requestTrajectory(r shared.DenoiseRequest) {
	replaceRequest(a.explorerView.denoiseReq, r)
}

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
	e := a.explorerView.exp
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
				} else if a.explorerView.exp == e {
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
	if a.explorerView.exp != nil && a.explorerView.exp.image.ImageID == im.ImageID && a.explorerView.exp.run == a.runID {
		return
	}
	a.replaceExplorer(im)
	run, id := a.runID, im.ImageID
	e := a.explorerView.exp
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
			if a.explorerView.exp == e {
				e.setStored(srcImg, mapImg, m.Offset, m.Scale)
			}
		})
	}()
	a.explorerView.exp.rerun(a)
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
			if err == nil && a.explorerView.exp == e && e.mapW == 0 {
				e.setInput(img)
			}
		})
	}()
}

// replaceExplorer frees the explorer's textures and starts a new one for im
// with the same sampling controls.
func (a *App) replaceExplorer(im shared.ImageInfo) *explorer {
	prev := a.explorerView.exp
	if prev != nil {
		prev.free()
	}
	a.explorerView.exp = newExplorer(a, im, prev)
	return a.explorerView.exp
}

// exportTrajectory downloads the explorer's trajectory drawn for slides,
// with every panel; the server computes it from the same request (the same
// pictures as the stream).
func (a *App) exportTrajectory(format string) {
	e := a.explorerView.exp
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
	a.explorerView.trajectoryExport = a.client.TrajectoryURL(x)
	download(a.explorerView.trajectoryExport, name)
	a.setStatus(fmt.Sprintf("drawing %s's trajectory as %s (%s)…", e.name(), ext, name))
}
