package train

import (
	"context"
	"strings"
	"testing"

	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/patchmemory"
	"github.com/diad-project/diad/backend/scoring"
	"github.com/diad-project/diad/backend/torchrt"
)

var tinyPatchMemory = patchmemory.Config{Stride: 2, Scales: []int64{1, 2}, Patch: 3, Dims: 8, Size: 300, QueryChunk: 64, BankChunk: 128}

// A run with a patch memory builds it before the calibration, which can then
// choose a scorer with it; the saved model opens with the memory filled.
// Recalibrating a model that has none gives it one and changes no other
// tensor.
func TestPatchMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model")
	}
	data := synthData(t)
	c := smallConfig(t, data)
	c.OutDir = t.TempDir()
	c.StartTCandidates = []int{200}
	c.PatchMemory = tinyPatchMemory
	c.PatchMemory.Whiten = 0.25
	c.ScorerCandidates = []string{"patch", "patch+pixel"}
	sum, err := Run(context.Background(), c, Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := model.ReadConfig(sum.Model)
	if err != nil {
		t.Fatal(err)
	}
	if !patchKinds(cfg.Scorer.Kind) || !(cfg.Scorer.Scales[scoring.KindPatch] > 0) || cfg.PatchMemory.Size != tinyPatchMemory.Size {
		t.Fatalf("scorer %+v memory %+v: want a patch scorer with its scale, the memory's config", cfg.Scorer, cfg.PatchMemory)
	}
	// The memory's rows are kept by category, and the file says where.
	if g := cfg.PatchMemory.Groups; len(g) < 2 || cfg.PatchMemory.Validate() != nil {
		t.Fatalf("saved memory groups %+v (%v): want the training categories' rows", g, cfg.PatchMemory.Validate())
	}
	requireWhitening(t, sum.Model)
	m, _, err := model.Open(sum.Model, gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	built := m.Patch != nil && m.Patch.Built()
	m.Free()
	if !built {
		t.Fatal("the saved model opens without a built patch memory")
	}

	plain, psum := trainPlain(t, data)
	re := plain
	re.OutDir = t.TempDir()
	re.Scorer = ""
	re.PatchMemory = tinyPatchMemory
	re.ScorerCandidates = []string{"pixel", "patch"}
	rsum, err := Recalibrate(context.Background(), re, psum.Model, Options{})
	if err != nil {
		t.Fatal(err)
	}
	requireOnlyAdded(t, psum.Model, rsum.Model, patchmemory.Prefix)

	// A model with a memory builds it again as the config chooses it (a
	// coreset here), of the same shape; another shape is refused.
	core := re
	core.OutDir = t.TempDir()
	core.PatchMemory.Coreset = true
	csum, err := Recalibrate(context.Background(), core, rsum.Model, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if ccfg, err := model.ReadConfig(csum.Model); err != nil || !ccfg.PatchMemory.Coreset {
		t.Fatalf("recalibrated as a coreset: config %+v, %v", ccfg.PatchMemory, err)
	}
	other := core
	other.OutDir = t.TempDir()
	other.PatchMemory.Size = 200
	if _, err := Recalibrate(context.Background(), other, rsum.Model, Options{}); err == nil || !strings.Contains(err.Error(), "cannot become") {
		t.Errorf("a memory of another size: %v", err)
	}

	bad := plain
	bad.ScorerCandidates = []string{"patch"}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "patch_memory") {
		t.Errorf("scorer candidate patch without a memory: %v", err)
	}
}

// requireWhitening requires the model file to keep its whitened memory's
// scales: the leading component's 1, the others' above it.
func requireWhitening(t *testing.T, path string) {
	t.Helper()
	r, err := checkpoint.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	}()
	x, err := r.Load(patchmemory.Prefix+"scale", gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	v := torchrt.Float32s(x)
	x.MustDrop()
	if len(v) != int(tinyPatchMemory.Dims)+1 || v[0] != 1 || !(v[len(v)-1] > 1) {
		t.Fatalf("saved whitening scales %v", v)
	}
}
