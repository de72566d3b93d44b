//go:build js && wasm

package ui

import (
	"github.com/hajimehoshi/ebiten/v2"
	"github.com/hajimehoshi/ebiten/v2/inpututil"
)

// keys handles the keyboard: a note being typed takes every key.
func (a *App) keys() {
	if a.editing {
		a.runes = ebiten.AppendInputChars(a.runes[:0])
		a.note = append(a.note, a.runes...)
		switch {
		case inpututil.IsKeyJustPressed(ebiten.KeyBackspace) && len(a.note) > 0:
			a.note = a.note[:len(a.note)-1]
		case inpututil.IsKeyJustPressed(ebiten.KeyEnter):
			a.editing = false
			a.saveNote(string(a.note))
		case inpututil.IsKeyJustPressed(ebiten.KeyEscape):
			a.editing = false
		}
		return
	}
	pressed := inpututil.IsKeyJustPressed
	for i, k := range []ebiten.Key{ebiten.Key1, ebiten.Key2, ebiten.Key3, ebiten.Key4} {
		if pressed(k) {
			a.tab = i
		}
	}
	switch {
	case pressed(ebiten.KeyJ):
		a.move(1, ebiten.IsKeyPressed(ebiten.KeyShift))
	case pressed(ebiten.KeyK):
		a.move(-1, ebiten.IsKeyPressed(ebiten.KeyShift))
	case pressed(ebiten.KeyZ):
		a.undoBulk()
	case pressed(ebiten.KeyO):
		a.galleryView.overlay = (a.galleryView.overlay + 1) % len(overlayNames)
	case pressed(ebiten.KeyA):
		a.setVerdict("anomalous")
	case pressed(ebiten.KeyN):
		a.setVerdict("normal")
	case pressed(ebiten.KeyU):
		a.setVerdict("unsure")
	case pressed(ebiten.KeyX):
		a.setVerdict("")
	case pressed(ebiten.KeyT):
		a.startNote()
	case pressed(ebiten.KeyM):
		a.explorerView.scaleMinMax = !a.explorerView.scaleMinMax
	case pressed(ebiten.KeyC):
		a.explorerView.latentChannels = !a.explorerView.latentChannels
	case pressed(ebiten.KeyH):
		a.explorerView.captions = !a.explorerView.captions
	case pressed(ebiten.KeyEnter) && a.tab == tabGallery:
		a.openSelected()
	case pressed(ebiten.KeyP):
		a.presenter = !a.presenter
	case pressed(ebiten.KeyEscape) && a.presenter:
		a.presenter = false
	case pressed(ebiten.KeyEscape):
		a.tab = tabGallery
	case pressed(ebiten.KeyBracketRight):
		a.nextRun()
	}
}

// move selects the image d places on; extend (shift) grows the range
// instead of starting over.
func (a *App) move(d int, extend bool) {
	if a.galleryView.view == nil {
		return
	}
	if extend {
		if p := a.galleryView.view.Position(); p >= 0 {
			vis := a.galleryView.view.Visible()
			q := min(max(p+d, 0), len(vis)-1)
			a.galleryView.view.SelectRange(a.galleryView.view.Images[vis[q]].ImageID)
		}
	} else {
		a.galleryView.view.ClearRange()
		a.galleryView.view.Move(d)
	}
	a.galleryView.scrollToSelected = true
	if a.tab == tabExplorer {
		a.openSelected()
	}
}

func (a *App) nextRun() {
	if len(a.runs) == 0 {
		return
	}
	i := 0
	for k, r := range a.runs {
		if r.RunID == a.runID {
			i = (k + 1) % len(a.runs)
		}
	}
	a.selectRun(a.runs[i].RunID)
}
