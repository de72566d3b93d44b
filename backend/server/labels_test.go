package server

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"image/png"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

// writeRun writes a test run of rows (on the env's dataset, scored by the
// pixel scorer, blank 4x4 maps) into the server's results.
func writeRun(t *testing.T, e *env, run string, threshold float64, rows []results.ImageRow) {
	t.Helper()
	meta := results.RunMeta{RunID: run, Kind: "test", Preset: "tiny", Checkpoint: e.model, Scorer: "pixel",
		Threshold: results.ThresholdInfo{Value: threshold, Policy: "max-f1"}}
	meta.Dataset.Root = e.dataset
	maps := make([]results.MapRow, len(rows))
	for i := range rows {
		rows[i].RunID, rows[i].Split, rows[i].Scorer, rows[i].Threshold = run, "test", "pixel", threshold
		maps[i] = results.Quantize(run, rows[i].ImageID, 4, 4, make([]float32, 16))
	}
	if err := (results.Store{Root: e.srv.cfg.ResultsDir}).Write(results.Run{Meta: meta, Images: rows, Maps: maps}); err != nil {
		t.Fatal(err)
	}
}

// labelRun writes a run of n images into the server's results.
func labelRun(t *testing.T, e *env, n int) string {
	t.Helper()
	run := "20260102T000000Z-1abe15"
	rows := make([]results.ImageRow, n)
	for i := range rows {
		rows[i] = results.ImageRow{ImageID: int64(i), Category: "woven", Path: filepath.Join(e.dataset, "woven/test/good/000.png"), Score: float64(i) / float64(n)}
	}
	writeRun(t, e, run, 0.5, rows)
	return run
}

// Bulk labels set one verdict for many images and undo puts back what they
// replaced; the history says who changed what, when and from what, through
// the REST API and the export; bad requests change nothing.
func TestBulkLabelsUndoAndHistory(t *testing.T) {
	e := startEnv(t, nil)
	run := labelRun(t, e, 6)
	put := func(req any) (*http.Response, []byte) {
		return e.do(t, "PUT", "/api/v1/runs/"+run+"/labels", req, "Content-Type", "application/json")
	}
	// One image reviewed first, alone.
	if r, body := e.do(t, "PUT", "/api/v1/runs/"+run+"/images/2/label", shared.LabelRequest{Verdict: "unsure", Note: "edge", User: "ana"}, "Content-Type", "application/json"); r.StatusCode != 200 {
		t.Fatalf("label: %d %s", r.StatusCode, body)
	}
	bulk := shared.BulkLabelRequest{User: "bo", Action: shared.LabelActionBulk}
	for i := int64(1); i <= 4; i++ {
		bulk.Labels = append(bulk.Labels, shared.ImageLabel{ImageID: i, Verdict: "normal"})
	}
	r, body := put(bulk)
	var got []shared.ImageInfo
	if r.StatusCode != 200 || json.Unmarshal(body, &got) != nil || len(got) != 4 {
		t.Fatalf("bulk: %d %s", r.StatusCode, body)
	}
	var page shared.ImagePage
	e.call(t, "GET", "/api/v1/runs/"+run+"/images?verdict=normal&limit=100", nil, &page)
	if page.Total != 4 || page.Images[0].AnalystUser != "bo" {
		t.Fatalf("after bulk: %d normal images, %+v", page.Total, page.Images)
	}
	// Undo: image 2 back to unsure with its note, the rest unlabelled.
	undo := shared.BulkLabelRequest{User: "bo", Action: shared.LabelActionUndo, Labels: []shared.ImageLabel{{ImageID: 1}, {ImageID: 2, Verdict: "unsure", Note: "edge"}, {ImageID: 3}, {ImageID: 4}}}
	if r, body := put(undo); r.StatusCode != 200 {
		t.Fatalf("undo: %d %s", r.StatusCode, body)
	}
	e.call(t, "GET", "/api/v1/runs/"+run+"/images?verdict=normal&limit=100", nil, &page)
	if page.Total != 0 {
		t.Fatalf("after undo: %d normal images", page.Total)
	}
	e.call(t, "GET", "/api/v1/runs/"+run+"/images?verdict=unsure&limit=100", nil, &page)
	if page.Total != 1 || page.Images[0].ImageID != 2 || page.Images[0].AnalystNote != "edge" {
		t.Fatalf("after undo: unsure images %+v", page.Images)
	}
	var hist []shared.LabelChange
	e.call(t, "GET", "/api/v1/runs/"+run+"/labels/history", nil, &hist)
	count := map[string]int{}
	for _, h := range hist {
		count[h.Action]++
	}
	if len(hist) != 9 || count["set"] != 1 || count["bulk"] != 4 || count["undo"] != 4 {
		t.Fatalf("history: %d entries %v", len(hist), count)
	}
	if h := hist[2]; h.ImageID != 2 || h.User != "bo" || h.FromVerdict != "unsure" || h.FromNote != "edge" || h.ToVerdict != "normal" || h.Time.IsZero() {
		t.Fatalf("image 2's bulk entry: %+v", h)
	}
	// Exported with the results.
	r, body = e.do(t, "GET", "/api/v1/runs/"+run+"/export?table=history&format=csv", nil)
	recs, err := csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if r.StatusCode != 200 || err != nil || len(recs) != 10 || recs[0][4] != "action" {
		t.Fatalf("history export: %d %v %d records", r.StatusCode, err, len(recs))
	}
	refusedBulkLabels(t, e, run, put, len(hist))
}

// refusedBulkLabels: an unknown image (404), a bad verdict, an image twice,
// no labels, an unknown action or field (400) are refused, and the run's
// history keeps its entries.
func refusedBulkLabels(t *testing.T, e *env, run string, put func(req any) (*http.Response, []byte), entries int) {
	for want, req := range map[int]shared.BulkLabelRequest{
		404: {Action: "bulk", Labels: []shared.ImageLabel{{ImageID: 0, Verdict: "normal"}, {ImageID: 99, Verdict: "normal"}}},
	} {
		if r, body := put(req); r.StatusCode != want {
			t.Errorf("%+v: %d %s, want %d", req, r.StatusCode, body, want)
		}
	}
	for i, req := range []shared.BulkLabelRequest{
		{Action: "bulk", Labels: []shared.ImageLabel{{ImageID: 0, Verdict: "maybe"}}},
		{Action: "bulk", Labels: []shared.ImageLabel{{ImageID: 0, Verdict: "normal"}, {ImageID: 0, Verdict: "anomalous"}}},
		{Action: "bulk"},
		{Action: "redo", Labels: []shared.ImageLabel{{ImageID: 0, Verdict: "normal"}}},
		{Action: "set", Labels: []shared.ImageLabel{{ImageID: 0, Verdict: "normal"}}},
	} {
		if r, body := put(req); r.StatusCode != 400 {
			t.Errorf("request %d %+v: %d %s, want 400", i, req, r.StatusCode, body)
		}
	}
	if r, body := put(`{"labels":[{"image_id":0,"verdict":"normal"}],"action":"bulk","extra":1}`); r.StatusCode != 400 || !strings.Contains(string(body), "extra") {
		t.Errorf("unknown field: %d %s", r.StatusCode, body)
	}
	var again []shared.LabelChange
	e.call(t, "GET", "/api/v1/runs/"+run+"/labels/history", nil, &again)
	if len(again) != entries {
		t.Fatalf("refused requests changed the history: %d entries, were %d", len(again), entries)
	}
	if r, _ := e.do(t, "GET", fmt.Sprintf("/api/v1/runs/%s/labels/history", "nope"), nil); r.StatusCode != 404 {
		t.Fatalf("history of an unknown run: %d", r.StatusCode)
	}
}

// call sends a request and decodes a 200 answer's JSON into out.
func (e *env) call(t *testing.T, method, path string, body, out any) {
	t.Helper()
	r, b := e.do(t, method, path, body)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %d %s", method, path, r.StatusCode, b)
	}
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatalf("%s %s: %v in %s", method, path, err, b)
	}
}

// An anomalous image's ground-truth mask comes from the run's dataset; a
// normal image has none (404).
func TestImageMaskFromTheRunsDataset(t *testing.T) {
	e := startEnv(t, nil)
	run := "20260103T000000Z-3a5c00"
	writeRun(t, e, run, 0.5, []results.ImageRow{
		{ImageID: 0, Category: "woven", Path: filepath.Join(e.dataset, "woven", "test", "good", "000.png")},
		{ImageID: 1, Category: "disc", Path: filepath.Join(e.dataset, "disc", "test", "missing", "000.png"), GroundTruth: 1},
	})
	r, body := e.do(t, "GET", "/api/v1/runs/"+run+"/images/1/mask", nil)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("mask of the anomalous image: %d %s", r.StatusCode, body)
	}
	img, err := png.Decode(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	white := 0
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if g, _, _, _ := img.At(x, y).RGBA(); g > 0x8000 {
				white++
			}
		}
	}
	if white == 0 || white == b.Dx()*b.Dy() {
		t.Fatalf("mask with %d of %d pixels set", white, b.Dx()*b.Dy())
	}
	for path, want := range map[string]int{"/api/v1/runs/" + run + "/images/0/mask": 404, "/api/v1/runs/" + run + "/images/7/mask": 404, "/api/v1/runs/20260103T000000Z-000000/images/1/mask": 404} {
		if r, body := e.do(t, "GET", path, nil); r.StatusCode != want {
			t.Errorf("%s: %d %s, want %d", path, r.StatusCode, body, want)
		}
	}
}

// A bulk verdict for a view of 30,000 images (a body over the general
// 1 MiB limit) is accepted whole.
func TestBulkLabelsOverTheGeneralBodyLimit(t *testing.T) {
	e := startEnv(t, nil)
	const n = 30_000
	run := labelRun(t, e, n)
	req := shared.BulkLabelRequest{User: "bo", Action: shared.LabelActionBulk, Labels: make([]shared.ImageLabel, n)}
	for i := range req.Labels {
		req.Labels[i] = shared.ImageLabel{ImageID: int64(i), Verdict: "normal", Note: "batch 7"}
	}
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if len(body) <= 1<<20 {
		t.Fatalf("test is vacuous: a body of %d bytes", len(body))
	}
	r, out := e.do(t, "PUT", "/api/v1/runs/"+run+"/labels", body, "Content-Type", "application/json")
	var got []shared.ImageInfo
	if r.StatusCode != 200 || json.Unmarshal(out, &got) != nil || len(got) != n {
		t.Fatalf("bulk of %d: %d %.200s", n, r.StatusCode, out)
	}
	var page shared.ImagePage
	e.call(t, "GET", "/api/v1/runs/"+run+"/images?verdict=normal&limit=1", nil, &page)
	if page.Total != n {
		t.Fatalf("%d normal images after the bulk verdict, want %d", page.Total, n)
	}
}

// A demo run installed by a server with another data folder is moved to
// this server's copy of the demo dataset on start, labels kept.
func TestDemoRunFollowsTheDataFolder(t *testing.T) {
	dir := demoModelDir(t, true)
	demo := filepath.Join(dir, "model.safetensors")
	resultsDir := t.TempDir()
	const run = "20260101T000000Z-abcdef"
	first := startEnv(t, func(c *Config) { c.Demo = true; c.DataDir = t.TempDir(); c.DemoModel = demo; c.ResultsDir = resultsDir })
	cancelQuickTraining(t, first)
	if r, body := first.do(t, "PUT", "/api/v1/runs/"+run+"/images/1/label", shared.LabelRequest{Verdict: "unsure", User: "ana"}, "Content-Type", "application/json"); r.StatusCode != 200 {
		t.Fatalf("label: %d %s", r.StatusCode, body)
	}
	first.stop()
	dataDir := t.TempDir()
	second := startEnv(t, func(c *Config) { c.Demo = true; c.DataDir = dataDir; c.DemoModel = demo; c.ResultsDir = resultsDir })
	cancelQuickTraining(t, second)
	var page shared.ImagePage
	second.call(t, "GET", "/api/v1/runs/"+run+"/images", nil, &page)
	want := filepath.Join(dataDir, demoData, demoSynthDir)
	if len(page.Images) != 2 {
		t.Fatalf("%d images", len(page.Images))
	}
	for _, im := range page.Images {
		if !strings.HasPrefix(im.Path, want) {
			t.Fatalf("image path %s is not in this server's demo dataset %s", im.Path, want)
		}
		if im.ImageID == 1 && (im.AnalystLabel != "unsure" || im.AnalystUser != "ana") {
			t.Fatalf("the label was lost: %+v", im)
		}
	}
	if r, _ := second.do(t, "GET", "/api/v1/runs/"+run+"/images/0/source", nil); r.StatusCode != 200 {
		t.Fatalf("the moved run's image: %d", r.StatusCode)
	}
}
