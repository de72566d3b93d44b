//go:build js && wasm && diadhook

// The test hook: window.diadState() returns the client's state as JSON
// (package hook), for the end-to-end test. Only a client built with the
// diadhook tag (the e2e test's build) has it.

package ui

import (
	"encoding/json"
	"fmt"
	"math"
	"runtime"
	"sort"
	"time"

	"github.com/hajimehoshi/ebiten/v2"

	"github.com/diad-project/diad/frontend-wasm/hook"
	"github.com/diad-project/diad/frontend-wasm/monitor"
)

func (b *baseline) state() string {
	s, err := json.Marshal(hook.State{Ready: b.frames > 0, Tab: "baseline", FPS: ebiten.ActualFPS(), Frames: b.frames})
	if err != nil { // a State always encodes; say so if it ever does not
		return fmt.Sprintf(`{"errors":[%q]}`, err.Error())
	}
	return string(s)
}

// stateJSON is window.diadState().
func (a *App) stateJSON() string {
	s := hook.State{Ready: a.frames > 0, Connected: a.connected, Server: a.server, Reconnects: a.reconnects,
		Width: a.cssW, Height: a.cssH, DPR: float64(uiScale / presentZoom), Presenter: a.presenter, Tab: tabNames[a.tab], Run: a.runID, Runs: len(a.runs), Selected: -1,
		Editing: a.editing, Note: string(a.note), Scale: "threshold", Status: a.status, Errors: a.errors,
		FPS: ebiten.ActualFPS(), Frames: a.frames, Partials: a.partials, Pending: a.decodes, WorkMS: a.workMS(), Widgets: map[string]hook.Rect{}, Saved: a.run.Threshold.Policy, SavedPerCategory: len(a.run.Threshold.PerCategory),
		SelectedJob: a.trainingView.board.Shown()}
	if a.explorerView.scaleMinMax {
		s.Scale = "minmax"
	}
	s.Captions = a.explorerView.captions
	s.Latent = "rgb"
	if a.explorerView.latentChannels {
		s.Latent = "channels"
	}
	if a.statusErr {
		s.Status = "error: " + a.status
	}
	for k, r := range a.widgets {
		s.Widgets[k] = r.hook()
	}
	if a.galleryView.view != nil {
		s.Images, s.Visible, s.Columns = len(a.galleryView.view.Images), len(a.galleryView.view.Visible()), galleryColumns(a)
		s.ScoreFilter = hook.ScoreFilter{Limited: a.galleryView.view.Filter.ScoreLimited()}
		s.ScoreFilter.Min, s.ScoreFilter.Max = a.galleryView.view.ScoreRange()
		if im, ok := a.galleryView.view.Selected(); ok {
			s.Selected, s.Verdict = im.ImageID, im.AnalystLabel
			s.Range = len(a.galleryView.view.Range())
			if !a.editing {
				s.Note = im.AnalystNote
			}
		}
	}
	s.LossLog, s.LossSmooth = a.trainingView.lossLog, monitor.Smoothings[a.trainingView.lossSmooth]
	s.StepMillis = a.stepTime().Milliseconds()
	s.Exported, s.LabelsPushed, s.FeedError = a.exported, a.labelsPushed, a.feedErr
	s.TrajectoryExport = a.explorerView.trajectoryExport
	s.Thumbs, s.ThumbsLoading, s.ThumbCache = len(a.galleryView.thumbs.tex), len(a.galleryView.thumbs.loading), a.galleryView.thumbs.limit
	s.GalleryScroll = float64(a.galleryView.scroll)
	s.Overlay, s.Overlays, s.OverlayMasks = overlayNames[a.galleryView.overlay], len(a.galleryView.overlays.tex), a.galleryView.overlays.masks
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s.GoHeapMB, s.GoSysMB = float64(ms.HeapInuse)/(1<<20), float64(ms.Sys)/(1<<20)
	s.BulkSaved = a.galleryView.bulkSaved
	s.Metrics = len(a.thresholdView.metrics)
	if e, ok := a.galleryView.undo.Last(); ok {
		s.Undo = e.What
	}
	for name := range a.disabled {
		s.Disabled = append(s.Disabled, name)
	}
	sort.Strings(s.Disabled)
	if a.thresholdView.tune != nil {
		k := a.thresholdView.tune.Confusion()
		m := a.thresholdView.tune.Shown()
		s.Threshold, s.Policy = m.Threshold, m.Policy
		s.PerCategory, s.Scope = a.thresholdView.tune.PerCategory, a.thresholdView.tune.Scope
		s.CategoryThresholds = a.thresholdView.tune.Threshold().PerCategory
		s.Confusion = hook.Confusion{TP: k.TP, FP: k.FP, TN: k.TN, FN: k.FN, F1: nanToZero(k.F1)}
		s.AUROC, s.AP = nanToZero(m.AUROC), nanToZero(m.AP)
	}
	if e := a.explorerView.exp; e != nil && e.traj != nil {
		s.Trajectory = a.trajectoryState(e)
	}
	for _, id := range a.trainingView.board.Order() {
		j := a.trainingView.board.Job(id)
		s.Jobs = append(s.Jobs, hook.Job{ID: id, Kind: j.Job.Kind, State: j.Job.State, Error: j.Job.Error, Step: j.Job.Progress.Step, Total: j.Job.Progress.Total,
			LossPoints: len(j.Loss), Events: j.Events, Series: monitor.Stages(j.Loss)})
	}
	b, err := json.Marshal(s)
	if err != nil {
		return fmt.Sprintf(`{"Status":%q}`, err.Error())
	}
	return string(b)
}

// trajectoryState is the explorer's trajectory (and its comparison) in the
// hook's state.
func (a *App) trajectoryState(e *explorer) hook.Trajectory {
	t := e.traj
	h := hook.Trajectory{Image: e.image.ImageID, Upload: e.upload, Total: t.Total, Received: t.Received, Cursor: e.player.Cursor,
		Playing: e.player.Playing, Complete: t.Complete(), MaxCursor: e.maxCursor, Played: e.played, T0: t.StartT, Failed: e.failed}
	if t.Final != nil {
		h.Score = t.Final.Score
	}
	h.SchedulePoints = len(t.Signal)
	h.Pictured = e.pictured()
	h.StepMS = int(a.stepTime() / time.Millisecond)
	if ht, sig, ok := scheduleHighlight(t, e.player.Cursor); ok {
		h.HighlightT, h.Signal, h.Noise = ht, sig, math.Sqrt(max(0, 1-sig*sig))
	}
	if c := e.cmp; c != nil {
		h.Compare = hook.Comparison{Mode: compareModes[c.mode].name, Cursor: -1, Failed: c.failed}
		if ct := c.traj; ct != nil {
			cm := &h.Compare
			cm.Guidance, cm.T0, cm.Total, cm.Received, cm.Complete = ct.Guidance, ct.StartT, ct.Total, ct.Received, ct.Complete()
			cm.Cursor = e.compareCursor()
			cm.CursorT = stepT(ct, cm.Cursor)
			if ct.Final != nil {
				cm.Score = ct.Final.Score
			}
			for _, v := range ct.Scores() {
				if !math.IsNaN(v) {
					cm.Scores++
				}
			}
		}
	}
	return h
}

func nanToZero(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

func (a *App) workMS() map[string]float64 {
	out := make(map[string]float64, len(a.work))
	for k, d := range a.work {
		out[k] = float64(d) / float64(time.Millisecond)
	}
	return out
}

// exposeTestState installs window.diadState() for the app.
func (a *App) exposeTestState() { exposeState(a.stateJSON) }

// exposeTestState installs window.diadState() for the baseline game.
func (b *baseline) exposeTestState() { exposeState(b.state) }
