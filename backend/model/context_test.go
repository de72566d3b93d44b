package model

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/cliptext"
	"github.com/diad-project/diad/backend/layers"
	"github.com/diad-project/diad/backend/torchrt"
)

// A checkpoint with a CLIP text model and no stored context (as official
// DiAD and Stable Diffusion checkpoints are) gives the model the empty
// prompt's encoding, which diad then stores; inspect's source says which.
func TestTextModelGivesTheContext(t *testing.T) {
	defer torchrt.Pin()()
	cfg := TinyConfig()
	cfg.UNet.ContextDim, cfg.UNet.ContextLen = 64, 8
	m, err := New(cfg, gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	dir := t.TempDir()
	diadFile := filepath.Join(dir, "diad.safetensors")
	if err := m.Save(diadFile, nil); err != nil {
		t.Fatal(err)
	}
	r, err := checkpoint.Open(diadFile)
	if err != nil {
		t.Fatal(err)
	}
	meta := r.Metadata()
	r.Close()

	refFile := filepath.Join(dir, "reference.safetensors")
	want := saveWithTextModel(t, m, meta, refFile)
	source := func(path string) string {
		r, err := checkpoint.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		return ContextSource(r)
	}
	if s := source(refFile); !strings.Contains(s, "CLIP text model") {
		t.Fatalf("source %q", s)
	}
	opened, _, err := Open(refFile, gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer opened.Free()
	got := opened.Context.Float64Values()
	if len(got) != len(want) {
		t.Fatalf("%d context values, want %d", len(got), len(want))
	}
	nonzero := false
	for i := range got {
		if math.Abs(got[i]-want[i]) > 1e-6 {
			t.Fatalf("context element %d: %v, want %v", i, got[i], want[i])
		}
		nonzero = nonzero || got[i] != 0
	}
	if !nonzero {
		t.Fatal("the context is zeros")
	}
	saved := filepath.Join(dir, "saved.safetensors")
	if err := opened.Save(saved, nil); err != nil {
		t.Fatal(err)
	}
	if s := source(saved); !strings.HasPrefix(s, "stored") {
		t.Fatalf("after Save: source %q", s)
	}
	again, _, err := Open(saved, gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Free()
	for i, v := range again.Context.Float64Values() {
		if v != got[i] {
			t.Fatalf("stored context element %d: %v, want %v", i, v, got[i])
		}
	}
	if s := source(diadFile); !strings.HasPrefix(s, "stored") {
		t.Fatalf("a diad file: source %q", s)
	}
}

// saveWithTextModel saves m as the reference's checkpoints are, with a
// (tiny) CLIP text model in place of the stored context, and returns the
// context that text model gives for the empty prompt.
func saveWithTextModel(t *testing.T, m *DiAD, meta map[string]string, path string) []float64 {
	text := layers.NewStore(gotch.CPU)
	defer text.Free()
	enc := cliptext.New(text.Root().Sub("cond_stage_model").Sub("transformer").Sub("text_model"),
		cliptext.Config{Vocab: 49408, Width: 64, Layers: 1, Heads: 1, MaxLen: 8, Eps: 1e-5})
	var want []float64
	torchrt.NoGrad(func() {
		ctx, err := enc.Forward(cliptext.EmptyPrompt(8))
		if err != nil {
			t.Fatal(err)
		}
		want = ctx.Float64Values()
		ctx.MustDrop()
	})
	tensors := checkpoint.StoreTensors(m.Store)
	delete(tensors, ContextName)
	for name, x := range checkpoint.StoreTensors(text) {
		tensors[name] = x
	}
	if err := checkpoint.Save(path, tensors, meta); err != nil {
		t.Fatal(err)
	}
	return want
}
