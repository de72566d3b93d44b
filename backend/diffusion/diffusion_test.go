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

func TestDDIMTimesteps(t *testing.T) {
	s, _ := NewSchedule(ReferenceSchedule)
	got, err := ReferenceSampler.DDIMTimesteps(s)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{901, 801, 701, 601, 501, 401, 301, 201, 101, 1}; !slices.Equal(got, want) {
		t.Fatalf("timesteps %v, want %v", got, want)
	}
	got, _ = SamplerConfig{StartT: 499, Steps: 5}.DDIMTimesteps(s)
	if want := []int{401, 301, 201, 101, 1}; !slices.Equal(got, want) {
		t.Fatalf("start 499: %v, want %v", got, want)
	}
	got, _ = SamplerConfig{Timesteps: []int{700, 300, 0}}.DDIMTimesteps(s)
	if !slices.Equal(got, []int{700, 300, 0}) {
		t.Fatalf("explicit: %v", got)
	}
	for _, bad := range []SamplerConfig{{StartT: 1000, Steps: 10}, {StartT: 999, Steps: 0}, {StartT: 5, Steps: 10}, {Timesteps: []int{3, 5}}} {
		if _, err := bad.DDIMTimesteps(s); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func values(t *ts.Tensor) []float64 { return t.Float64Values() }

func TestAddNoiseClosedForm(t *testing.T) {
	defer torchrt.Pin()()
	s, _ := NewSchedule(ReferenceSchedule)
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
	s, _ := NewSchedule(ReferenceSchedule)
	// A hand-made denoiser: eps = 0.1 * t/1000 + 0.5 * z (elementwise), so each
	// step's prediction depends on the step's input.
	den := func(z *ts.Tensor, tt int) *ts.Tensor {
		return z.MustMulScalar(ts.FloatScalar(0.5), false).MustAddScalar(ts.FloatScalar(0.1*float64(tt)/1000), true)
	}
	start := []float64{0.3, -1.2, 2.0, 0.0}
	zs := ts.MustOfSlice([]float32{0.3, -1.2, 2.0, 0.0}).MustView([]int64{1, 1, 2, 2}, true)
	defer zs.MustDrop()
	var visited []int
	out, err := DDIM(context.Background(), s, ReferenceSampler, zs, den, nil, func(st Step) error {
		visited = append(visited, st.T)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer out.MustDrop()
	// The same recurrence in float64.
	steps, _ := ReferenceSampler.DDIMTimesteps(s)
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
	if _, err := DDIM(context.Background(), s, SamplerConfig{StartT: 999, Steps: 10, Eta: 1}, zs, den, nil, nil); err == nil {
		t.Fatal("eta without noise accepted")
	}
	stop := errors.New("stop")
	if _, err := DDIM(context.Background(), s, ReferenceSampler, zs, den, nil, func(Step) error { return stop }); !errors.Is(err, stop) {
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
