package diffusion

import (
	"context"
	"fmt"
	"math"

	"github.com/sugarme/gotch/ts"
)

// SamplerConfig configures DiAD's reconstruction: how far z0 is noised and how
// DDIM walks back.
type SamplerConfig struct {
	// StartT is the forward-noise level of the input latent (reference 999).
	StartT int `yaml:"start_t"`
	// Steps is the number of DDIM steps (reference 10).
	Steps int `yaml:"steps"`
	// Eta scales DDIM's stochasticity (0 = deterministic, the reference).
	Eta float64 `yaml:"eta"`
	// Timesteps overrides the DDIM timesteps (descending) when not empty.
	Timesteps []int `yaml:"timesteps,omitempty"`
}

// ReferenceSampler is the reference's inference setting.
var ReferenceSampler = SamplerConfig{StartT: 999, Steps: 10, Eta: 0}

// DDIMTimesteps returns the descending timesteps DDIM visits: ldm's "uniform"
// discretisation of [0, StartT] (spacing (StartT+1)/Steps, offset +1). For
// StartT 999 and 10 steps: 901, 801, ..., 1. The first step treats the latent
// noised to StartT as if it were at the first timestep, as the reference does.
func (c SamplerConfig) DDIMTimesteps(s *Schedule) ([]int, error) {
	if len(c.Timesteps) > 0 {
		for i, t := range c.Timesteps {
			if t < 0 || t >= s.T() || (i > 0 && t >= c.Timesteps[i-1]) {
				return nil, fmt.Errorf("diffusion: timesteps %v must be descending within [0, %d)", c.Timesteps, s.T())
			}
		}
		return append([]int(nil), c.Timesteps...), nil
	}
	if c.StartT < 0 || c.StartT >= s.T() {
		return nil, fmt.Errorf("diffusion: start_t %d outside [0, %d)", c.StartT, s.T())
	}
	span := c.StartT + 1
	if c.Steps < 1 || c.Steps > span {
		return nil, fmt.Errorf("diffusion: %d steps impossible below start_t %d", c.Steps, c.StartT)
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

// Step is what the sampler reports after each DDIM step. The tensors belong to
// the sampler and are freed after the callback returns: copy what you keep.
type Step struct {
	Index int        // 0-based step number
	Total int        // number of steps
	T     int        // the timestep the denoiser was evaluated at
	Zt    *ts.Tensor // latent entering the step
	Eps   *ts.Tensor // predicted noise
	X0    *ts.Tensor // predicted clean latent
	Next  *ts.Tensor // latent leaving the step (z at the previous timestep)
}

// Callback receives each step; returning an error stops sampling.
type Callback func(Step) error

// Denoiser predicts the noise in zt at timestep t (the same for the whole batch).
type Denoiser func(zt *ts.Tensor, t int) *ts.Tensor

// DDIM runs the reverse process from zStart (a latent already noised to
// StartT) and returns the final latent. rnd supplies the noise of stochastic
// steps (eta > 0) and may be nil when eta is 0. callback may be nil; it is
// called after each step. ctx cancels between steps. The caller keeps
// ownership of zStart.
func DDIM(ctx context.Context, s *Schedule, c SamplerConfig, zStart *ts.Tensor, eps Denoiser, rnd *Noise, callback Callback) (*ts.Tensor, error) {
	steps, err := c.DDIMTimesteps(s)
	if err != nil {
		return nil, err
	}
	if c.Eta != 0 && rnd == nil {
		return nil, fmt.Errorf("diffusion: eta %g needs a noise source", c.Eta)
	}
	z := zStart.MustShallowClone()
	for i, t := range steps {
		if err := ctx.Err(); err != nil {
			z.MustDrop()
			return nil, err
		}
		aT := s.AlphasCumprod[t]
		aPrev := s.AlphasCumprod[0]
		if i+1 < len(steps) {
			aPrev = s.AlphasCumprod[steps[i+1]]
		}
		e := eps(z, t)
		coef := DDIMCoefficients(aT, aPrev, c.Eta)
		// x0 = (z - sqrt(1-a) eps) / sqrt(a)
		se := e.MustMulScalar(ts.FloatScalar(coef.SqrtOneMinusA), false)
		x0 := z.MustSub(se, false)
		se.MustDrop()
		x0 = x0.MustMulScalar(ts.FloatScalar(1/coef.SqrtA), true)
		// z_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma noise
		next := x0.MustMulScalar(ts.FloatScalar(coef.SqrtAPrev), false)
		dir := e.MustMulScalar(ts.FloatScalar(coef.DirCoef), false)
		next = next.MustAdd(dir, true)
		dir.MustDrop()
		if coef.Sigma > 0 {
			noise := rnd.Normal(z.MustSize(), z.MustDevice())
			noise = noise.MustMulScalar(ts.FloatScalar(coef.Sigma), true)
			next = next.MustAdd(noise, true)
			noise.MustDrop()
		}
		var cbErr error
		if callback != nil {
			cbErr = callback(Step{Index: i, Total: len(steps), T: t, Zt: z, Eps: e, X0: x0, Next: next})
		}
		e.MustDrop()
		x0.MustDrop()
		z.MustDrop()
		z = next
		if cbErr != nil {
			z.MustDrop()
			return nil, cbErr
		}
	}
	return z, nil
}

// Coefficients are the scalars of one DDIM update.
type Coefficients struct {
	SqrtA, SqrtOneMinusA, SqrtAPrev, DirCoef, Sigma float64
}

// DDIMCoefficients computes one step's scalars from abar_t, abar_prev and eta:
// sigma = eta sqrt((1-a_prev)/(1-a)) sqrt(1 - a/a_prev).
func DDIMCoefficients(a, aPrev, eta float64) Coefficients {
	sigma := eta * math.Sqrt((1-aPrev)/(1-a)) * math.Sqrt(1-a/aPrev)
	return Coefficients{
		SqrtA:         math.Sqrt(a),
		SqrtOneMinusA: math.Sqrt(1 - a),
		SqrtAPrev:     math.Sqrt(aPrev),
		DirCoef:       math.Sqrt(math.Max(1-aPrev-sigma*sigma, 0)),
		Sigma:         sigma,
	}
}
