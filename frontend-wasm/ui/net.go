//go:build js && wasm

package ui

import (
	"fmt"
	"image"
	"strings"
	"time"

	"github.com/hajimehoshi/ebiten/v2"

	"github.com/diad-project/diad/frontend-wasm/gallery"
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
		if c.RunID != a.runID || a.galleryView.view == nil || len(c.ImageIDs) == 0 {
			return
		}
		run := c.RunID
		go func() {
			infos, err := a.client.ImagesByID(a.ctx, run, c.ImageIDs)
			a.post(func() {
				if err != nil || run != a.runID || a.galleryView.view == nil {
					return // the slow poll of a reload will show it
				}
				a.galleryView.view.ReplaceAll(infos) // one refresh, however many
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
	if id == a.runID && a.galleryView.view != nil {
		return
	}
	a.runID, a.galleryView.view, a.thresholdView.tune, a.explorerView.exp = id, nil, nil, nil
	a.galleryView.undo.Drop() // undo belongs to the run it was done on
	a.galleryView.thumbs.reset()
	a.galleryView.overlays.reset()
	a.galleryView.scroll = 0
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
			a.run, a.thresholdView.metrics = run, table
			if merr != nil {
				a.thresholdView.metrics = nil
			}
			a.galleryView.view = gallery.NewView(images, run.Threshold)
			if m, err := tuning.NewTuner(images, run.Threshold); err == nil {
				a.thresholdView.tune = m
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
	if t, ok := a.galleryView.thumbs.tex[im.ImageID]; ok {
		return t
	}
	if a.painting || a.galleryView.thumbs.loading[im.ImageID] || a.decodes >= a.cfg.MaxDecodes || !a.galleryView.lastScroll.IsZero() {
		return nil
	}
	a.galleryView.thumbs.loading[im.ImageID] = true
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
				delete(a.galleryView.thumbs.loading, id)
				a.fail(fmt.Errorf("image %d: %w", id, err))
				return
			}
			a.galleryView.thumbs.put(id, img)
			if sel, ok := a.selected(); ok && sel.ImageID == id {
				a.dirty = true
			}
		})
	}()
	return nil
}
