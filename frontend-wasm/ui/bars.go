//go:build js && wasm

package ui

import (
	"fmt"
	"strings"
	"time"

	"github.com/hajimehoshi/ebiten/v2"

	"github.com/diad-project/diad/frontend-wasm/api"
)

func (a *App) drawTopBar(dst *ebiten.Image, r rect) {
	fill(dst, r, colPanel)
	line(dst, r.X, r.Y+r.H-0.5, r.X+r.W, r.Y+r.H-0.5, 1, colBorder)
	drawBold(dst, "diad", r.X+14, r.Y+11, sizeTitle, colText)
	// Right side first (right to left: connection, exports, user); the run
	// selector gets what is left, so narrow windows clip it, not overlap.
	rx := r.X + r.W - 12
	conn, ccol := "offline", colError
	if a.connected {
		conn, ccol = "connected", colOK
	}
	cw := textWidth(conn, sizeSmall)
	drawText(dst, conn, rx-cw, r.Y+13, sizeSmall, ccol)
	fill(dst, rect{rx - cw - 14, r.Y + 17, 8, 8}, ccol)
	rx -= cw + 26
	for _, ex := range []struct{ name, label, format string }{{"export:csv", "Export CSV", api.ExportCSV}, {"export:parquet", "Export Parquet", api.ExportParquet}} {
		bw := textWidth(ex.label, sizeBody) + 20
		rx -= bw
		ex := ex
		br := rect{rx, r.Y + 6, bw, r.H - 12}
		if a.galleryView.view == nil {
			// Nothing to export until a run is loaded: shown, not clickable.
			a.disabledButton(dst, br, ex.name, ex.label)
		} else {
			a.button(dst, br, ex.name, ex.label, false, func() { a.export(ex.format) })
		}
		rx -= 6
	}
	x := r.X + 64
	for i, name := range tabNames {
		w := textWidth(name, sizeBody) + 24
		i := i
		a.button(dst, rect{x, r.Y + 6, w, r.H - 12}, "tab:"+strings.ToLower(name), name, a.tab == i, func() { a.tab = i })
		x += w + 4
	}
	x += 10
	runLabel := "no run yet"
	if a.runID != "" {
		runLabel = "run " + a.runID
	}
	u := "user: " + a.user
	uw := textWidth(u, sizeSmall) + 16
	space := rx - x - 4
	if space > textWidth(runLabel, sizeBody)+24+uw {
		drawText(dst, u, rx-uw+6, r.Y+13, sizeSmall, colDim)
		space -= uw
	}
	if w := min(textWidth(runLabel, sizeBody)+24, space); w > 40 {
		a.button(dst, rect{x, r.Y + 6, w, r.H - 12}, "run", runLabel, false, a.nextRun)
	}
}

func (a *App) drawStatusBar(dst *ebiten.Image, r rect) {
	fill(dst, r, colPanel)
	line(dst, r.X, r.Y+0.5, r.X+r.W, r.Y+0.5, 1, colBorder)
	// The frame rate means something only while frames flow; an idle page
	// draws none.
	fps := "idle"
	if a.busy {
		fps = fmt.Sprintf("%.0f fps", ebiten.ActualFPS())
	}
	right := fps + "   1-4 views · j/k move · a/n/u/x verdict · t note · Enter explore · space play · ←/→ step · c channels · shift+j/k range · z undo · o overlay · v compare · p present"
	rw := textWidth(right, sizeSmall)
	if rw > r.W*0.55 {
		right = fps
		rw = textWidth(right, sizeSmall)
	}
	drawText(dst, right, r.X+r.W-rw-10, r.Y+5, sizeSmall, colDim)
	msg, col := a.status, colText
	if a.statusErr {
		col = colError
		msg = "error: " + msg
	} else if time.Since(a.statusAt) >= statusDims {
		col = colDim
	}
	drawText(dst, clip(msg, r.W-rw-30, sizeSmall), r.X+10, r.Y+5, sizeSmall, col)
}
