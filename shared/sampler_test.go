package shared

import (
	"slices"
	"strings"
	"testing"
)

func ptr[T any](v T) *T { return &v }

// The one merge rule: unset keeps, set replaces; start level or steps drop
// the base's explicit timesteps.
func TestSamplerWith(t *testing.T) {
	base := SamplerConfig{Kind: SamplerDDIM, StartT: 400, Steps: 10, Eta: 0.2}
	withTS := base
	withTS.Timesteps = []int{500, 100}
	cases := []struct {
		name string
		base SamplerConfig
		o    SamplerOverride
		want SamplerConfig
	}{
		{"nothing", base, SamplerOverride{}, base},
		{"start only keeps steps and eta", base, SamplerOverride{StartT: ptr(300)}, SamplerConfig{Kind: SamplerDDIM, StartT: 300, Steps: 10, Eta: 0.2}},
		{"eta only", base, SamplerOverride{Eta: ptr(0.5)}, SamplerConfig{Kind: SamplerDDIM, StartT: 400, Steps: 10, Eta: 0.5}},
		{"eta zero is a value", base, SamplerOverride{Eta: ptr(0.0)}, SamplerConfig{Kind: SamplerDDIM, StartT: 400, Steps: 10}},
		{"steps only keeps the start level", base, SamplerOverride{Steps: ptr(20)}, SamplerConfig{Kind: SamplerDDIM, StartT: 400, Steps: 20, Eta: 0.2}},
		{"kind", base, SamplerOverride{Kind: ptr(SamplerDPMSolver), Eta: ptr(0.0)}, SamplerConfig{Kind: SamplerDPMSolver, StartT: 400, Steps: 10}},
		{"steps drop explicit timesteps", withTS, SamplerOverride{Steps: ptr(5)}, SamplerConfig{Kind: SamplerDDIM, StartT: 400, Steps: 5, Eta: 0.2}},
		{"eta keeps explicit timesteps", withTS, SamplerOverride{Eta: ptr(0.0)}, SamplerConfig{Kind: SamplerDDIM, StartT: 400, Steps: 10, Timesteps: []int{500, 100}}},
		{"timesteps replace", base, SamplerOverride{Timesteps: []int{900, 10}}, SamplerConfig{Kind: SamplerDDIM, StartT: 400, Steps: 10, Eta: 0.2, Timesteps: []int{900, 10}}},
	}
	for _, c := range cases {
		got := c.base.With(c.o)
		if got.Kind != c.want.Kind || got.StartT != c.want.StartT || got.Steps != c.want.Steps || got.Eta != c.want.Eta || !slices.Equal(got.Timesteps, c.want.Timesteps) {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
	// With never aliases the base's timesteps.
	got := withTS.With(SamplerOverride{})
	got.Timesteps[0] = 1
	if withTS.Timesteps[0] != 500 {
		t.Fatal("With shares the base's timesteps")
	}
	if !(SamplerOverride{}).IsZero() || (SamplerOverride{Eta: ptr(0.0)}).IsZero() {
		t.Fatal("IsZero")
	}
}

func TestSamplerValidate(t *testing.T) {
	good := []SamplerConfig{SamplerConfig{Kind: SamplerDDIM, StartT: 999, Steps: 10}, {StartT: 400, Steps: 10}, {Kind: SamplerDDPM, StartT: 999, Steps: 50}, {Kind: SamplerDPMSolver, Timesteps: []int{800, 400, 1}}, {StartT: 999, Steps: 10, Eta: 1}}
	for _, c := range good {
		if err := c.Validate(1000); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	bad := map[string]SamplerConfig{
		"unknown sampler":   {Kind: "euler", StartT: 999, Steps: 10},
		"outside [0, 1]":    {StartT: 999, Steps: 10, Eta: 1.5},
		"takes none":        {Kind: SamplerDPMSolver, StartT: 999, Steps: 10, Eta: 0.5},
		"outside [0, 1000)": {StartT: 1000, Steps: 10},
		"impossible":        {StartT: 0, Steps: 20},
		"descending":        {Timesteps: []int{3, 5}},
	}
	for want, c := range bad {
		err := c.Validate(1000)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want an error with %q", c, err, want)
		}
	}
	if (SamplerConfig{StartT: 300, Steps: 10, Timesteps: []int{700, 1}}).NoiseLevel() != 700 || (SamplerConfig{Kind: SamplerDDIM, StartT: 999, Steps: 10}).NoiseLevel() != 999 {
		t.Fatal("noise level")
	}
}
