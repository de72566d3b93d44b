package evaluate

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/torchrt"
)

func ptr[T any](v T) *T { return &v }

// tinyCheckpoint saves a random tiny model (its sampler: start 400, 10 steps).
func tinyCheckpoint(t *testing.T) string {
	t.Helper()
	defer torchrt.Pin()()
	m, err := model.New(model.TinyConfig(), gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	path := filepath.Join(t.TempDir(), "tiny.safetensors")
	if err := m.Save(path, nil); err != nil {
		t.Fatal(err)
	}
	return path
}

// Each flag changes its own field only: --start-t or --eta alone are not
// ignored, and --steps alone keeps the model's start level (not 999).
func TestOpenMergesSamplerChangesFieldByField(t *testing.T) {
	ckpt := tinyCheckpoint(t)
	base := model.TinyConfig().Sampler
	if base.StartT == 999 {
		t.Fatalf("the tiny preset must not start at 999 for this test (%+v)", base)
	}
	for _, c := range []struct {
		name string
		o    diffusion.SamplerOverride
		want diffusion.SamplerConfig
	}{
		{"nothing", diffusion.SamplerOverride{}, base},
		{"start only", diffusion.SamplerOverride{StartT: ptr(300)}, diffusion.SamplerConfig{Kind: base.Kind, StartT: 300, Steps: base.Steps}},
		{"eta only", diffusion.SamplerOverride{Eta: ptr(0.5)}, diffusion.SamplerConfig{Kind: base.Kind, StartT: base.StartT, Steps: base.Steps, Eta: 0.5}},
		{"steps only", diffusion.SamplerOverride{Steps: ptr(20)}, diffusion.SamplerConfig{Kind: base.Kind, StartT: base.StartT, Steps: 20}},
		{"sampler only", diffusion.SamplerOverride{Kind: ptr(diffusion.KindDPMSolver)}, diffusion.SamplerConfig{Kind: diffusion.KindDPMSolver, StartT: base.StartT, Steps: base.Steps}},
	} {
		cfg := DefaultConfig()
		cfg.Checkpoint, cfg.Device, cfg.Sampler = ckpt, "cpu", c.o
		cfg.Scorer = "pixel"
		p, err := Open(cfg)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got := p.Sampler
		p.Free()
		if got.Kind != c.want.Kind || got.StartT != c.want.StartT || got.Steps != c.want.Steps || got.Eta != c.want.Eta {
			t.Errorf("%s: sampler %+v, want %+v", c.name, got, c.want)
		}
		if err := CheckSampler(ckpt, c.o); err != nil {
			t.Errorf("%s: check: %v", c.name, err)
		}
	}
	// Impossible combinations are refused before any work, naming the field.
	for want, o := range map[string]diffusion.SamplerOverride{
		"impossible below start_t": {StartT: ptr(5), Steps: ptr(20)},
		"unknown sampler":          {Kind: ptr("euler")},
		"takes none":               {Kind: ptr(diffusion.KindDDPM), Eta: ptr(0.3)},
		"outside [0, 1000)":        {StartT: ptr(1000)},
	} {
		if err := CheckSampler(ckpt, o); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("check %+v: %v, want %q", o, err, want)
		}
		cfg := DefaultConfig()
		cfg.Checkpoint, cfg.Device, cfg.Sampler, cfg.Scorer = ckpt, "cpu", o, "pixel"
		if p, err := Open(cfg); err == nil || !strings.Contains(err.Error(), want) {
			if p != nil {
				p.Free()
			}
			t.Errorf("open %+v: %v, want %q", o, err, want)
		}
	}
}
