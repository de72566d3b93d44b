package recompute

import (
	"math"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/torchrt"
)

// params of a small network with the shapes that matter for a UNet: a
// shared input computed with parameters outside the blocks (like the time
// embedding), a skip connection around a block, and a frozen block.
type params struct{ w1, w2, w3, we, frozen *ts.Tensor }

func newParams() params {
	torchrt.ManualSeed(7)
	p := func(r, c int64, train bool) *ts.Tensor {
		t := ts.MustRandn([]int64{r, c}, gotch.Float, gotch.CPU).MustMulScalar(ts.FloatScalar(0.5), true)
		torchrt.SetRequiresGrad_(t, train)
		return t
	}
	return params{w1: p(6, 6, true), w2: p(6, 6, true), w3: p(6, 3, true), we: p(2, 6, true), frozen: p(6, 6, false)}
}

func (p params) all() []*ts.Tensor { return []*ts.Tensor{p.w1, p.w2, p.w3, p.we} }

func (p params) free() {
	for _, t := range append(p.all(), p.frozen) {
		t.MustDrop()
	}
}

// loss runs the network with blocks on tp (nil: the ordinary graph).
func (p params) loss(tp *Tape, x, t *ts.Tensor) *ts.Tensor {
	emb := t.MustMm(p.we, false).MustTanh(true) // outside every block, used by two
	defer emb.MustDrop()
	a := tp.Run(func(in []*ts.Tensor) *ts.Tensor { return in[0].MustMm(p.w1, false).MustTanh(true) }, true, x)
	defer a.MustDrop()
	f := tp.Run(func(in []*ts.Tensor) *ts.Tensor { return in[0].MustMm(p.frozen, false) }, false, x) // no gradient at all: not kept
	defer f.MustDrop()
	b := tp.Run(func(in []*ts.Tensor) *ts.Tensor {
		h := in[0].MustMm(p.w2, false).MustAdd(in[1], true)
		return h.MustAdd(in[2], true).MustSigmoid(true)
	}, true, a, emb, f)
	defer b.MustDrop()
	sum := b.MustAdd(a, false) // glue: the skip around block b
	defer sum.MustDrop()
	c := tp.Run(func(in []*ts.Tensor) *ts.Tensor {
		e := in[1].MustNarrow(1, 0, 3, false)
		defer e.MustDrop()
		return in[0].MustMm(p.w3, false).MustMul(e, true)
	}, true, sum, emb)
	defer c.MustDrop()
	sq := c.MustSquare(false)
	return sq.MustMean(gotch.Float, true)
}

func grads(t *testing.T, ps []*ts.Tensor) [][]float32 {
	t.Helper()
	out := make([][]float32, len(ps))
	for i, p := range ps {
		g := p.MustGrad(false)
		if !g.MustDefined() {
			t.Fatalf("parameter %d has no gradient", i)
		}
		out[i] = torchrt.Float32s(g)
		torchrt.Zero_(g)
		g.MustDrop()
	}
	return out
}

func TestRecomputedGradientsEqualTheOrdinaryOnes(t *testing.T) {
	defer torchrt.Pin()()
	p := newParams()
	defer p.free()
	x := ts.MustRandn([]int64{4, 6}, gotch.Float, gotch.CPU)
	defer x.MustDrop()
	tt := ts.MustRandn([]int64{4, 2}, gotch.Float, gotch.CPU)
	defer tt.MustDrop()

	plain := p.loss(nil, x, tt)
	if err := torchrt.Backward(plain, false); err != nil {
		t.Fatal(err)
	}
	want := grads(t, p.all())

	tp := New()
	loss := p.loss(tp, x, tt)
	if tp.Blocks() != 3 {
		t.Fatalf("%d blocks on the tape, want 3 (the frozen one is not kept)", tp.Blocks())
	}
	if a, b := torchrt.Float64s(plain)[0], torchrt.Float64s(loss)[0]; a != b {
		t.Fatalf("loss %v with the tape, %v without", b, a)
	}
	plain.MustDrop()
	if err := torchrt.Backward(loss, true); err != nil {
		t.Fatal(err)
	}
	loss.MustDrop()
	// Before the blocks' turn only the glue's parameters have gradients.
	g := p.w1.MustGrad(false)
	for _, v := range torchrt.Float32s(g) {
		if v != 0 {
			t.Fatal("block a's weights got a gradient before its recomputation")
		}
	}
	g.MustDrop()
	if err := tp.Backward(); err != nil {
		t.Fatal(err)
	}
	tp.Free()
	got := grads(t, p.all())
	for i := range want {
		scale := 0.0
		for _, v := range want[i] {
			scale = math.Max(scale, math.Abs(float64(v)))
		}
		if scale == 0 {
			t.Fatalf("parameter %d: zero gradient, the test would not see a difference", i)
		}
		for k := range want[i] {
			if d := math.Abs(float64(got[i][k] - want[i][k])); d > 1e-6*scale {
				t.Fatalf("parameter %d [%d]: %v recomputed, %v ordinary", i, k, got[i][k], want[i][k])
			}
		}
	}
}

func TestNilTapeRunsBlocksAsPlainCalls(t *testing.T) {
	var tp *Tape
	x := ts.MustOnes([]int64{2}, gotch.Float, gotch.CPU)
	defer x.MustDrop()
	y := tp.Run(func(in []*ts.Tensor) *ts.Tensor { return in[0].MustMulScalar(ts.FloatScalar(3), false) }, true, x)
	defer y.MustDrop()
	if v := torchrt.Float32s(y); v[0] != 3 || tp.Blocks() != 0 || tp.Backward() != nil {
		t.Fatalf("nil tape: %v, %d blocks", v, tp.Blocks())
	}
	tp.Free()
}

func TestBackwardRefusesWithoutGradients(t *testing.T) {
	tp := New()
	x := ts.MustOnes([]int64{2}, gotch.Float, gotch.CPU)
	defer x.MustDrop()
	y := tp.Run(func(in []*ts.Tensor) *ts.Tensor { return in[0].MustMulScalar(ts.FloatScalar(3), false) }, true, x)
	y.MustDrop()
	defer tp.Free()
	var err error
	torchrt.NoGrad(func() { err = tp.Backward() })
	if err != ErrGradDisabled {
		t.Fatalf("backward with gradients off: %v", err)
	}
}
