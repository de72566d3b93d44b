package server

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

func TestDemoStartsTraining(t *testing.T) {
	e := startEnv(t, func(c *Config) { c.Demo = true; c.DataDir = t.TempDir() })
	_, body := e.do(t, "GET", "/api/v1/datasets", nil)
	var ds []shared.Dataset
	decode(t, body, &ds)
	if len(ds) != 1 || ds[0].Name != "synth" || len(ds[0].Categories) != 6 {
		t.Fatalf("datasets %s", body)
	}
	cancelQuickTraining(t, e)
}

// demoModelDir writes a demo-preset model (random weights, float16 as the
// committed one) and, if withRun, an evaluation run beside it whose image
// paths point into another machine's copy of the demo dataset.
func demoModelDir(t *testing.T, withRun bool) string {
	t.Helper()
	dir := t.TempDir()
	defer torchrt.Pin()()
	m, err := model.New(model.DemoConfig(), gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	if err := m.SaveHalf(filepath.Join(dir, "model.safetensors"), nil); err != nil {
		t.Fatal(err)
	}
	if !withRun {
		return dir
	}
	elsewhere := "/elsewhere/var/demo-data/synth-128"
	meta := results.RunMeta{RunID: "20260101T000000Z-abcdef", Kind: "test", Preset: "demo", Checkpoint: "/elsewhere/model.safetensors",
		Threshold: results.ThresholdInfo{Value: 0.25, Policy: "max-f1"}, Scorer: "ae+ssim"}
	meta.Dataset.Root = elsewhere
	var rows []results.ImageRow
	var maps []results.MapRow
	for i, rel := range []string{"woven/test/good/000.png", "woven/test/hole/000.png"} {
		rows = append(rows, results.ImageRow{RunID: meta.RunID, ImageID: int64(i), Category: "woven", Path: filepath.Join(elsewhere, rel),
			Split: "test", GroundTruth: int32(i), Score: 0.1 + 0.3*float64(i), Scorer: "ae+ssim", Threshold: 0.25, Predicted: int32(i)})
		maps = append(maps, results.Quantize(meta.RunID, int64(i), 4, 4, make([]float32, 16)))
	}
	if err := (results.Store{Root: filepath.Join(dir, DemoRunDir)}).Write(results.Run{Meta: meta, Images: rows, Maps: maps}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestDemoServesTheDemoModelAndItsRunAtOnce(t *testing.T) {
	dir := demoModelDir(t, true)
	demo := filepath.Join(dir, "model.safetensors")
	dataDir := t.TempDir()
	e := startEnv(t, func(c *Config) { c.Demo = true; c.DataDir = dataDir; c.DemoModel = demo })
	_, body := e.do(t, "GET", "/api/v1/status", nil)
	var st Status
	decode(t, body, &st)
	if st.Model != demo || len(st.Notices) != 0 {
		t.Fatalf("status %s: want the demo model loaded and no notice", body)
	}
	_, body = e.do(t, "GET", "/api/v1/runs", nil)
	var runs []shared.RunInfo
	if err := json.Unmarshal(body, &runs); err != nil || len(runs) != 1 || runs[0].RunID != "20260101T000000Z-abcdef" {
		t.Fatalf("runs %s (%v): want the committed demo run", body, err)
	}
	_, body = e.do(t, "GET", "/api/v1/runs/20260101T000000Z-abcdef/images", nil)
	var page struct {
		Images []shared.ImageInfo `json:"images"`
	}
	if err := json.Unmarshal(body, &page); err != nil || len(page.Images) != 2 {
		t.Fatalf("images %s (%v)", body, err)
	}
	for _, im := range page.Images {
		want := filepath.Join(dataDir, demoData, demoSynthDir)
		if !strings.HasPrefix(im.Path, want) {
			t.Fatalf("image path %s is not in this server's demo dataset %s", im.Path, want)
		}
		if _, err := os.Stat(im.Path); err != nil {
			t.Fatalf("the demo run's image is missing: %v", err)
		}
	}
	// The quick training still runs, as a demonstration; it must not queue
	// an evaluation of the tiny model or replace the demo model.
	cancelQuickTraining(t, e)
}

func TestDemoFallsBackToTheQuickTrainingWithANotice(t *testing.T) {
	garbage := filepath.Join(t.TempDir(), "model.safetensors")
	filetest.Write(t, garbage, []byte("not a checkpoint"))
	_, tiny := fixtures(t)
	for _, c := range []struct{ name, path, notice string }{
		{"missing", filepath.Join(t.TempDir(), "absent.safetensors"), "absent.safetensors"},
		{"corrupt", garbage, garbage},
		{"another preset", tiny, `preset "tiny", not demo`},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := startEnv(t, func(cfg *Config) { cfg.Demo = true; cfg.DataDir = t.TempDir(); cfg.DemoModel = c.path })
			_, body := e.do(t, "GET", "/api/v1/status", nil)
			var st Status
			decode(t, body, &st)
			if len(st.Notices) != 1 || !strings.Contains(st.Notices[0], c.notice) || st.Model != "" {
				t.Fatalf("status %s: want one notice naming %q and no model yet", body, c.notice)
			}
			cancelQuickTraining(t, e)
		})
	}
}
