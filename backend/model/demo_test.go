package model

import (
	"crypto/sha256"
	"encoding/hex"
	"path/filepath"
	"testing"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/results"
)

// TestCommittedDemoModelAndRunAgree: the committed demo model is the demo
// preset with v-prediction and a calibrated scorer, and the committed run
// that the server shows at first start was made by exactly this file, with
// the model's scorer and start level.
func TestCommittedDemoModelAndRunAgree(t *testing.T) {
	path := filepath.Join("demo", "model.safetensors")
	cfg, err := ReadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Preset != "demo" || cfg.Schedule.Prediction != diffusion.PredictV || cfg.Scorer.Kind == "" {
		t.Fatalf("committed demo model: preset %q, prediction %q, scorer %q", cfg.Preset, cfg.Schedule.Prediction, cfg.Scorer.Kind)
	}
	b := filetest.Read(t, path)
	if len(b) > 25<<20 {
		t.Fatalf("the demo model takes %d bytes, over the 25 MB budget", len(b))
	}
	sum := sha256.Sum256(b)
	store := results.Store{Root: filepath.Join("demo", "runs")}
	runs, err := store.Runs()
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 1 {
		t.Fatalf("%d committed demo runs, want 1", len(runs))
	}
	m := runs[0]
	if m.CheckpointSHA != hex.EncodeToString(sum[:]) {
		t.Fatalf("the committed run was made by checkpoint %.12s..., the committed model is %.12s...", m.CheckpointSHA, hex.EncodeToString(sum[:]))
	}
	if m.Scorer != cfg.Scorer.Kind || m.Sampler == nil || m.Sampler.StartT != cfg.Sampler.StartT {
		t.Fatalf("run scorer %q sampler %+v; model scorer %q start %d", m.Scorer, m.Sampler, cfg.Scorer.Kind, cfg.Sampler.StartT)
	}
	rows, err := store.Images(m.RunID)
	if err != nil || len(rows) == 0 {
		t.Fatalf("committed run images: %d rows, %v", len(rows), err)
	}
}
