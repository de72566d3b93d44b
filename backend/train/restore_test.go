package train

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sugarme/gotch"
	ts "github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/internal/torchtest"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
)

// denoiserCheckpoint trains the small config into its denoiser stage, stops
// it after the checkpoint of step 2 and returns the config and checkpoint.
func denoiserCheckpoint(t *testing.T) (Config, string) {
	t.Helper()
	cfg := smallConfig(t, synthData(t))
	cfg.OutDir = t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := Options{afterCheckpoint: func(stage string, step int) {
		if stage == StageDenoiser && step >= 2 {
			cancel()
		}
	}}
	sum, err := Run(ctx, cfg, opts)
	if err != nil || sum.Stopped != StopCancelled {
		t.Fatalf("run: %v, stopped %q: want a cancelled run", err, sum.Stopped)
	}
	return cfg, filepath.Join(cfg.OutDir, CheckpointFile)
}

// rewriteCheckpoint copies src to a new file with change applied to its
// tensors and metadata.
func rewriteCheckpoint(t *testing.T, src string, change func(tensors map[string]*ts.Tensor, meta map[string]string)) string {
	t.Helper()
	r, err := checkpoint.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	tensors := map[string]*ts.Tensor{}
	defer func() { dropAll(tensors) }()
	for _, e := range r.Entries() {
		v, err := r.Load(e.Name, gotch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		tensors[e.Name] = v
	}
	meta := map[string]string{}
	for k, v := range r.Metadata() {
		meta[k] = v
	}
	change(tensors, meta)
	out := filepath.Join(t.TempDir(), CheckpointFile)
	if err := checkpoint.Save(out, tensors, meta); err != nil {
		t.Fatal(err)
	}
	return out
}

// replaceFirst replaces the first tensor (by name order of the checkpoint)
// whose name starts with prefix by a tensor of another shape.
func replaceFirst(t *testing.T, tensors map[string]*ts.Tensor, prefix string) {
	t.Helper()
	for name, v := range tensors {
		if strings.HasPrefix(name, prefix) {
			v.MustDrop()
			tensors[name] = ts.MustZeros([]int64{3}, gotch.Float, gotch.CPU)
			return
		}
	}
	t.Fatalf("the checkpoint has no tensor named %s*", prefix)
}

// TestRestoreAndStepFreeWhatTheyTookOnErrors: a resume that fails anywhere
// (bad weights, optimizer moments, optimizer step, average, noise state)
// frees the model, optimizer and tensors it had made; a training step whose
// backward pass fails frees its batch, loss and scaled loss.
func TestRestoreAndStepFreeWhatTheyTookOnErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("trains")
	}
	defer torchrt.Pin()()
	cfg, good := denoiserCheckpoint(t)
	cases := []struct {
		name, want string
		change     func(map[string]*ts.Tensor, map[string]string)
	}{
		{"weights", "shape", func(m map[string]*ts.Tensor, _ map[string]string) { replaceFirst(t, m, "model.") }},
		{"optimizer moments", "shape", func(m map[string]*ts.Tensor, _ map[string]string) { replaceFirst(t, m, optPrefix) }},
		{"optimizer step", "optimizer step", func(_ map[string]*ts.Tensor, meta map[string]string) { meta["diad.optimizer_step"] = "x" }},
		{"average", "lacks the average", func(m map[string]*ts.Tensor, _ map[string]string) {
			for name, v := range m {
				if strings.HasPrefix(name, emaPrefix) {
					v.MustDrop()
					delete(m, name)
					return
				}
			}
		}},
		{"noise state", "noise state", func(_ map[string]*ts.Tensor, meta map[string]string) {
			meta[metaState] = strings.Replace(meta[metaState], `"noise":"`, `"noise":"AAAA`, 1)
		}},
	}
	for _, c := range cases {
		path := rewriteCheckpoint(t, good, c.change)
		torchtest.RequireNoLeak(t, "a failed resume ("+c.name+")", 0, func() {
			tr := &trainer{cfg: cfg}
			m, err := tr.restore(path, gotch.CPU)
			if err == nil || m != nil || tr.m != nil || tr.opt != nil || tr.ema != nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "resume") {
				t.Fatalf("%s: restore gave model %v, error %v: want no model and an error naming the resume and %q", c.name, m != nil, err, c.want)
			}
		})
	}

	// The good checkpoint resumes, and one step whose backward pass fails
	// (every parameter frozen: the loss has no gradient) frees its tensors.
	torchtest.RequireNoLeak(t, "a resume, a failed step, and freeing the trainer", 0, func() {
		tr := &trainer{cfg: cfg}
		m, err := tr.restore(good, gotch.CPU)
		if err != nil || tr.opt == nil || tr.ema == nil {
			t.Fatalf("restore: %v (optimizer %v, average %v)", err, tr.opt != nil, tr.ema != nil)
		}
		defer func() { tr.ema.free(); tr.opt.Free(); m.Free() }()
		size := m.Config.ImageSize
		batch := datasets.Batch{Items: []datasets.Item{{Image: make([]float32, 3*size*size)}, {Image: make([]float32, 3*size*size)}}}
		m.Store.SetTrainable(func(string) bool { return false })
		live := torchtest.LiveTensors()
		if err := tr.microStep(batch, 10); err == nil || !strings.Contains(err.Error(), "backward") {
			t.Fatalf("a step with every parameter frozen: %v, want a backward error", err)
		}
		if n := torchtest.LiveTensors() - live; n != 0 {
			t.Fatalf("the failed step left %d tensor handles", n)
		}
	})
}
