package diffusion

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/torchrt"
)

func TestScheduleMatchesClosedForm(t *testing.T) {
	s, err := NewSchedule(ReferenceSchedule)
	if err != nil {
		t.Fatal(err)
	}
	if s.T() != 1000 {
		t.Fatalf("T = %d", s.T())
	}
	// betas = linspace(sqrt(0.00085), sqrt(0.012), 1000)^2
	if math.Abs(s.Betas[0]-0.00085) > 1e-15 || math.Abs(s.Betas[999]-0.012) > 1e-15 {
		t.Fatalf("beta endpoints %v %v", s.Betas[0], s.Betas[999])
	}
	prod := 1.0
	for i := 0; i <= 500; i++ {
		b := math.Pow(math.Sqrt(0.00085)+(math.Sqrt(0.012)-math.Sqrt(0.00085))*float64(i)/999, 2)
		prod *= 1 - b
	}
	if math.Abs(s.AlphasCumprod[500]-prod) > 1e-12 {
		t.Fatalf("abar_500 = %v, want %v", s.AlphasCumprod[500], prod)
	}
	// The reference's "sqrt(abar) = 0.0683 at t = 999".
	if got := math.Sqrt(s.AlphasCumprod[999]); math.Abs(got-0.0683) > 5e-5 {
		t.Fatalf("sqrt(abar_999) = %v, want 0.0683", got)
	}
	for _, bad := range []ScheduleConfig{{Timesteps: 1, BetaStart: 0.1, BetaEnd: 0.2}, {Timesteps: 10, BetaStart: 0.2, BetaEnd: 0.1}} {
		if _, err := NewSchedule(bad); err == nil {
			t.Errorf("schedule %+v accepted", bad)
		}
	}
}

// refSchedule is the reference schedule; a test cannot go on without it.
func refSchedule(t *testing.T) *Schedule {
	t.Helper()
	s, err := NewSchedule(ReferenceSchedule)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func stepTimesteps(t *testing.T, c SamplerConfig, s *Schedule) []int {
	t.Helper()
	steps, err := c.StepTimesteps(s.T())
	if err != nil {
		t.Fatalf("%+v: %v", c, err)
	}
	return steps
}

func TestDDIMTimesteps(t *testing.T) {
	s := refSchedule(t)
	got, err := ReferenceSampler.StepTimesteps(s.T())
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{901, 801, 701, 601, 501, 401, 301, 201, 101, 1}; !slices.Equal(got, want) {
		t.Fatalf("timesteps %v, want %v", got, want)
	}
	got = stepTimesteps(t, SamplerConfig{StartT: 499, Steps: 5}, s)
	if want := []int{401, 301, 201, 101, 1}; !slices.Equal(got, want) {
		t.Fatalf("start 499: %v, want %v", got, want)
	}
	got = stepTimesteps(t, SamplerConfig{Timesteps: []int{700, 300, 0}}, s)
	if !slices.Equal(got, []int{700, 300, 0}) {
		t.Fatalf("explicit: %v", got)
	}
	for _, bad := range []SamplerConfig{{StartT: 1000, Steps: 10}, {StartT: 999, Steps: 0}, {StartT: 5, Steps: 10}, {Timesteps: []int{3, 5}}} {
		if _, err := bad.StepTimesteps(s.T()); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func values(t *ts.Tensor) []float64 { return t.Float64Values() }

func TestAddNoiseClosedForm(t *testing.T) {
	defer torchrt.Pin()()
	s := refSchedule(t)
	n := NewNoise(1)
	z0 := n.Normal([]int64{2, 4, 3, 3}, gotch.CPU)
	defer z0.MustDrop()
	eps := n.Normal([]int64{2, 4, 3, 3}, gotch.CPU)
	defer eps.MustDrop()
	zt, err := s.AddNoise(z0, eps, []int{0, 999})
	if err != nil {
		t.Fatal(err)
	}
	defer zt.MustDrop()
	a, e, z := values(z0), values(eps), values(zt)
	for i := range z {
		ab := s.AlphasCumprod[[]int{0, 999}[i/36]]
		want := math.Sqrt(ab)*a[i] + math.Sqrt(1-ab)*e[i]
		if math.Abs(z[i]-want) > 1e-5 {
			t.Fatalf("element %d: %v, want %v", i, z[i], want)
		}
	}
	if _, err := s.AddNoise(z0, eps, []int{1}); err == nil {
		t.Fatal("wrong timestep count accepted")
	}
	if _, err := s.AddNoise(z0, eps, []int{0, 1000}); err == nil {
		t.Fatal("timestep 1000 accepted")
	}
}

func TestDDIMUpdateMatchesFormula(t *testing.T) {
	defer torchrt.Pin()()
	s := refSchedule(t)
	den := linearDenoiser
	start, zs := startLatent()
	defer zs.MustDrop()
	var visited []int
	out, err := sample(t, s, ReferenceSampler, zs, den, nil, func(st Step) error {
		visited = append(visited, st.T)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer out.MustDrop()
	// The same recurrence in float64.
	steps := stepTimesteps(t, ReferenceSampler, s)
	x := slices.Clone(start)
	for i, tt := range steps {
		a := s.AlphasCumprod[tt]
		ap := s.AlphasCumprod[0]
		if i+1 < len(steps) {
			ap = s.AlphasCumprod[steps[i+1]]
		}
		for j := range x {
			e := 0.5*x[j] + 0.1*float64(tt)/1000
			x0 := (x[j] - math.Sqrt(1-a)*e) / math.Sqrt(a)
			x[j] = math.Sqrt(ap)*x0 + math.Sqrt(1-ap)*e
		}
	}
	got := values(out)
	for j := range x {
		if math.Abs(got[j]-x[j]) > 1e-4*math.Max(1, math.Abs(x[j])) {
			t.Fatalf("DDIM result %v, float64 recurrence %v", got, x)
		}
	}
	if !slices.Equal(visited, steps) {
		t.Fatalf("callback saw %v", visited)
	}
	// eta > 0 needs a noise source; a callback error stops sampling.
	if _, err := sample(t, s, SamplerConfig{StartT: 999, Steps: 10, Eta: 1}, zs, den, nil, nil); err == nil {
		t.Fatal("eta without noise accepted")
	}
	stop := errors.New("stop")
	if _, err := sample(t, s, ReferenceSampler, zs, den, nil, func(Step) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("callback error: %v", err)
	}
}

func TestDDIMCoefficientsEta(t *testing.T) {
	c := DDIMCoefficients(0.5, 0.8, 0)
	if c.Sigma != 0 || math.Abs(c.DirCoef-math.Sqrt(0.2)) > 1e-15 {
		t.Fatalf("eta 0: %+v", c)
	}
	c = DDIMCoefficients(0.5, 0.8, 1)
	want := math.Sqrt(0.2/0.5) * math.Sqrt(1-0.5/0.8)
	if math.Abs(c.Sigma-want) > 1e-15 || math.Abs(c.DirCoef-math.Sqrt(1-0.8-want*want)) > 1e-15 {
		t.Fatalf("eta 1: %+v", c)
	}
}

func TestNoiseStateRoundTrip(t *testing.T) {
	a := NewNoise(42)
	a.Timesteps(5, 1000)
	state, err := a.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	b := NewNoise(0)
	if err := b.UnmarshalBinary(state); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(a.Timesteps(10, 1000), b.Timesteps(10, 1000)) {
		t.Fatal("restored generator diverges")
	}
}

// sample runs c's scheduler with the Sample loop.
func sample(t *testing.T, s *Schedule, c SamplerConfig, z *ts.Tensor, den Denoiser, rnd *Noise, cb Callback) (*ts.Tensor, error) {
	t.Helper()
	sch, err := NewScheduler(s, c)
	if err != nil {
		return nil, err
	}
	defer sch.Free()
	return Sample(context.Background(), sch, z, den, rnd, cb)
}

// With a denoiser that knows the clean latent (eps = (z - sqrt(a) x0) /
// sqrt(1-a)), DDIM and DPM-Solver++ take the same path (their updates agree
// when x0 does not change), and end at sqrt(abar_0) x0 + sqrt(1-abar_0) eps.
func TestSamplersAgreeWithAnOracle(t *testing.T) {
	defer torchrt.Pin()()
	s := refSchedule(t)
	x0 := ts.MustOfSlice([]float32{0.5, -1, 2, 0.25}).MustView([]int64{1, 1, 2, 2}, true)
	defer x0.MustDrop()
	e0 := ts.MustOfSlice([]float32{1, 0.3, -0.7, -1.5}).MustView([]int64{1, 1, 2, 2}, true)
	defer e0.MustDrop()
	zs, err := s.AddNoise(x0, e0, []int{999})
	if err != nil {
		t.Fatal(err)
	}
	defer zs.MustDrop()
	oracle := func(z *ts.Tensor, tt int) *ts.Tensor {
		a := s.AlphasCumprod[tt]
		ax := x0.MustMulScalar(ts.FloatScalar(math.Sqrt(a)), false)
		d := z.MustSub(ax, false)
		ax.MustDrop()
		return d.MustMulScalar(ts.FloatScalar(1/math.Sqrt(1-a)), true)
	}
	run := func(kind string) []float64 {
		// Explicit timesteps from 999, the level zs is at.
		out, err := sample(t, s, SamplerConfig{Kind: kind, Timesteps: []int{999, 800, 600, 400, 200, 50, 1}}, zs, oracle, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer out.MustDrop()
		return values(out)
	}
	ddim, dpm := run(KindDDIM), run(KindDPMSolver)
	a0 := s.AlphasCumprod[0]
	xs, es := values(x0), values(e0)
	for j := range ddim {
		want := math.Sqrt(a0)*xs[j] + math.Sqrt(1-a0)*es[j]
		if math.Abs(ddim[j]-want) > 1e-4 || math.Abs(dpm[j]-ddim[j]) > 1e-4 {
			t.Fatalf("ddim %v, dpm++ %v, want %v", ddim, dpm, want)
		}
	}
}

// DPM-Solver++(2M) against its recurrence in float64, with a denoiser whose
// x0 changes from step to step (so the second-order term matters).
func TestDPMSolverMatchesRecurrence(t *testing.T) {
	defer torchrt.Pin()()
	s := refSchedule(t)
	den := linearDenoiser
	start, zs := startLatent()
	defer zs.MustDrop()
	c := SamplerConfig{Kind: KindDPMSolver, StartT: 999, Steps: 10}
	out, err := sample(t, s, c, zs, den, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer out.MustDrop()
	steps := stepTimesteps(t, c, s)
	lam := func(a float64) float64 { return math.Log(math.Sqrt(a) / math.Sqrt(1-a)) }
	x := slices.Clone(start)
	var prevX0 []float64
	var prevLam float64
	for i, tt := range steps {
		a := s.AlphasCumprod[tt]
		ap := s.AlphasCumprod[0]
		if i+1 < len(steps) {
			ap = s.AlphasCumprod[steps[i+1]]
		}
		h := lam(ap) - lam(a)
		x0 := make([]float64, len(x))
		for j := range x {
			e := 0.5*x[j] + 0.1*float64(tt)/1000
			x0[j] = (x[j] - math.Sqrt(1-a)*e) / math.Sqrt(a)
		}
		for j := range x {
			d := x0[j]
			if prevX0 != nil && i < len(steps)-1 {
				r := (lam(a) - prevLam) / h
				d = (1+1/(2*r))*x0[j] - 1/(2*r)*prevX0[j]
			}
			x[j] = math.Sqrt(1-ap)/math.Sqrt(1-a)*x[j] - math.Sqrt(ap)*(math.Exp(-h)-1)*d
		}
		prevX0, prevLam = x0, lam(a)
	}
	got := values(out)
	for j := range x {
		if math.Abs(got[j]-x[j]) > 1e-4*math.Max(1, math.Abs(x[j])) {
			t.Fatalf("dpm++ result %v, float64 recurrence %v", got, x)
		}
	}
}

// DDPM's ancestral step is DDIM's with eta 1: the same noise draws give the
// same result. The stochastic path repeats with its seed and changes with
// another.
func TestStochasticSamplers(t *testing.T) {
	defer torchrt.Pin()()
	s := refSchedule(t)
	den := linearDenoiser
	zs := ts.MustOfSlice([]float32{0.3, -1.2, 2.0, 0.0, 0.7, -0.1}).MustView([]int64{1, 1, 2, 3}, true)
	defer zs.MustDrop()
	run := func(c SamplerConfig, seed uint64) []float64 {
		out, err := sample(t, s, c, zs, den, NewNoise(seed), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer out.MustDrop()
		return values(out)
	}
	ddpm := run(SamplerConfig{Kind: KindDDPM, StartT: 999, Steps: 10}, 7)
	eta1 := run(SamplerConfig{Kind: KindDDIM, StartT: 999, Steps: 10, Eta: 1}, 7)
	for j := range ddpm {
		if math.Abs(ddpm[j]-eta1[j]) > 1e-4*math.Max(1, math.Abs(ddpm[j])) {
			t.Fatalf("ddpm %v, ddim eta 1 %v", ddpm, eta1)
		}
	}
	half := SamplerConfig{Kind: KindDDIM, StartT: 999, Steps: 10, Eta: 0.5}
	a, b, c := run(half, 3), run(half, 3), run(half, 4)
	if !slices.Equal(a, b) {
		t.Fatalf("eta 0.5 with one seed: %v then %v", a, b)
	}
	if slices.Equal(a, c) {
		t.Fatal("eta 0.5 gave the same result with another seed")
	}
	det := run(SamplerConfig{StartT: 999, Steps: 10}, 3)
	if slices.Equal(a, det) {
		t.Fatal("eta 0.5 equals eta 0")
	}
	if _, err := sample(t, s, SamplerConfig{Kind: KindDDPM, StartT: 999, Steps: 10}, zs, den, nil, nil); err == nil {
		t.Fatal("ddpm without noise accepted")
	}
}

// With per-image generators an image draws the same noise in any batch.
func TestBatchNoiseIsPerImage(t *testing.T) {
	defer torchrt.Pin()()
	batch := NewBatchNoise([]uint64{11, 12, 13})
	alone := NewNoise(12)
	for k := 0; k < 3; k++ { // successive draws stay aligned too
		b := batch.Normal([]int64{3, 2, 4}, gotch.CPU)
		a := alone.Normal([]int64{1, 2, 4}, gotch.CPU)
		bv, av := values(b), values(a)
		b.MustDrop()
		a.MustDrop()
		if !slices.Equal(bv[8:16], av) {
			t.Fatalf("draw %d: image 1 of the batch %v, alone %v", k, bv[8:16], av)
		}
		if slices.Equal(bv[0:8], bv[8:16]) {
			t.Fatal("two images drew the same noise")
		}
	}
	one := NewBatchNoise([]uint64{5})
	plain := NewNoise(5)
	x, y := one.Normal([]int64{2, 3}, gotch.CPU), plain.Normal([]int64{2, 3}, gotch.CPU)
	defer x.MustDrop()
	defer y.MustDrop()
	if !slices.Equal(values(x), values(y)) {
		t.Fatal("a batch of one differs from NewNoise")
	}
}

// linearDenoiser is a hand-made denoiser: eps = 0.1 * t/1000 + 0.5 * z
// (elementwise), so each step's prediction depends on the step's input.
func linearDenoiser(z *ts.Tensor, tt int) *ts.Tensor {
	return z.MustMulScalar(ts.FloatScalar(0.5), false).MustAddScalar(ts.FloatScalar(0.1*float64(tt)/1000), true)
}

// startLatent is a small latent [1, 1, 2, 2] and its values in float64.
func startLatent() ([]float64, *ts.Tensor) {
	v := []float64{0.3, -1.2, 2.0, 0.0}
	f := make([]float32, len(v))
	for i, x := range v {
		f[i] = float32(x)
	}
	return v, ts.MustOfSlice(f).MustView([]int64{1, 1, 2, 2}, true)
}

// TestVPredictionRoundTrip: the v target of a noised latent, turned back
// into a noise prediction at that latent, is the noise itself, and v is
// sqrt(abar) eps - sqrt(1-abar) z0 element by element.
func TestVPredictionRoundTrip(t *testing.T) {
	defer torchrt.Pin()()
	cfg := ReferenceSchedule
	cfg.Prediction = PredictV
	s, err := NewSchedule(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n := NewNoise(3)
	z0 := n.Normal([]int64{3, 4, 2, 2}, gotch.CPU)
	defer z0.MustDrop()
	eps := n.Normal([]int64{3, 4, 2, 2}, gotch.CPU)
	defer eps.MustDrop()
	steps := []int{0, 500, 999}
	zt, err := s.AddNoise(z0, eps, steps)
	if err != nil {
		t.Fatal(err)
	}
	defer zt.MustDrop()
	v := s.Target(z0, eps, steps)
	defer v.MustDrop()
	a, e, vv := values(z0), values(eps), values(v)
	for i := range vv {
		ab := s.AlphasCumprod[steps[i/16]]
		want := math.Sqrt(ab)*e[i] - math.Sqrt(1-ab)*a[i]
		if math.Abs(vv[i]-want) > 1e-5 {
			t.Fatalf("v element %d: %v, want %v", i, vv[i], want)
		}
	}
	back := s.EpsFrom(v.MustShallowClone(), zt, steps)
	defer back.MustDrop()
	for i, got := range values(back) {
		if math.Abs(got-e[i]) > 1e-5 {
			t.Fatalf("eps element %d: %v, want %v", i, got, e[i])
		}
	}

	// An eps schedule passes the output through and targets eps.
	plain, err := NewSchedule(ReferenceSchedule)
	if err != nil {
		t.Fatal(err)
	}
	if plain.Prediction != PredictEps {
		t.Fatalf("empty prediction became %q, want %q", plain.Prediction, PredictEps)
	}
	target := plain.Target(z0, eps, steps)
	defer target.MustDrop()
	if !slices.Equal(values(target), e) {
		t.Fatal("eps target is not eps")
	}
	bad := ReferenceSchedule
	bad.Prediction = "x0"
	if _, err := NewSchedule(bad); err == nil {
		t.Fatal("unknown prediction accepted")
	}
}

// NoiseOf inverts AddNoise: the eps it finds noises z0 into zt again (at
// t = 0 too, where 1/sqrt(1-abar) is largest).
func TestNoiseOfInvertsAddNoise(t *testing.T) {
	defer torchrt.Pin()()
	s, err := NewSchedule(ReferenceSchedule)
	if err != nil {
		t.Fatal(err)
	}
	n := NewNoise(5)
	z0 := n.Normal([]int64{3, 4, 2, 2}, gotch.CPU)
	defer z0.MustDrop()
	eps := n.Normal([]int64{3, 4, 2, 2}, gotch.CPU)
	defer eps.MustDrop()
	steps := []int{0, 400, 999}
	zt, err := s.AddNoise(z0, eps, steps)
	if err != nil {
		t.Fatal(err)
	}
	defer zt.MustDrop()
	back := s.NoiseOf(zt, z0, steps)
	defer back.MustDrop()
	for i, got := range values(back) {
		if want := values(eps)[i]; math.Abs(got-want) > 1e-3*math.Max(1, math.Abs(want)) {
			t.Fatalf("element %d (t = %d): %v, want %v", i, steps[i/16], got, want)
		}
	}
}
