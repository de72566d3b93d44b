package diffusion

import (
	"context"
	"fmt"
	"math"
	"slices"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/shared"
)

// The sampler settings are one definition shared by the model's checkpoint,
// the CLI, job configs, websocket requests and run metadata (package shared);
// these names keep them at hand where the samplers are built.
type (
	SamplerConfig   = shared.SamplerConfig
	SamplerOverride = shared.SamplerOverride
)

// Sampler kinds.
const (
	KindDDIM      = shared.SamplerDDIM
	KindDDPM      = shared.SamplerDDPM
	KindDPMSolver = shared.SamplerDPMSolver
)

// Kinds lists the samplers, the reference's first.
var Kinds = shared.SamplerKinds

// ReferenceSampler is the reference's inference setting.
var ReferenceSampler = SamplerConfig{Kind: KindDDIM, StartT: 999, Steps: 10, Eta: 0}

// Scheduler is one sampling method on fixed timesteps (like diffusers'
// schedulers): it turns the denoiser's noise prediction for one step into the
// latent of the next. Sample runs the loop. A scheduler may keep state
// between steps (DPM-Solver++), so make a new one per trajectory.
type Scheduler interface {
	// Timesteps are the descending timesteps the denoiser is evaluated at.
	Timesteps() []int
	// Step takes the noise eps predicted for zt at Timesteps()[i] and returns
	// the latent at the next timestep (the clean level after the last) and
	// the predicted clean latent; the caller owns both. rnd supplies the
	// noise of stochastic samplers.
	Step(eps, zt *ts.Tensor, i int, rnd *Noise) (prev, x0 *ts.Tensor, err error)
	// Free releases what the scheduler keeps between steps.
	Free()
}

// NewScheduler builds c's sampler on schedule s.
func NewScheduler(s *Schedule, c SamplerConfig) (Scheduler, error) {
	if err := c.Validate(s.T()); err != nil {
		return nil, err
	}
	steps, err := c.StepTimesteps(s.T())
	if err != nil {
		return nil, err
	}
	base := strided{s: s, steps: steps}
	switch c.KindOrDefault() {
	case KindDDPM:
		return &ddpm{strided: base}, nil
	case KindDPMSolver:
		return &dpmSolver{strided: base}, nil
	default:
		return &ddim{strided: base, eta: c.Eta}, nil
	}
}

// strided holds the timesteps and the cumulative alphas at both ends of a step.
type strided struct {
	s     *Schedule
	steps []int
}

func (b strided) Timesteps() []int { return slices.Clone(b.steps) }

// alphas are abar at step i's timestep and at the next (abar_0 after the
// last step, as the reference's DDIM ends).
func (b strided) alphas(i int) (a, aPrev float64, err error) {
	if i < 0 || i >= len(b.steps) {
		return 0, 0, fmt.Errorf("diffusion: step %d of %d", i, len(b.steps))
	}
	a = b.s.AlphasCumprod[b.steps[i]]
	aPrev = b.s.AlphasCumprod[0]
	if i+1 < len(b.steps) {
		aPrev = b.s.AlphasCumprod[b.steps[i+1]]
	}
	return a, aPrev, nil
}

// predictX0 is (z - sqrt(1-a) eps) / sqrt(a).
func predictX0(z, eps *ts.Tensor, a float64) *ts.Tensor {
	se := eps.MustMulScalar(ts.FloatScalar(math.Sqrt(1-a)), false)
	x0 := z.MustSub(se, false)
	se.MustDrop()
	return x0.MustMulScalar(ts.FloatScalar(1/math.Sqrt(a)), true)
}

// axpby is a*x + b*y (+ c*noise when c > 0).
func axpby(a float64, x *ts.Tensor, b float64, y *ts.Tensor, c float64, rnd *Noise) *ts.Tensor {
	out := x.MustMulScalar(ts.FloatScalar(a), false)
	by := y.MustMulScalar(ts.FloatScalar(b), false)
	out = out.MustAdd(by, true)
	by.MustDrop()
	if c > 0 {
		n := rnd.Normal(x.MustSize(), x.MustDevice())
		n = n.MustMulScalar(ts.FloatScalar(c), true)
		out = out.MustAdd(n, true)
		n.MustDrop()
	}
	return out
}

type ddim struct {
	strided
	eta float64
}

func (d *ddim) Free() {}

// Step: z_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma noise.
func (d *ddim) Step(eps, zt *ts.Tensor, i int, rnd *Noise) (*ts.Tensor, *ts.Tensor, error) {
	a, aPrev, err := d.alphas(i)
	if err != nil {
		return nil, nil, err
	}
	coef := DDIMCoefficients(a, aPrev, d.eta)
	if coef.Sigma > 0 && rnd == nil {
		return nil, nil, fmt.Errorf("diffusion: eta %g needs a noise source", d.eta)
	}
	x0 := predictX0(zt, eps, a)
	return axpby(coef.SqrtAPrev, x0, coef.DirCoef, eps, coef.Sigma, rnd), x0, nil
}

type ddpm struct{ strided }

func (d *ddpm) Free() {}

// Step samples the posterior q(z_prev | z_t, x0) of the strided chain:
// mean sqrt(a_prev) b/(1-a) x0 + sqrt(a/a_prev) (1-a_prev)/(1-a) z_t and
// variance b (1-a_prev)/(1-a), with b = 1 - a/a_prev.
func (d *ddpm) Step(eps, zt *ts.Tensor, i int, rnd *Noise) (*ts.Tensor, *ts.Tensor, error) {
	a, aPrev, err := d.alphas(i)
	if err != nil {
		return nil, nil, err
	}
	if rnd == nil {
		return nil, nil, fmt.Errorf("diffusion: ddpm needs a noise source")
	}
	b := 1 - a/aPrev
	x0 := predictX0(zt, eps, a)
	cx := math.Sqrt(aPrev) * b / (1 - a)
	cz := math.Sqrt(a/aPrev) * (1 - aPrev) / (1 - a)
	sd := math.Sqrt(math.Max(b*(1-aPrev)/(1-a), 0))
	return axpby(cx, x0, cz, zt, sd, rnd), x0, nil
}

// dpmSolver is DPM-Solver++(2M): with alpha = sqrt(abar), sigma =
// sqrt(1-abar), lambda = log(alpha/sigma) and h the step in lambda,
// z_prev = (sigma_prev/sigma) z_t - alpha_prev (e^-h - 1) D, where D is x0
// (first order: the first and the last step) or the extrapolation
// (1 + 1/2r) x0 - (1/2r) x0_before, r = h_before / h.
type dpmSolver struct {
	strided
	lastX0  *ts.Tensor // the previous step's x0, owned
	lastLam float64    // lambda at the previous step's timestep
}

func (d *dpmSolver) Free() {
	if d.lastX0 != nil {
		d.lastX0.MustDrop()
		d.lastX0 = nil
	}
}

func lambda(a float64) float64 { return 0.5 * math.Log(a/(1-a)) }

func (d *dpmSolver) Step(eps, zt *ts.Tensor, i int, _ *Noise) (*ts.Tensor, *ts.Tensor, error) {
	a, aPrev, err := d.alphas(i)
	if err != nil {
		return nil, nil, err
	}
	x0 := predictX0(zt, eps, a)
	lam, lamPrev := lambda(a), lambda(aPrev)
	h := lamPrev - lam
	first := d.lastX0 == nil || i == len(d.steps)-1
	var D *ts.Tensor
	if first {
		D = x0.MustShallowClone()
	} else {
		r := (lam - d.lastLam) / h
		D = axpby(1+1/(2*r), x0, -1/(2*r), d.lastX0, 0, nil)
	}
	sig, sigPrev := math.Sqrt(1-a), math.Sqrt(1-aPrev)
	prev := axpby(sigPrev/sig, zt, -math.Sqrt(aPrev)*math.Expm1(-h), D, 0, nil)
	D.MustDrop()
	d.Free()
	d.lastX0, d.lastLam = x0.MustShallowClone(), lam
	return prev, x0, nil
}

// Step is what Sample reports after each step. The tensors belong to the
// loop and are freed after the callback returns: copy what you keep.
type Step struct {
	Index int        // 0-based step number
	Total int        // number of steps
	T     int        // the timestep the denoiser was evaluated at
	Zt    *ts.Tensor // latent entering the step
	Eps   *ts.Tensor // predicted noise
	X0    *ts.Tensor // predicted clean latent
	Next  *ts.Tensor // latent leaving the step (z at the next timestep)
}

// Callback receives each step; returning an error stops sampling.
type Callback func(Step) error

// Denoiser predicts the noise in zt at timestep t (the same for the whole batch).
type Denoiser func(zt *ts.Tensor, t int) *ts.Tensor

// Sample runs the reverse process from zStart (a latent already noised to
// the config's NoiseLevel) with sch and returns the final latent. rnd
// supplies the noise of stochastic samplers (nil for deterministic ones).
// callback may be nil; it is called after each step. ctx cancels between
// steps. The caller keeps ownership of zStart and sch.
func Sample(ctx context.Context, sch Scheduler, zStart *ts.Tensor, eps Denoiser, rnd *Noise, callback Callback) (*ts.Tensor, error) {
	steps := sch.Timesteps()
	z := zStart.MustShallowClone()
	for i, t := range steps {
		if err := ctx.Err(); err != nil {
			z.MustDrop()
			return nil, err
		}
		e := eps(z, t)
		next, x0, err := sch.Step(e, z, i, rnd)
		if err != nil {
			e.MustDrop()
			z.MustDrop()
			return nil, err
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
