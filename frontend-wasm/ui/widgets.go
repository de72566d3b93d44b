//go:build js && wasm

package ui

import "github.com/hajimehoshi/ebiten/v2"

// mark records a widget's rectangle for input and the page's state hook
// (layout pass only).
func (a *App) mark(name string, r rect) {
	if !a.painting {
		a.widgets[name] = r
	}
}

// button draws a clickable button; fn runs in the next Update when clicked.
func (a *App) button(dst *ebiten.Image, r rect, name, label string, active bool, fn func()) {
	bg := colRaised
	if active {
		bg = colAccent
	} else if r.contains(a.mx, a.my) {
		bg = colBorder
	}
	fill(dst, r, bg)
	stroke(dst, r, 1, colBorder)
	size := float64(sizeBody)
	if textWidth(label, size) > r.W-8 {
		size = sizeSmall // a narrow button keeps its whole label if it can
	}
	drawTextIn(dst, clip(label, r.W-8, size), r, size, colText)
	a.hit(name, r, fn)
}

// disabledButton draws a button that cannot work yet; it is marked (the
// browser test finds it) but takes no click.
func (a *App) disabledButton(dst *ebiten.Image, r rect, name, label string) {
	fill(dst, r, colPanel)
	stroke(dst, r, 1, colBorder)
	drawTextIn(dst, clip(label, r.W-8, sizeBody), r, sizeBody, colDim)
	if !a.painting {
		a.widgets[name] = r
		a.disabled[name] = true
	}
}

// hit registers a clickable area (layout pass only).
func (a *App) hit(name string, r rect, fn func()) {
	if a.painting {
		return
	}
	a.widgets[name] = r
	delete(a.disabled, name)
	if a.click && r.contains(a.clickX, a.clickY) {
		a.click = false
		if fn != nil {
			a.actions = append(a.actions, fn)
		}
	}
}
