package shared

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Sampler kinds (diffusion.NewScheduler builds them).
const (
	// SamplerDDIM is DDIM (Song et al. 2021), the reference's sampler; eta
	// scales its stochasticity (0 = deterministic).
	SamplerDDIM = "ddim"
	// SamplerDDPM is DDPM's ancestral sampling (Ho et al. 2020) on the same
	// strided timesteps: the posterior mean plus noise at every step.
	SamplerDDPM = "ddpm"
	// SamplerDPMSolver is DPM-Solver++(2M) (Lu et al. 2022): a deterministic
	// second-order multistep solver in data prediction.
	SamplerDPMSolver = "dpm++2m"
)

// Kinds lists the samplers, the reference's first.
var SamplerKinds = []string{SamplerDDIM, SamplerDDPM, SamplerDPMSolver}

// SamplerConfig configures DiAD's reconstruction: how far z0 is noised and how
// the sampler walks back. It is one definition for the model's default (in
// its checkpoint), the CLI, job configs, websocket requests and run metadata;
// backend/diffusion aliases it and builds the sampler it names.
type SamplerConfig struct {
	// Kind is the sampler (empty = ddim, the reference's).
	Kind string `yaml:"kind,omitempty" json:"kind,omitempty"`
	// StartT is the forward-noise level of the input latent (reference 999).
	StartT int `yaml:"start_t" json:"start_t"`
	// Steps is the number of denoiser evaluations (reference 10).
	Steps int `yaml:"steps" json:"steps"`
	// Eta scales DDIM's stochasticity (0 = deterministic, the reference);
	// the other samplers take none.
	Eta float64 `yaml:"eta" json:"eta"`
	// Timesteps, when not empty, are the descending timesteps to visit
	// instead of StartT and Steps; the input is noised to the first.
	Timesteps []int `yaml:"timesteps,omitempty" json:"timesteps,omitempty"`
}

// SamplerOverride changes some fields of a SamplerConfig: a nil field keeps
// the base's. It is what the CLI's flags, job configs and the websocket's
// requests carry, merged by one rule, SamplerConfig.With.
type SamplerOverride struct {
	Kind      *string  `yaml:"kind,omitempty" json:"kind,omitempty"`
	StartT    *int     `yaml:"start_t,omitempty" json:"start_t,omitempty"`
	Steps     *int     `yaml:"steps,omitempty" json:"steps,omitempty"`
	Eta       *float64 `yaml:"eta,omitempty" json:"eta,omitempty"`
	Timesteps []int    `yaml:"timesteps,omitempty" json:"timesteps,omitempty"`
}

// IsZero reports an override that changes nothing.
func (o SamplerOverride) IsZero() bool {
	return o.Kind == nil && o.StartT == nil && o.Steps == nil && o.Eta == nil && len(o.Timesteps) == 0
}

// With is c changed by o: every field o sets replaces c's. Explicit
// timesteps are a whole schedule, so an override that sets the start level
// or the step count drops the base's timesteps, and one that sets timesteps
// replaces them.
func (c SamplerConfig) With(o SamplerOverride) SamplerConfig {
	out := c
	out.Timesteps = slices.Clone(c.Timesteps)
	if o.Kind != nil {
		out.Kind = *o.Kind
	}
	if o.StartT != nil {
		out.StartT = *o.StartT
		out.Timesteps = nil
	}
	if o.Steps != nil {
		out.Steps = *o.Steps
		out.Timesteps = nil
	}
	if o.Eta != nil {
		out.Eta = *o.Eta
	}
	if len(o.Timesteps) > 0 {
		out.Timesteps = slices.Clone(o.Timesteps)
	}
	return out
}

// KindOrDefault is Kind, or ddim when empty.
func (c SamplerConfig) KindOrDefault() string {
	if c.Kind == "" {
		return SamplerDDIM
	}
	return c.Kind
}

// NoiseLevel is the timestep the input latent is noised to: the first of
// explicit timesteps, else StartT.
func (c SamplerConfig) NoiseLevel() int {
	if len(c.Timesteps) > 0 {
		return c.Timesteps[0]
	}
	return c.StartT
}

// Validate checks c against a schedule of T timesteps: a known kind, eta in
// [0, 1] and only for DDIM, and timesteps that exist.
func (c SamplerConfig) Validate(T int) error {
	k := c.KindOrDefault()
	if !slices.Contains(SamplerKinds, k) {
		return fmt.Errorf("sampler: unknown sampler %q (want %s)", c.Kind, strings.Join(SamplerKinds, ", "))
	}
	if math.IsNaN(c.Eta) || c.Eta < 0 || c.Eta > 1 {
		return fmt.Errorf("sampler: eta %g outside [0, 1]", c.Eta)
	}
	if c.Eta != 0 && k != SamplerDDIM {
		return fmt.Errorf("sampler: eta %g is a DDIM setting; %s takes none", c.Eta, k)
	}
	_, err := c.StepTimesteps(T)
	return err
}

// StepTimesteps returns the descending timesteps the denoiser is evaluated
// at: explicit Timesteps, or ldm's "uniform" discretisation of [0, StartT]
// (spacing (StartT+1)/Steps, offset +1). For StartT 999 and 10 steps: 901,
// 801, ..., 1. The first step treats the latent noised to StartT as if it
// were at the first timestep, as the reference does.
func (c SamplerConfig) StepTimesteps(T int) ([]int, error) {
	if len(c.Timesteps) > 0 {
		for i, t := range c.Timesteps {
			if t < 0 || t >= T || (i > 0 && t >= c.Timesteps[i-1]) {
				return nil, fmt.Errorf("sampler: timesteps %v must be descending within [0, %d)", c.Timesteps, T)
			}
		}
		return slices.Clone(c.Timesteps), nil
	}
	if c.StartT < 0 || c.StartT >= T {
		return nil, fmt.Errorf("sampler: start_t %d outside [0, %d)", c.StartT, T)
	}
	span := c.StartT + 1
	if c.Steps < 1 || c.Steps > span {
		return nil, fmt.Errorf("sampler: %d steps impossible below start_t %d", c.Steps, c.StartT)
	}
	stride := span / c.Steps
	out := make([]int, c.Steps)
	for i := range out {
		out[c.Steps-1-i] = i*stride + 1
	}
	if out[0] > c.StartT {
		// Only when stride*(Steps-1)+1 > StartT, i.e. StartT < Steps.
		out[0] = c.StartT
	}
	return out, nil
}
