// Package diffusion holds DiAD's noise schedule and samplers: the linear beta
// schedule of latent diffusion (T = 1000), forward noising q(z_t | z_0), and
// the samplers used at inference as small Scheduler objects (DDIM - the
// reference's -, DDPM ancestral, DPM-Solver++(2M)) driven by one Sample loop
// that calls the denoiser and a per-step callback. SamplerConfig says which
// sampler, from which noise level, in how many steps; SamplerOverride and
// SamplerConfig.With are the one rule by which the CLI, job configs and the
// websocket change a model's default (the reference's: DDIM, noise to t = 999,
// 10 steps 901, 801, ..., 1, eta 0).
package diffusion

import (
	"fmt"
	"math"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// ScheduleConfig is the beta schedule (ldm's "linear": betas are the squares of
// a linspace between sqrt(BetaStart) and sqrt(BetaEnd)).
type ScheduleConfig struct {
	Timesteps int     `yaml:"timesteps"`
	BetaStart float64 `yaml:"beta_start"`
	BetaEnd   float64 `yaml:"beta_end"`
	// Prediction is what the denoiser outputs (latent diffusion's
	// "parameterization"): PredictEps (empty, the reference) or PredictV.
	Prediction Prediction `yaml:"prediction,omitempty"`
}

// Prediction names the denoiser's output parameterisation.
type Prediction string

const (
	// PredictEps: the denoiser predicts the added noise (DiAD, SD v1).
	PredictEps Prediction = "eps"
	// PredictV: the denoiser predicts v = sqrt(abar) eps - sqrt(1-abar) z0
	// (SD v2). At high noise levels v is mostly -z0, which the noisy input
	// does not hold, so the loss there can only be lowered with what the
	// SG network knows of the clean image; the eps loss, whose target is
	// then almost the input itself, can be lowered without it.
	PredictV Prediction = "v"
)

// ReferenceSchedule is Stable Diffusion's (and DiAD's) schedule.
var ReferenceSchedule = ScheduleConfig{Timesteps: 1000, BetaStart: 0.00085, BetaEnd: 0.012}

// Schedule holds the cumulative products of (1 - beta), in float64 as ldm
// computes them before casting.
type Schedule struct {
	Betas         []float64
	AlphasCumprod []float64
	// Prediction is the denoiser's parameterisation (never empty).
	Prediction Prediction
}

// NewSchedule computes the schedule.
func NewSchedule(c ScheduleConfig) (*Schedule, error) {
	if c.Timesteps < 2 || !(c.BetaStart > 0) || !(c.BetaEnd > c.BetaStart) || c.BetaEnd >= 1 {
		return nil, fmt.Errorf("diffusion: bad schedule %+v (need T >= 2, 0 < beta_start < beta_end < 1)", c)
	}
	pred := c.Prediction
	switch pred {
	case "":
		pred = PredictEps
	case PredictEps, PredictV:
	default:
		return nil, fmt.Errorf("diffusion: unknown prediction %q (want %q or %q)", c.Prediction, PredictEps, PredictV)
	}
	s := &Schedule{Betas: make([]float64, c.Timesteps), AlphasCumprod: make([]float64, c.Timesteps), Prediction: pred}
	a, b := math.Sqrt(c.BetaStart), math.Sqrt(c.BetaEnd)
	prod := 1.0
	for i := range s.Betas {
		v := a + (b-a)*float64(i)/float64(c.Timesteps-1)
		s.Betas[i] = v * v
		prod *= 1 - s.Betas[i]
		s.AlphasCumprod[i] = prod
	}
	return s, nil
}

// T is the number of diffusion steps.
func (s *Schedule) T() int { return len(s.Betas) }

// coefTensor builds a [B, 1, 1, 1] float tensor of f(abar_t) for each t.
func (s *Schedule) coefTensor(t []int, f func(abar float64) float64, dev gotch.Device) *ts.Tensor {
	v := make([]float32, len(t))
	for i, ti := range t {
		v[i] = float32(f(s.AlphasCumprod[ti]))
	}
	return ts.MustOfSlice(v).MustView([]int64{int64(len(t)), 1, 1, 1}, true).MustTo(dev, true)
}

// AddNoise is q(z_t | z_0): sqrt(abar_t) z0 + sqrt(1 - abar_t) noise, with a
// timestep per batch element.
func (s *Schedule) AddNoise(z0, noise *ts.Tensor, t []int) (*ts.Tensor, error) {
	if int64(len(t)) != z0.MustSize()[0] {
		return nil, fmt.Errorf("diffusion: %d timesteps for a batch of %d", len(t), z0.MustSize()[0])
	}
	for _, ti := range t {
		if ti < 0 || ti >= s.T() {
			return nil, fmt.Errorf("diffusion: timestep %d outside [0, %d)", ti, s.T())
		}
	}
	return s.combine(z0, noise, t, math.Sqrt, sqrtOneMinus, false), nil
}

// sqrtOneMinus is sqrt(1 - abar): the noise's share of z_t.
func sqrtOneMinus(a float64) float64 { return math.Sqrt(1 - a) }

// EpsFrom turns the denoiser's output at z_t into a noise prediction, the
// samplers' common currency. It consumes out: for PredictEps it returns out
// itself, for PredictV a new tensor sqrt(abar) v + sqrt(1-abar) z_t.
func (s *Schedule) EpsFrom(out, zt *ts.Tensor, t []int) *ts.Tensor {
	if s.Prediction != PredictV {
		return out
	}
	return s.combine(out, zt, t, math.Sqrt, sqrtOneMinus, true)
}

// Target is what the denoiser should output for z_t = AddNoise(z0, eps, t):
// eps itself (a shallow copy to free) or v = sqrt(abar) eps - sqrt(1-abar) z0.
func (s *Schedule) Target(z0, eps *ts.Tensor, t []int) *ts.Tensor {
	if s.Prediction != PredictV {
		return eps.MustShallowClone()
	}
	return s.combine(eps, z0, t, math.Sqrt, func(a float64) float64 { return -sqrtOneMinus(a) }, false)
}

// NoiseOf is the eps for which AddNoise(z0, eps, t) would give zt:
// (zt - sqrt(abar) z0) / sqrt(1-abar). With a zt made from another latent
// than z0 it is the noise prediction that leads back to z0 (the target of
// training to remove what differs).
func (s *Schedule) NoiseOf(zt, z0 *ts.Tensor, t []int) *ts.Tensor {
	return s.combine(zt, z0, t, func(a float64) float64 { return 1 / sqrtOneMinus(a) },
		func(a float64) float64 { return -math.Sqrt(a) / sqrtOneMinus(a) }, false)
}

// combine is fa(abar_t) x + fb(abar_t) y per batch element; it frees x when
// dropX.
func (s *Schedule) combine(x, y *ts.Tensor, t []int, fa, fb func(abar float64) float64, dropX bool) *ts.Tensor {
	dev := x.MustDevice()
	ca := s.coefTensor(t, fa, dev)
	cb := s.coefTensor(t, fb, dev)
	a := x.MustMul(ca, dropX)
	b := y.MustMul(cb, false)
	ca.MustDrop()
	cb.MustDrop()
	out := a.MustAdd(b, true)
	b.MustDrop()
	return out
}

// TimestepTensor is t as a float [B] tensor on dev, the denoiser's input.
func TimestepTensor(t []int, dev gotch.Device) *ts.Tensor {
	v := make([]float32, len(t))
	for i, ti := range t {
		v[i] = float32(ti)
	}
	return ts.MustOfSlice(v).MustTo(dev, true)
}
