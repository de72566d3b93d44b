//go:build js && wasm

package ui

import (
	"fmt"

	"github.com/hajimehoshi/ebiten/v2"

	"github.com/diad-project/diad/shared"
)

// drawExplorerHeader draws the header: the image and the sampling controls.
func (a *App) drawExplorerHeader(dst *ebiten.Image, head rect, e *explorer) {
	im := e.image
	gt := "normal"
	if im.GroundTruth == 1 {
		gt = "anomalous (" + im.Defect + ")"
	}
	title := fmt.Sprintf("#%d  %s  ·  ground truth %s  ·  run score %s", im.ImageID, im.Category, gt, fmtScore(im.Score))
	if e.upload != "" {
		title = "dropped image " + im.Path + " (not in a run)"
	}
	x := head.X
	// The title gives way to the controls (~600 px) in a narrow layout
	// (presenter mode).
	tw := min(textWidth(title, sizeBody), head.W*0.45, max(head.W-600, 120))
	drawText(dst, clip(title, tw, sizeBody), x, head.Y+8, sizeBody, colText)
	x += tw + 16
	control := func(name, label, value string, dec, inc func()) {
		lw := textWidth(label, sizeSmall)
		drawText(dst, label, x, head.Y+9, sizeSmall, colDim)
		x += lw + 6
		a.button(dst, rect{x, head.Y + 3, 24, 26}, name+":-", "−", false, dec)
		x += 26
		vw := max(textWidth(value, sizeBody)+12, 40)
		fill(dst, rect{x, head.Y + 3, vw, 26}, colBG)
		drawTextIn(dst, value, rect{x, head.Y + 3, vw, 26}, sizeBody, colText)
		a.mark(name, rect{x, head.Y + 3, vw, 26})
		x += vw + 2
		a.button(dst, rect{x, head.Y + 3, 24, 26}, name+":+", "+", false, inc)
		x += 34
	}
	// "noise t0" is the level the input is noised to (the request's, or the
	// model's default as the frames report it), never the first step's t.
	t0 := e.t0
	if t0 == 0 && e.traj != nil {
		t0 = e.traj.StartT
	}
	steps := e.steps
	if steps == 0 && e.traj != nil {
		steps = e.traj.Total
	}
	control("t0", "noise t0", orAuto(t0), func() { e.t0 = max(t0Min, roundTo(t0, t0Step)-t0Step) }, func() { e.t0 = min(t0Max, roundTo(t0, t0Step)+t0Step) })
	control("steps", "steps", orAuto(steps), func() { e.steps = max(stepsMin, steps-1) }, func() { e.steps = min(stepsMax, steps+1) })
	control("seed", "seed", fmt.Sprint(e.seed), func() {
		if e.seed > 0 {
			e.seed--
		}
	}, func() { e.seed++ })
	a.button(dst, rect{x, head.Y + 3, 90, 26}, "rerun", "Run (r)", false, func() { e.rerun(a) })
	x += 98
	// Switches, shown while they fit.
	toggle := func(name string, w float32, labels [2]string, on *bool) {
		if x+w >= head.X+head.W {
			return
		}
		label := labels[0]
		if *on {
			label = labels[1]
		}
		a.button(dst, rect{x, head.Y + 3, w, 26}, name, label, *on, func() { *on = !*on })
		x += w + 8
	}
	// What to compare this trajectory with (v cycles).
	if cw := float32(170); x+cw < head.X+head.W {
		mode := 0
		if e.cmp != nil {
			mode = e.cmp.mode
		}
		a.button(dst, rect{x, head.Y + 3, cw, 26}, "compare", compareModes[mode].label, mode > 0, func() { e.cycleCompare(a) })
		x += cw + 8
	}
	toggle("scale", 150, [2]string{"colours: threshold", "colours: min-max"}, &a.explorerView.scaleMinMax)
	toggle("latentview", 140, [2]string{"latent: RGB", "latent: channels"}, &a.explorerView.latentChannels)
}

// drawResultRow draws the input, the reconstruction (the step's prediction
// meanwhile), the anomaly map and its legend.
func (a *App) drawResultRow(dst *ebiten.Image, cols []rect, legend rect, step int, e *explorer) {
	// 1. input
	in := panel(dst, a.caption(dst, cols[0], "the image under test"), "Input")
	if e.inputTex != nil {
		a.mark("explorer:input", drawImageFit(dst, e.inputTex, in, ebiten.FilterLinear))
	} else {
		placeholder(dst, in, e.waiting())
	}
	// 2. reconstruction: the final one, or the step's prediction meanwhile
	rec := panel(dst, a.caption(dst, cols[1], "the last step's image: defects should be gone, the rest kept"), "Reconstruction")
	if t := e.tex["final:reconstruction"]; t != nil {
		a.mark("explorer:reconstruction", drawImageFit(dst, t, rec, ebiten.FilterLinear))
	} else if t := e.tex[fmt.Sprintf("step:%d:%s", step, shared.ProductImage)]; t != nil {
		drawImageFit(dst, t, rec, ebiten.FilterLinear)
		drawText(dst, "in progress", rec.X+4, rec.Y+rec.H-16, sizeSmall, colDim)
	} else {
		placeholder(dst, rec, "waiting for frames…")
	}
	// 3. heatmap overlay: the final map of this trajectory, else the run's
	hm := panel(dst, a.caption(dst, cols[2], "where input and reconstruction differ: the verdict"), "Anomaly map")
	var mapVals []float32
	mw, mh := e.mapW, e.mapH
	if e.traj != nil && e.traj.Final != nil {
		if b, ok := e.traj.Final.Blobs[shared.BlobMap]; ok {
			mapVals, mw, mh = shared.Dequantize(b.Blob, b.Data), b.Width, b.Height
		}
	}
	key := "final"
	if mapVals == nil {
		mapVals, key = e.stored, "stored"
	}
	if mapVals != nil && mw > 0 {
		t := a.heatTexture(e, key, mapVals, mw, mh, true)
		a.mark("explorer:heatmap", drawImageFit(dst, t, hm, ebiten.FilterLinear))
		verdict := "normal"
		score := e.image.Score
		if e.traj != nil && e.traj.Final != nil {
			score = e.traj.Final.Score
		}
		if shared.Predicted(score, a.threshold(e.image.Category)) {
			verdict = "ANOMALOUS"
		}
		drawText(dst, fmt.Sprintf("score %s · %s", fmtScore(score), verdict), hm.X+4, hm.Y+hm.H-16, sizeSmall, colText)
	} else {
		placeholder(dst, hm, e.waiting())
	}
	a.drawLegend(dst, legend, mapVals, e.image.Category)
}

// drawStepRow draws the playing step: z_t, the predicted clean latent, the
// predicted image (whose region includes recon, the reconstruction in
// progress) and the step's map.
func (a *App) drawStepRow(dst *ebiten.Image, stepRow, recon rect, step int, e *explorer) {
	// Step row: z_t, predicted clean latent, predicted image, step map.
	srow := stepRow.columns(4, 8)
	if a.explorerView.latentChannels {
		a.region(regionLatents, srow[0], srow[1])
	}
	tLabel := ""
	if step >= 0 && e.traj.Steps != nil && e.traj.Steps[step] != nil {
		tLabel = fmt.Sprintf(" (t=%d)", e.traj.Steps[step].T)
	}
	names := []struct{ key, raw, title, caption string }{
		{shared.ProductLatent, shared.BlobRawZt, "Latent z_t" + tLabel, "the input's latent with noise of level t: what the denoiser sees"},
		{shared.ProductX0Latent, shared.BlobRawX0, "Predicted clean latent", "the clean latent the denoiser, guided by the SG network, predicts from z_t"},
		{shared.ProductImage, "", "Predicted image", "that prediction decoded to pixels"},
	}
	for i, n := range names {
		channels := n.raw != "" && a.explorerView.latentChannels
		title := n.title
		if channels {
			title += " · channels"
		}
		a.region(pictureRegion(n.key), srow[i])
		if n.key == shared.ProductImage { // also the reconstruction in progress
			a.region(pictureRegion(n.key), recon)
		}
		p := panel(dst, a.caption(dst, srow[i], n.caption), title)
		// While a step's picture decodes, the nearest earlier one stays
		// (a panel that had a picture never goes blank).
		t, shown := e.nearestTex(step, n.key)
		if channels {
			var caption rect
			p, caption = p.cutTop(p.H-16, 2)
			var limit float64
			t, limit = e.channelTexture(step, n.raw, !a.painting)
			if t != nil { // the scale below the tiles
				drawText(dst, clip(fmt.Sprintf("channels 1-4 · blue −%g … orange +%g (beyond: clamped)", limit, limit), caption.W, sizeSmall), caption.X+4, caption.Y, sizeSmall, colDim)
			}
		}
		if t != nil {
			a.mark("step:"+n.key, drawImageFit(dst, t, p, ebiten.FilterNearest))
			if !channels {
				decoding(dst, p, shown, step)
			}
		} else {
			placeholder(dst, p, "–")
		}
		if n.raw != "" { // a click on a latent panel switches its view (c)
			a.hit("latent:"+n.key, srow[i], func() { a.explorerView.latentChannels = !a.explorerView.latentChannels })
		}
	}
	p := panel(dst, a.caption(dst, srow[3], "anomaly map of this step's predicted image against the input"), "Step anomaly map")
	if step >= 0 {
		v, w, h, k := nearestMap(e.stepMap, step) // the nearest earlier map meanwhile
		if v != nil {
			t := a.heatTexture(e, fmt.Sprintf("step%d", k), v, w, h, false)
			a.mark("step:map", drawImageFit(dst, t, p, ebiten.FilterLinear))
			drawText(dst, fmt.Sprintf("step %d · score %s", k+1, fmtScore(e.traj.Steps[k].Score)), p.X+4, p.Y+p.H-16, sizeSmall, colText)
		} else {
			placeholder(dst, p, "–")
		}
	} else {
		placeholder(dst, p, "–")
	}
}
