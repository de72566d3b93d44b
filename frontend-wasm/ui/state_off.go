//go:build js && wasm && !diadhook

package ui

// exposeTestState does nothing: only a client built with the diadhook tag
// (the end-to-end test's) answers window.diadState().
func (a *App) exposeTestState() {}

// exposeTestState does nothing without the diadhook tag.
func (b *baseline) exposeTestState() {}
