package server

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
	"nhooyr.io/websocket"

	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

func TestTestJobResultsQueryAndLabels(t *testing.T) {
	e := startEnv(t, nil)
	// An open page hears every change: collect what /ws/changes says.
	changes := followChanges(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	runID := runTestJob(ctx, t, e)
	img := queryAndReplay(ctx, t, e, runID)
	rows := labelOne(t, e, runID, img)
	expectChanges(t, changes, runID, img)
	checkExports(t, e, runID, img, rows)
	checkThreshold(t, e, runID)
}

// runTestJob runs a test job, following it on its websocket, and returns
// its run.
func runTestJob(ctx context.Context, t *testing.T, e *env) string {
	j := submit(t, e, shared.JobRequest{Kind: shared.JobTest, Config: map[string]any{"checkpoint": e.model, "data": map[string]any{"root": "synth"}, "batch_size": 4}})
	// Follow the job on its websocket.
	conn, _, err := websocket.Dial(ctx, strings.Replace(e.base, "http://", "ws://", 1)+"/api/v1/ws/jobs/"+j.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	var last shared.JobEvent
	events := 0
	for {
		_, msg, err := conn.Read(ctx)
		if err != nil {
			break
		}
		decode(t, msg, &last)
		events++
	}
	if last.State != shared.JobSucceeded || events < 3 {
		t.Fatalf("job stream ended with %+v after %d events", last, events)
	}
	done := waitJob(t, e, j.ID, shared.JobSucceeded)
	if done.RunID == "" {
		t.Fatalf("job %+v has no run", done)
	}
	return done.RunID
}

// queryAndReplay pages through the run's images and replays two of them in
// the explorer; it returns the top-scored image of the page.
func queryAndReplay(ctx context.Context, t *testing.T, e *env, runID string) int64 {
	_, body := e.do(t, "GET", "/api/v1/runs/"+runID+"/images?category=disc&sort=-score&limit=3&offset=1", nil)
	var page shared.ImagePage
	decode(t, body, &page)
	if page.Total != 4+2*4 || len(page.Images) != 3 || page.Images[0].Score < page.Images[1].Score || page.Images[0].Category != "disc" {
		t.Fatalf("page %+v", page)
	}
	if r, _ := e.do(t, "GET", "/api/v1/runs/"+runID+"/images?min_score=abc", nil); r.StatusCode != 400 {
		t.Fatalf("bad filter: %d", r.StatusCode)
	}
	img := page.Images[0].ImageID
	// The explorer replays a run image with the run's sampler and the
	// image's own noise: the same score as in the run, up to the float32
	// rounding of batched convolutions (the run scored it in a batch of
	// four; measured 4e-7 relative).
	for _, im := range page.Images[:2] {
		id := im.ImageID
		frames, _, err := denoise(t, ctx, e.base, shared.DenoiseRequest{RunID: runID, ImageID: &id, Products: []string{shared.ProductLatent}}, true)
		if err != nil {
			t.Fatal(err)
		}
		final := frames[len(frames)-1]
		if final.Type != shared.TypeFinal || math.Abs(final.Score-im.Score) > 2e-6*math.Abs(im.Score) {
			t.Fatalf("image %d: explorer score %v, run score %v", id, final.Score, im.Score)
		}
	}
	return img
}

// labelOne labels an image, checks the listing and the Parquet rows, and
// returns the rows.
func labelOne(t *testing.T, e *env, runID string, img int64) []results.ImageRow {
	var page shared.ImagePage
	r, body := e.do(t, "PUT", fmt.Sprintf("/api/v1/runs/%s/images/%d/label", runID, img), shared.LabelRequest{Verdict: "anomalous", Note: "dent", User: "qa"})
	if r.StatusCode != 200 {
		t.Fatalf("label: %d %s", r.StatusCode, body)
	}
	if r, _ := e.do(t, "PUT", fmt.Sprintf("/api/v1/runs/%s/images/%d/label", runID, img), shared.LabelRequest{Verdict: "maybe"}); r.StatusCode != 400 {
		t.Fatalf("bad verdict: %d", r.StatusCode)
	}
	_, body = e.do(t, "GET", "/api/v1/runs/"+runID+"/images?verdict=anomalous", nil)
	decode(t, body, &page)
	if page.Total != 1 || page.Images[0].AnalystNote != "dent" || page.Images[0].AnalystTime == nil {
		t.Fatalf("labelled page %+v", page)
	}
	rows, err := results.Store{Root: e.srv.cfg.ResultsDir}.Images(runID)
	if err != nil {
		t.Fatal(err)
	}
	for _, row := range rows {
		if (row.ImageID == img) != (row.AnalystLabel == "anomalous") {
			t.Fatalf("Parquet row %+v", row)
		}
	}
	return rows
}

// expectChanges waits for what the change feed says of the job, its run
// and the label.
func expectChanges(t *testing.T, changes <-chan shared.Change, runID string, img int64) {
	// What the change feed said: the job's states, its run, the label.
	want := map[string]bool{"jobs " + shared.JobQueued: true, "jobs " + shared.JobRunning: true, "jobs " + shared.JobSucceeded: true,
		"runs " + runID: true, fmt.Sprintf("labels %s %d", runID, img): true}
	deadline := time.After(10 * time.Second)
	for len(want) > 0 {
		select {
		case c, ok := <-changes:
			if !ok {
				t.Fatalf("the change feed ended; not heard: %v", want)
			}
			switch c.Kind {
			case shared.ChangeJobs:
				delete(want, "jobs "+c.State)
			case shared.ChangeRuns:
				delete(want, "runs "+c.RunID)
			case shared.ChangeLabels:
				if len(c.ImageIDs) == 1 && c.Type == shared.TypeChange {
					delete(want, fmt.Sprintf("labels %s %d", c.RunID, c.ImageIDs[0]))
				}
			}
		case <-deadline:
			t.Fatalf("not heard on /ws/changes: %v", want)
		}
	}
}

// checkExports downloads the run's files and exports of its views.
func checkExports(t *testing.T, e *env, runID string, img int64, rows []results.ImageRow) {
	if r, body := e.do(t, "GET", "/api/v1/runs/"+runID+"/export?format=csv", nil); r.StatusCode != 200 || !bytes.Contains(body, []byte("dent")) {
		t.Fatalf("export: %d", r.StatusCode)
	}
	if r, body := e.do(t, "GET", "/api/v1/runs/"+runID+"/files/images.parquet", nil); r.StatusCode != 200 || !bytes.HasPrefix(body, []byte("PAR1")) {
		t.Fatalf("parquet download: %d", r.StatusCode)
	}
	// Export what a view shows: the listing's filters and exact image ids,
	// as CSV or as Parquet a Parquet reader opens.
	if r, body := e.do(t, "GET", "/api/v1/runs/"+runID+"/export?format=csv&verdict=anomalous", nil); r.StatusCode != 200 ||
		bytes.Count(body, []byte("\n")) != 2 || !bytes.Contains(body, []byte("dent")) {
		t.Fatalf("export of the anomalous verdicts: %d\n%s", r.StatusCode, body)
	}
	pick := []int64{rows[0].ImageID, rows[len(rows)-1].ImageID}
	r, body := e.do(t, "GET", fmt.Sprintf("/api/v1/runs/%s/export?format=parquet&image_ids=%d,%d", runID, pick[0], pick[1]), nil)
	if r.StatusCode != 200 || r.Header.Get("Content-Type") != "application/vnd.apache.parquet" {
		t.Fatalf("parquet export: %d %s", r.StatusCode, r.Header.Get("Content-Type"))
	}
	exported, err := parquet.Read[results.ImageRow](bytes.NewReader(body), int64(len(body)))
	if err != nil {
		t.Fatal(err)
	}
	if len(exported) != 2 || exported[0].ImageID != pick[0] || exported[1].ImageID != pick[1] || exported[0].Path != rows[0].Path {
		t.Fatalf("exported rows %+v, want images %v", exported, pick)
	}
	for _, bad := range []string{"image_ids=1,x", "min_score=abc", "format=parquet&table=metrics", "format=xml"} {
		if r, _ := e.do(t, "GET", "/api/v1/runs/"+runID+"/export?"+bad, nil); r.StatusCode != 400 {
			t.Errorf("export?%s: %d, want 400", bad, r.StatusCode)
		}
	}
	if r, body := e.do(t, "GET", fmt.Sprintf("/api/v1/runs/%s/images/%d/map", runID, img), nil); r.StatusCode != 200 || r.Header.Get("X-Map-Scale") == "" || !bytes.HasPrefix(body, []byte("\x89PNG")) {
		t.Fatalf("map: %d", r.StatusCode)
	}
	if r, _ := e.do(t, "GET", fmt.Sprintf("/api/v1/runs/%s/images/%d/source", runID, img), nil); r.StatusCode != 200 {
		t.Fatalf("source: %d", r.StatusCode)
	}
}

// checkThreshold saves a threshold and checks the listing's outcomes.
func checkThreshold(t *testing.T, e *env, runID string) {
	var page shared.ImagePage
	if r, body := e.do(t, "PUT", "/api/v1/runs/"+runID+"/threshold", shared.ThresholdRequest{Value: 0.01, User: "qa"}); r.StatusCode != 200 {
		t.Fatalf("threshold: %d %s", r.StatusCode, body)
	}
	_, body := e.do(t, "GET", "/api/v1/runs/"+runID+"/images?predicted=0", nil)
	decode(t, body, &page)
	if page.Total != 0 {
		t.Fatalf("after threshold 0.01, %d images predicted normal", page.Total)
	}
}
