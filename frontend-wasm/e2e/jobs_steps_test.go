//go:build !js

package e2e

import (
	"maps"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/diad-project/diad/backend/metrics"
	"github.com/diad-project/diad/frontend-wasm/hook"
	"github.com/diad-project/diad/shared"
)

func (br *browserRun) threshold(t *testing.T) {
	e, p, want, runID := br.e, br.pageFor(t), br.want, br.runID
	p.key("3")
	s := p.wait("the threshold view", 10*time.Second, func(s hook.State) bool { return s.Tab == "Threshold" })
	before := s.Confusion
	h := s.Widgets["histogram"]
	line := s.Widgets["threshold-line"]
	lx, ly := line.Center()
	p.drag(lx, ly, h[0]+1, ly)
	s = p.wait("the dragged threshold to flag every image", 10*time.Second, func(s hook.State) bool {
		return s.Confusion.TP+s.Confusion.FP == want.Total && s.Policy == "manual"
	})
	if s.Confusion == before {
		t.Fatalf("confusion matrix did not change: %+v", before)
	}
	img := p.shot("threshold")
	if std, _ := colourful(img, s.Widgets["histogram"]); std < 5 {
		t.Errorf("histogram looks blank (%.1f)", std)
	}
	p.click("preset:max-f1")
	s = p.wait("max F1 preset", 10*time.Second, func(s hook.State) bool { return s.Policy == "max-f1" })
	p.click("save-threshold")
	p.wait("the threshold to be saved", 10*time.Second, func(s hook.State) bool { return s.Saved == "max-f1" })
	var run shared.RunInfo
	e.call(t, "GET", "/api/v1/runs/"+runID, nil, &run)
	if run.Threshold.Policy != "max-f1" || run.Threshold.SetBy != "e2e" || math.Abs(run.Threshold.Value-s.Threshold) > 1e-9*math.Abs(s.Threshold) {
		t.Fatalf("saved threshold %+v, client %v", run.Threshold, s.Threshold)
	}
	p.shot("threshold-max-f1")
	// The curves' areas are those of the run's scores (REST), computed
	// independently here; the metrics table holds the run's metrics.
	var images shared.ImagePage
	e.call(t, "GET", "/api/v1/runs/"+runID+"/images?limit=1000", nil, &images)
	scores, labels := make([]float32, len(images.Images)), make([]bool, len(images.Images))
	for i, im := range images.Images {
		scores[i], labels[i] = float32(im.Score), im.GroundTruth == 1
	}
	b, err := metrics.BinaryMetrics(scores, labels)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(s.AUROC-b.AUROC) > 1e-12 || math.Abs(s.AP-b.AP) > 1e-12 {
		t.Errorf("charts show AUC %v, AP %v; the run's scores give %v, %v", s.AUROC, s.AP, b.AUROC, b.AP)
	}
	var table []shared.MetricValue
	e.call(t, "GET", "/api/v1/runs/"+runID+"/metrics", nil, &table)
	if len(table) == 0 || s.Metrics != len(table) {
		t.Errorf("the metrics table shows %d values, the run has %d", s.Metrics, len(table))
	}
	if r, ok := s.Widgets["metrics"]; !ok || r[2] < 100 {
		t.Errorf("no metrics table drawn: %v", r)
	}

}

// thresholdPerCategory sets a threshold per category (max F1 on each
// category's own images, computed here from the REST scores), moves one by
// hand, saves them with the run and checks they apply to its images.
func (br *browserRun) thresholdPerCategory(t *testing.T) {
	e, p, runID := br.e, br.pageFor(t), br.runID
	var images shared.ImagePage
	e.call(t, "GET", "/api/v1/runs/"+runID+"/images?limit=1000", nil, &images)
	var run shared.RunInfo
	p.click("threshold:per-category")
	s := p.wait("per-category thresholds", 10*time.Second, func(s hook.State) bool { return s.PerCategory && len(s.CategoryThresholds) == 2 })
	byCat := map[string][]shared.ImageInfo{}
	for _, im := range images.Images {
		byCat[im.Category] = append(byCat[im.Category], im)
	}
	for cat, ims := range byCat {
		sc, lb := make([]float32, len(ims)), make([]bool, len(ims))
		for i, im := range ims {
			sc[i], lb[i] = float32(im.Score), im.GroundTruth == 1
		}
		c, err := metrics.NewCurve(sc, lb)
		if err != nil {
			t.Fatal(err)
		}
		k, err := c.AtMaxF1()
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CategoryThresholds[cat]; got != k.Threshold {
			t.Errorf("%s: per-category max F1 threshold %v, its images give %v", cat, got, k.Threshold)
		}
	}
	if _, ok := s.Widgets["threshold-line"]; ok {
		t.Error("the pooled view offers one line to drag while each category has its own")
	}
	p.shot("threshold-per-category-all")
	p.click("scope:disc")
	s = p.wait("disc's scores", 10*time.Second, func(s hook.State) bool { return s.Scope == "disc" && s.Widgets["threshold-line"] != hook.Rect{} })
	wovenTh := s.CategoryThresholds["woven"]
	line := s.Widgets["threshold-line"]
	h := s.Widgets["histogram"]
	lx, ly := line.Center()
	p.drag(lx, ly, h[0]+1, ly) // flags every disc image
	s = p.wait("disc's threshold moved alone", 10*time.Second, func(s hook.State) bool {
		return s.Policy == "manual" && s.Confusion.TP+s.Confusion.FP == len(byCat["disc"])
	})
	if s.CategoryThresholds["woven"] != wovenTh {
		t.Fatalf("dragging disc's threshold moved woven's: %v -> %v", wovenTh, s.CategoryThresholds["woven"])
	}
	p.shot("threshold-per-category")
	p.click("save-threshold")
	p.wait("per-category thresholds saved", 10*time.Second, func(s hook.State) bool { return s.SavedPerCategory == 2 })
	e.call(t, "GET", "/api/v1/runs/"+runID, nil, &run)
	if !maps.Equal(run.Threshold.PerCategory, s.CategoryThresholds) {
		t.Fatalf("saved per-category thresholds %v, the page's %v", run.Threshold.PerCategory, s.CategoryThresholds)
	}
	e.call(t, "GET", "/api/v1/runs/"+runID+"/images?limit=1000", nil, &images)
	for _, im := range images.Images {
		if th := s.CategoryThresholds[im.Category]; im.Threshold != th || (im.Predicted == 1) != (im.Score >= th) {
			t.Fatalf("image %d (%s): threshold %v predicted %d, its category's threshold %v", im.ImageID, im.Category, im.Threshold, im.Predicted, th)
		}
	}
	// Back to one threshold (max F1) for the tests that follow.
	p.click("scope:")
	p.click("threshold:one")
	p.click("preset:max-f1")
	p.click("save-threshold")
	p.wait("one threshold saved again", 10*time.Second, func(s hook.State) bool {
		return !s.PerCategory && s.SavedPerCategory == 0 && s.Saved == "max-f1"
	})
}

func (br *browserRun) trainingMonitor(t *testing.T) {
	e, p, runID, testJob := br.e, br.pageFor(t), br.runID, br.testJob

	p.key("4")
	j := e.job(t, shared.JobRequest{Kind: shared.JobTrain, Config: map[string]any{"data": map[string]any{"root": "synth"},
		"autoencoder_steps": 2, "max_steps": 4, "batch_size": 2, "val_every": 2, "checkpoint_every": 4}})
	s := p.wait("the train job to run to the end live", 3*time.Minute, p.whileJobLives(j.ID, func(s hook.State, x hook.Job) bool {
		// Events may be dropped for a slow page (bounded queues), the
		// final state never is.
		return x.State == shared.JobSucceeded && x.LossPoints >= 2
	}))
	br.trainJob = j.ID
	if s.Tab != "Training" || s.SelectedJob != j.ID {
		t.Fatalf("tab %s showing job %s, want the new train job %s", s.Tab, s.SelectedJob, j.ID)
	}
	// Each training stage is its own series (their steps restart).
	for _, x := range s.Jobs {
		if x.ID == j.ID && !slices.Equal(x.Series, []string{"autoencoder", "denoiser"}) {
			t.Errorf("loss chart series %q, want the autoencoder's and the denoiser's", x.Series)
		}
	}
	img := p.shot("training")
	for _, panel := range []string{"losschart:autoencoder", "losschart:denoiser"} {
		if _, sat := colourful(img, s.Widgets[panel]); sat < 0.001 {
			t.Errorf("%s has no curve (%.4f coloured)", panel, sat)
		}
	}
	p.click("loss:log")
	p.click("loss:smooth")
	s = p.wait("log scale and smoothing", 10*time.Second, func(s hook.State) bool { return s.LossLog && s.LossSmooth > 0 })
	if _, sat := colourful(p.shot("training-log"), s.Widgets["losschart:denoiser"]); sat < 0.001 {
		t.Errorf("the log-scale chart has no curve (%.4f coloured)", sat)
	}
	// The finished test job links to its run.
	p.click("job:" + testJob.ID)
	p.wait("the test job's detail", 10*time.Second, func(s hook.State) bool { return s.SelectedJob == testJob.ID })
	p.click("job:open-run")
	p.wait("its run in the gallery", 10*time.Second, func(s hook.State) bool { return s.Tab == "Gallery" && s.Run == runID })
}
