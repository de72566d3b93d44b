//go:build js && wasm

package ui

import (
	"errors"
	"fmt"

	"github.com/diad-project/diad/frontend-wasm/gallery"
	"github.com/diad-project/diad/shared"
)

// setVerdict writes the analyst verdict (keeping notes) of the selected
// image, or of every image of the selected range at once.
func (a *App) setVerdict(v string) {
	if a.galleryView.view == nil {
		return
	}
	if rng := a.galleryView.view.Range(); len(rng) > 1 {
		a.bulkVerdict(rng, v, fmt.Sprintf("%d selected images", len(rng)))
		return
	}
	if im, ok := a.selected(); ok {
		a.saveLabel(im, shared.LabelRequest{Verdict: v, Note: im.AnalystNote, User: a.user})
	}
}

// viewVerdict sets a verdict on every image the gallery's filters show.
func (a *App) viewVerdict(v string) {
	if a.galleryView.view == nil {
		return
	}
	vis := a.galleryView.view.Visible()
	images := make([]shared.ImageInfo, len(vis))
	for k, i := range vis {
		images[k] = a.galleryView.view.Images[i]
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
			if run == a.runID && a.galleryView.view != nil {
				a.galleryView.undo.Push(desc, images)
				a.galleryView.view.ReplaceAll(infos)
			}
			a.galleryView.bulkSaved = len(infos)
			a.setStatus(fmt.Sprintf("%s, saved by %s (z undoes)", desc, a.user))
		})
	}()
}

// undoBulk puts back the labels the last bulk verdict replaced.
func (a *App) undoBulk() {
	req, e, ok := a.galleryView.undo.Pop(a.user)
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
					a.galleryView.undo.Restore(e) // still undoable
				}
				a.fail(fmt.Errorf("undo %s: %w", e.What, err))
				return
			}
			if run == a.runID && a.galleryView.view != nil {
				a.galleryView.view.ReplaceAll(infos)
			}
			a.galleryView.bulkSaved = len(infos)
			a.setStatus(fmt.Sprintf("undone: %s (%d images as before)", e.What, len(infos)))
		})
	}()
}

// selected is the gallery's selected image, if a run is loaded.
func (a *App) selected() (shared.ImageInfo, bool) {
	if a.galleryView.view == nil {
		return shared.ImageInfo{}, false
	}
	return a.galleryView.view.Selected()
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
			if run == a.runID && a.galleryView.view != nil {
				a.galleryView.view.Replace(info)
				a.galleryView.view.Select(info.ImageID)
			}
			v := info.AnalystLabel
			if v == "" {
				v = "cleared"
			}
			a.setStatus(fmt.Sprintf("image %d: %s, saved by %s", info.ImageID, v, info.AnalystUser))
		})
	}()
}
