//go:build !js

package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/diad-project/diad/frontend-wasm/hook"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

func (br *browserRun) review(t *testing.T) {
	e, p, want, runID := br.e, br.pageFor(t), br.want, br.runID
	p.click("tab:gallery") // focus the canvas
	p.key("j")
	s := p.wait("j to select the next image", 10*time.Second, func(s hook.State) bool { return s.Selected == want.Images[1].ImageID })
	p.key("k")
	p.wait("k to go back", 10*time.Second, func(s hook.State) bool { return s.Selected == want.Images[0].ImageID })
	p.key("j")
	p.wait("j", 10*time.Second, func(s hook.State) bool { return s.Selected == want.Images[1].ImageID })
	id := s.Selected
	p.key("a")
	p.wait("the verdict to be saved", 20*time.Second, func(s hook.State) bool { return s.Verdict == "anomalous" })
	p.key("t")
	p.wait("note editing", 10*time.Second, func(s hook.State) bool { return s.Editing })
	p.typeText("scratch near rim")
	p.key("Enter")
	p.wait("the note to be saved", 20*time.Second, func(s hook.State) bool { return !s.Editing && s.Note == "scratch near rim" })
	// The server has it ...
	var page shared.ImagePage
	e.call(t, "GET", "/api/v1/runs/"+runID+"/images?verdict=anomalous", nil, &page)
	if page.Total != 1 || page.Images[0].ImageID != id || page.Images[0].AnalystNote != "scratch near rim" || page.Images[0].AnalystUser != "e2e" || page.Images[0].AnalystTime == nil {
		t.Fatalf("REST after review: %+v", page)
	}
	// ... and so does the Parquet file.
	rows, err := results.Store{Root: filepath.Join(e.dataDir, "results")}.Images(runID)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rows {
		if r.ImageID == id {
			found = r.AnalystLabel == "anomalous" && r.AnalystNote == "scratch near rim" && r.AnalystUser == "e2e"
		} else if r.AnalystLabel != "" {
			t.Fatalf("image %d labelled %q too", r.ImageID, r.AnalystLabel)
		}
	}
	if !found {
		t.Fatalf("Parquet rows do not carry the verdict of image %d", id)
	}
	p.shot("review")
}

func (br *browserRun) export(t *testing.T) {
	p, want := br.pageFor(t), br.want
	dl := t.TempDir()
	p.do("allow downloads", call(browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dl}))
	p.click("export:csv")
	p.click("export:parquet")
	csv := waitFile(t, dl, ".csv")
	pq := waitFile(t, dl, ".parquet")
	if rows := bytes.Count(csv, []byte("\n")) - 1; rows != want.Total {
		t.Errorf("the unfiltered export has %d rows, the run %d", rows, want.Total)
	}
	if !bytes.Contains(csv, []byte("scratch near rim")) || !bytes.HasPrefix(pq, []byte("PAR1")) {
		t.Fatalf("downloads: csv has note %v, parquet magic %q", bytes.Contains(csv, []byte("scratch near rim")), pq[:min(4, len(pq))])
	}
}

func (br *browserRun) labelsFromElsewhere(t *testing.T) {
	e, p, runID := br.e, br.pageFor(t), br.runID
	// Another analyst labels the image this page shows: the page hears
	// it on the change feed and shows it without a reload (the listing
	// poll is 15 s; this waits 10).
	p.t = t
	s := p.state()
	id, verdict, note := s.Selected, s.Verdict, s.Note
	pushed := s.LabelsPushed
	path := fmt.Sprintf("/api/v1/runs/%s/images/%d/label", runID, id)
	e.call(t, "PUT", path, shared.LabelRequest{Verdict: "unsure", Note: "from elsewhere", User: "other"}, nil)
	p.wait("another analyst's label", 10*time.Second, func(s hook.State) bool {
		return s.Selected == id && s.Verdict == "unsure" && s.Note == "from elsewhere" && s.LabelsPushed > pushed
	})
	e.call(t, "PUT", path, shared.LabelRequest{Verdict: verdict, Note: note, User: "e2e"}, nil)
	p.wait("the label restored", 10*time.Second, func(s hook.State) bool { return s.Verdict == verdict && s.Note == note })
	if f := p.state().FeedError; f != "" {
		t.Errorf("change feed: %s", f)
	}
}

func (br *browserRun) scoreFilter(t *testing.T) {
	e, p, runID := br.e, br.pageFor(t), br.runID
	selected := p.state().Selected
	// count asks the server how many of the run's images score in
	// [lo, hi]: the client's filter must agree with the REST filter.
	count := func(lo, hi float64) int {
		var page shared.ImagePage
		e.call(t, "GET", fmt.Sprintf("/api/v1/runs/%s/images?min_score=%s&max_score=%s&limit=1", runID,
			strconv.FormatFloat(lo, 'g', -1, 64), strconv.FormatFloat(hi, 'g', -1, 64)), nil, &page)
		return page.Total
	}
	bar := p.state().Widgets["scorerange"]
	_, y := bar.Center()
	// The lower handle from the left end to the middle.
	p.drag(bar[0]+1, y, bar[0]+bar[2]*0.5, y)
	s := p.wait("the lower score bound", 10*time.Second, func(s hook.State) bool {
		return s.ScoreFilter.Limited && s.Visible < s.Images
	})
	if s.Visible == 0 || s.Visible != count(s.ScoreFilter.Min, s.ScoreFilter.Max) {
		t.Fatalf("score >= %v: client shows %d, server counts %d", s.ScoreFilter.Min, s.Visible, count(s.ScoreFilter.Min, s.ScoreFilter.Max))
	}
	above := s.Visible
	// The upper handle from the right end to three quarters.
	p.drag(bar[0]+bar[2]-1, y, bar[0]+bar[2]*0.75, y)
	s = p.wait("the upper score bound", 10*time.Second, func(s hook.State) bool { return s.Visible < above })
	if s.ScoreFilter.Max <= s.ScoreFilter.Min || s.Visible != count(s.ScoreFilter.Min, s.ScoreFilter.Max) {
		t.Fatalf("score in [%v, %v]: client shows %d, server counts %d", s.ScoreFilter.Min, s.ScoreFilter.Max, s.Visible, count(s.ScoreFilter.Min, s.ScoreFilter.Max))
	}
	p.shot("gallery-score-filter")
	// Export this view: exactly the visible images, as CSV.
	dl := t.TempDir()
	p.do("allow downloads", call(browser.SetDownloadBehavior, browser.SetDownloadBehaviorParams{Behavior: browser.SetDownloadBehaviorBehaviorAllow, DownloadPath: dl}))
	p.click("export:csv")
	csv := waitFile(t, dl, ".csv")
	if rows := bytes.Count(csv, []byte("\n")) - 1; rows != s.Visible || p.state().Exported != s.Visible {
		t.Fatalf("exported %d rows (hook: %d) of a view of %d images", rows, p.state().Exported, s.Visible)
	}
	p.click("filter:score:all")
	s = p.wait("all scores again", 10*time.Second, func(s hook.State) bool { return !s.ScoreFilter.Limited && s.Visible == s.Images })
	// The range moved the selection; walk back up to the reviewed image.
	for i := 0; i < s.Images && s.Selected != selected; i++ {
		p.key("k")
		s = p.state()
	}
	if s.Selected != selected {
		t.Fatalf("selection %d, could not return to %d", s.Selected, selected)
	}
}

func (br *browserRun) bulkReview(t *testing.T) {
	e, p, want, runID := br.e, br.pageFor(t), br.want, br.runID
	start := p.state().Selected // want.Images[1], reviewed above
	if start != want.Images[1].ImageID {
		t.Fatalf("selected %d, want %d", start, want.Images[1].ImageID)
	}
	labels := func() map[int64]shared.ImageInfo { return br.labels(t) }
	history := func() []shared.LabelChange { return br.labelHistory(t) }
	before, h0 := labels(), len(history())
	// Shift+j twice: a range of three in the gallery's order.
	p.withShift(func() { p.key("j"); p.key("j") })
	p.wait("a range of three", 10*time.Second, func(s hook.State) bool { return s.Range == 3 })
	time.Sleep(200 * time.Millisecond)
	p.shot("gallery-range")
	p.key("n")
	p.wait("three verdicts saved at once", 20*time.Second, func(s hook.State) bool { return s.BulkSaved == 3 && s.Undo != "" })
	after := labels()
	for _, im := range want.Images[1:4] {
		got := after[im.ImageID]
		if got.AnalystLabel != "normal" || got.AnalystUser != "e2e" || got.AnalystNote != before[im.ImageID].AnalystNote {
			t.Errorf("image %d after the bulk verdict: %q by %q, note %q", im.ImageID, got.AnalystLabel, got.AnalystUser, got.AnalystNote)
		}
	}
	h := history()
	if len(h) != h0+3 || h[h0].Action != shared.LabelActionBulk || h[h0].ImageID != start || h[h0].FromVerdict != "anomalous" || h[h0].ToVerdict != "normal" {
		t.Fatalf("history after the bulk verdict: %+v", h[h0:])
	}
	// z puts back what it replaced.
	p.key("z")
	p.wait("the undo", 20*time.Second, func(s hook.State) bool { return s.Undo == "" && s.Verdict == before[s.Selected].AnalystLabel })
	undone := labels()
	for id, im := range before {
		if undone[id].AnalystLabel != im.AnalystLabel || undone[id].AnalystNote != im.AnalystNote {
			t.Errorf("image %d after undo: %q %q, before %q %q", id, undone[id].AnalystLabel, undone[id].AnalystNote, im.AnalystLabel, im.AnalystNote)
		}
	}
	if h = history(); len(h) != h0+6 || h[h0+3].Action != shared.LabelActionUndo {
		t.Fatalf("history after undo: %+v", h[h0:])
	}
	// One verdict for the filtered view, then the undo button.
	cat := want.Images[0].Category
	p.click("filter:category:" + cat)
	s := p.wait("one category", 10*time.Second, func(s hook.State) bool { return s.Visible < s.Images })
	p.click("view:unsure")
	p.wait("the view's verdicts", 20*time.Second, func(s hook.State) bool { return s.BulkSaved == s.Visible && s.Undo != "" })
	var page shared.ImagePage
	e.call(t, "GET", "/api/v1/runs/"+runID+"/images?verdict=unsure&category="+cat+"&limit=1000", nil, &page)
	if page.Total != s.Visible {
		t.Fatalf("%d images of %s unsure on the server, the view shows %d", page.Total, cat, s.Visible)
	}
	p.click("undo")
	p.wait("the view's undo", 20*time.Second, func(s hook.State) bool { return s.Undo == "" })
	for id, im := range labels() {
		if im.AnalystLabel != before[id].AnalystLabel {
			t.Errorf("image %d after the second undo: %q, before %q", id, im.AnalystLabel, before[id].AnalystLabel)
		}
	}
	br.checkHistoryExport(t)
	// Back to the start: all categories, the reviewed image alone.
	p.click("filter:category:*")
	s = p.wait("all categories", 10*time.Second, func(s hook.State) bool { return s.Visible == s.Images })
	// To the top with k, where the reviewed image (the second) is on
	// screen, then a plain click on it.
	for i := 0; i < s.Images && s.Selected != want.Images[0].ImageID; i++ {
		p.key("k")
		s = p.state()
	}
	p.click(fmt.Sprintf("thumb:%d", start))
	s = p.wait("the reviewed image selected alone", 10*time.Second, func(s hook.State) bool { return s.Selected == start })
	if s.Selected != start || s.Range != 1 {
		t.Fatalf("selection %d (range %d), could not return to %d", s.Selected, s.Range, start)
	}
}

func (br *browserRun) overlays(t *testing.T) {
	e, p, want, runID := br.e, br.pageFor(t), br.want, br.runID
	plain := p.shot("gallery-plain")
	grid := p.state().Widgets["grid"]
	// o: the stored maps over the thumbnails, coloured at the threshold.
	p.key("o")
	s := p.wait("heatmap overlays", time.Minute, func(s hook.State) bool {
		return s.Overlay == "heatmap" && s.Overlays > 0 && s.Pending == 0
	})
	time.Sleep(200 * time.Millisecond)
	heat := p.shot("gallery-heatmap")
	if d := meanDiff(plain, heat, grid); d < 2 {
		t.Errorf("the heatmap overlays look like the plain thumbnails (mean difference %.2f)", d)
	}
	// o again: the ground-truth masks' outlines (the anomalous images
	// on screen have masks; the normal ones none).
	p.key("o")
	s = p.wait("mask outlines", time.Minute, func(s hook.State) bool {
		return s.Overlay == "mask" && s.OverlayMasks > 0 && s.Pending == 0
	})
	time.Sleep(200 * time.Millisecond)
	masks := p.shot("gallery-masks")
	cyan := 0
	for y := int(grid[1]); y < int(grid[1]+grid[3]); y++ {
		for x := int(grid[0]); x < int(grid[0]+grid[2]); x++ {
			if r, g, b, _ := masks.At(x, y).RGBA(); r>>8 < 40 && g>>8 > 190 && b>>8 > 220 {
				cyan++
			}
		}
	}
	if cyan < 20 {
		t.Errorf("%d outline pixels in the grid with %d masks", cyan, s.OverlayMasks)
	}
	var anomalous, normal int64 = -1, -1
	for _, im := range want.Images {
		if im.GroundTruth == 1 && anomalous < 0 {
			anomalous = im.ImageID
		}
		if im.GroundTruth == 0 && normal < 0 {
			normal = im.ImageID
		}
	}
	for id, status := range map[int64]int{anomalous: 200, normal: 404} {
		r, err := http.Get(fmt.Sprintf("%s/api/v1/runs/%s/images/%d/mask", e.base, runID, id))
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Body.Close(); err != nil {
			t.Fatal(err)
		}
		if r.StatusCode != status {
			t.Errorf("mask of image %d: %d, want %d", id, r.StatusCode, status)
		}
	}
	p.key("o")
	p.key("o")
	p.wait("no overlays", 10*time.Second, func(s hook.State) bool { return s.Overlay == "off" })
}

// labels is the run's images by id, as the server has them now.
func (br *browserRun) labels(t *testing.T) map[int64]shared.ImageInfo {
	var page shared.ImagePage
	br.e.call(t, "GET", "/api/v1/runs/"+br.runID+"/images?limit=1000", nil, &page)
	out := map[int64]shared.ImageInfo{}
	for _, im := range page.Images {
		out[im.ImageID] = im
	}
	return out
}

// labelHistory is the run's verdict history.
func (br *browserRun) labelHistory(t *testing.T) []shared.LabelChange {
	var h []shared.LabelChange
	br.e.call(t, "GET", "/api/v1/runs/"+br.runID+"/labels/history", nil, &h)
	return h
}

// checkHistoryExport checks that the verdict history goes out with the
// results: a CSV line per change under a header.
func (br *browserRun) checkHistoryExport(t *testing.T) {
	e, runID, history := br.e, br.runID, func() []shared.LabelChange { return br.labelHistory(t) }
	r, err := http.Get(e.base + "/api/v1/runs/" + runID + "/export?table=history&format=csv")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(r.Body)
	if cerr := r.Body.Close(); err == nil {
		err = cerr
	}
	if err != nil || bytes.Count(body, []byte("\n")) != len(history())+1 {
		t.Fatalf("history export: %v, %d lines for %d changes", err, bytes.Count(body, []byte("\n")), len(history()))
	}
}
