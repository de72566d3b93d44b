// Package optim implements the optimizers diad trains with. They are written
// on gotch tensor operations rather than libtorch's C++ optimizers so that
// their state (moments, step counts) is ordinary named tensors that checkpoints
// save and restore exactly, in a fixed parameter order.
package optim

import (
	"fmt"
	"math"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/torchrt"

	"github.com/diad-project/diad/backend/layers"
)

// AdamWConfig is torch.optim.AdamW's hyper-parameters.
type AdamWConfig struct {
	LR          float64 `yaml:"lr"`
	Beta1       float64 `yaml:"beta1"`
	Beta2       float64 `yaml:"beta2"`
	Eps         float64 `yaml:"eps"`
	WeightDecay float64 `yaml:"weight_decay"`
}

// ReferenceAdamW is DiAD's setting (lr 1e-5, betas 0.9/0.999, weight decay 0.01).
var ReferenceAdamW = AdamWConfig{LR: 1e-5, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01}

// AdamW is decoupled-weight-decay Adam over a fixed list of parameters.
type AdamW struct {
	Config AdamWConfig
	params []*layers.Param
	m, v   []*ts.Tensor
	// Step counts completed updates (shared by all parameters, as every
	// parameter is updated at every step).
	Step int64
}

// NewAdamW creates the optimizer over params (typically Store.Trainable()).
func NewAdamW(params []*layers.Param, c AdamWConfig) (*AdamW, error) {
	if !(c.LR > 0) || c.Beta1 < 0 || c.Beta1 >= 1 || c.Beta2 < 0 || c.Beta2 >= 1 || !(c.Eps > 0) || c.WeightDecay < 0 {
		return nil, fmt.Errorf("optim: bad AdamW config %+v", c)
	}
	o := &AdamW{Config: c, params: params}
	for _, p := range params {
		o.m = append(o.m, p.Tensor.MustZerosLike(false))
		o.v = append(o.v, p.Tensor.MustZerosLike(false))
	}
	return o, nil
}

// Params are the optimised parameters, in order.
func (o *AdamW) Params() []*layers.Param { return o.params }

// ZeroGrad clears the parameters' gradients.
func (o *AdamW) ZeroGrad() {
	for _, p := range o.params {
		g := p.Tensor.MustGrad(false)
		if g.MustDefined() {
			torchrt.Zero_(g)
		}
		g.MustDrop()
	}
}

// Update applies one AdamW step from the accumulated gradients. Parameters
// whose gradient is undefined (not in this step's graph) are skipped entirely,
// as torch skips parameters whose grad is None.
func (o *AdamW) Update() {
	o.Step++
	c := o.Config
	bc1 := 1 - math.Pow(c.Beta1, float64(o.Step))
	bc2 := 1 - math.Pow(c.Beta2, float64(o.Step))
	stepSize := c.LR / bc1
	torchrt.NoGrad(func() {
		for i, p := range o.params {
			g := p.Tensor.MustGrad(false)
			if !g.MustDefined() {
				g.MustDrop()
				continue
			}
			if c.WeightDecay != 0 {
				torchrt.MulScalar_(p.Tensor, 1-c.LR*c.WeightDecay)
			}
			torchrt.Lerp_(o.m[i], g, 1-c.Beta1)
			torchrt.MulScalar_(o.v[i], c.Beta2)
			gs := g.MustMulScalar(ts.FloatScalar(math.Sqrt(1-c.Beta2)), true)
			torchrt.Addcmul_(o.v[i], gs, gs)
			gs.MustDrop()
			denom := o.v[i].MustSqrt(false)
			torchrt.MulScalar_(denom, 1/math.Sqrt(bc2))
			torchrt.AddScalar_(denom, c.Eps)
			upd := o.m[i].MustMulScalar(ts.FloatScalar(-stepSize), false)
			torchrt.Addcdiv_(p.Tensor, upd, denom)
			upd.MustDrop()
			denom.MustDrop()
		}
	})
}

// State returns the optimizer state as named tensors (views of the live state;
// do not free them): "<param>.exp_avg" and "<param>.exp_avg_sq".
func (o *AdamW) State() map[string]*ts.Tensor {
	st := make(map[string]*ts.Tensor, 2*len(o.params))
	for i, p := range o.params {
		st[p.Name+".exp_avg"] = o.m[i]
		st[p.Name+".exp_avg_sq"] = o.v[i]
	}
	return st
}

// LoadState copies saved moments into the optimizer; every parameter must be present.
func (o *AdamW) LoadState(st map[string]*ts.Tensor, step int64) error {
	for i, p := range o.params {
		for _, slot := range []struct {
			name string
			dst  *ts.Tensor
		}{{p.Name + ".exp_avg", o.m[i]}, {p.Name + ".exp_avg_sq", o.v[i]}} {
			src, ok := st[slot.name]
			if !ok {
				return fmt.Errorf("optim: saved state lacks %s", slot.name)
			}
			if fmt.Sprint(src.MustSize()) != fmt.Sprint(slot.dst.MustSize()) {
				return fmt.Errorf("optim: %s has shape %v, want %v", slot.name, src.MustSize(), slot.dst.MustSize())
			}
			torchrt.NoGrad(func() { slot.dst.Copy_(src) })
		}
	}
	o.Step = step
	return nil
}

// Free releases the optimizer state.
func (o *AdamW) Free() {
	for i := range o.m {
		o.m[i].MustDrop()
		o.v[i].MustDrop()
	}
	o.m, o.v = nil, nil
}
