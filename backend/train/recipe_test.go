package train

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/layers"
	"github.com/diad-project/diad/backend/torchrt"
)

func TestScheduleFactor(t *testing.T) {
	cos := Schedule{Kind: "cosine", WarmupSteps: 10, MinFactor: 0.1}
	for _, c := range []struct {
		s           Schedule
		step, total int
		want        float64
	}{
		{Schedule{}, 0, 100, 1},
		{Schedule{}, 99, 100, 1},
		{Schedule{WarmupSteps: 4}, 0, 100, 0.25},
		{Schedule{WarmupSteps: 4}, 3, 100, 1},
		{Schedule{WarmupSteps: 4}, 50, 100, 1},
		{cos, 0, 110, 0.1},
		{cos, 9, 110, 1},
		{cos, 10, 110, 1},
		{cos, 60, 110, 0.55}, // half-way through the decay
		{cos, 110, 110, 0.1},
		{cos, 500, 110, 0.1},
		{cos, 50, 0, 1}, // no known end: no decay
	} {
		if got := c.s.Factor(c.step, c.total); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("%+v step %d of %d: %g, want %g", c.s, c.step, c.total, got, c.want)
		}
	}
	for _, bad := range []Schedule{{Kind: "linear"}, {WarmupSteps: -1}, {MinFactor: 2}} {
		if bad.Validate() == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

func TestEMAAveragesAndSwaps(t *testing.T) {
	defer torchrt.Pin()()
	store := layers.NewStore(gotch.CPU)
	defer store.Free()
	w := store.Root().Param("w", []int64{3}, layers.Zeros)
	e := newEMA(store.Trainable(), 0.5)
	defer e.free()
	// Weights jump to 1: update n uses decay min(0.5, (1+n)/(10+n)), which
	// reaches the cap at n = 8.
	torchrt.NoGrad(func() { torchrt.Fill_(w, 1) })
	want := 0.0
	for _, d := range []float64{0.1, 2.0 / 11, 3.0 / 12, 4.0 / 13, 5.0 / 14, 6.0 / 15, 7.0 / 16, 8.0 / 17, 0.5, 0.5} {
		e.update()
		want = d*want + (1 - d)
	}
	got := torchrt.Float64s(e.shadow[0])
	for _, v := range got {
		if math.Abs(v-want) > 1e-6 {
			t.Fatalf("average %v, want %g", got, want)
		}
	}
	e.swap()
	if v := torchrt.Float64s(w)[0]; math.Abs(v-want) > 1e-6 {
		t.Fatalf("after swap the live weight is %g, want the average %g", v, want)
	}
	e.swap()
	if v := torchrt.Float64s(w)[0]; v != 1 {
		t.Fatalf("after swapping back the live weight is %g, want 1", v)
	}
	if len(e.state()) != 1 || e.state()[emaPrefix+"w"] == nil {
		t.Fatalf("state %v", e.state())
	}
}

func TestDemoConfigIsValid(t *testing.T) {
	c := DemoConfig()
	c.Data.Root, c.OutDir = "x", "y"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, ok := range []func(*Config){
		func(c *Config) { c.GuidanceDropout = 0.3 },
		func(c *Config) { c.RemoveFraction = 0.5 },
	} {
		good := c
		ok(&good)
		if err := good.Validate(); err != nil {
			t.Errorf("guidance_dropout %g, remove_fraction %g: %v", good.GuidanceDropout, good.RemoveFraction, err)
		}
	}
	for _, bad := range []func(*Config){
		func(c *Config) { c.GuidanceDropout = -0.1 },
		func(c *Config) { c.GuidanceDropout = 1 },
		func(c *Config) { c.RemoveFraction = 1.5 },
		func(c *Config) { c.GuidanceDropout, c.RemoveFraction = 0.2, 0.2 },
		func(c *Config) { c.Scorer = "ae+bogus" },
	} {
		b := c
		bad(&b)
		if b.Validate() == nil {
			t.Errorf("accepted: guidance_dropout %g, remove_fraction %g, scorer %q", b.GuidanceDropout, b.RemoveFraction, b.Scorer)
		}
	}
}

func TestTrainingStateRoundTripsEveryFloat(t *testing.T) {
	for _, v := range []float64{math.Inf(1), math.Inf(-1), math.NaN(), 0, -1.5, 1e-300} {
		st := state{Stage: StageAutoencoder, BestVal: Float(v)}
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatalf("%g: %v", v, err)
		}
		var back state
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatalf("%g: %s: %v", v, b, err)
		}
		got := float64(back.BestVal)
		if !(got == v || math.IsNaN(got) && math.IsNaN(v)) || back.Stage != StageAutoencoder {
			t.Fatalf("%g came back as %g (%s)", v, got, b)
		}
	}
	var bad state
	if err := json.Unmarshal([]byte(`{"best_val":"big"}`), &bad); err == nil {
		t.Fatal("a non-number string was accepted")
	}
}
