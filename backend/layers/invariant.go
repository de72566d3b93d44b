package layers

import (
	"sync/atomic"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/torchrt"
)

// batchInvariant makes convolutions and linear layers run one sample at a
// time. libtorch picks a convolution's or a matrix product's algorithm by
// the whole batch's shape (measured: a 3x3 convolution at 4x4 pixels, or a
// 1x1 one with 8 channels, gives an image results differing by up to 1e-4
// alone and in a batch of 4), so an image's anomaly map would depend on
// which images shared its batch. Evaluation turns this on so that a sharded
// run and a single-process run give the same maps bit for bit; training
// leaves it off (it has no such need and pays for the extra calls).
var batchInvariant atomic.Bool

// SetBatchInvariant turns per-sample convolutions and linear layers on or
// off for the process and returns the previous setting.
func SetBatchInvariant(on bool) (was bool) { return batchInvariant.Swap(on) }

// BatchInvariant reports whether per-sample evaluation is on.
func BatchInvariant() bool { return batchInvariant.Load() }

// perSample is f(x), computed one sample (index of dimension 0) at a time
// when batch invariance is on. Each sample is copied to its own contiguous
// tensor, also in a batch of one: a kernel's result also depended on its
// input's strides and offset in memory (measured on attention over
// transposed views), so every sample reaches f laid out the same way.
func perSample(x *ts.Tensor, f func(*ts.Tensor) *ts.Tensor) *ts.Tensor {
	if !batchInvariant.Load() || x.Dim() < 2 {
		return f(x)
	}
	b := x.MustSize()[0]
	outs := make([]*ts.Tensor, b)
	for i := range b {
		xi := sample(x, i)
		outs[i] = f(xi)
		xi.MustDrop()
	}
	return catFree(outs)
}

// sample is x[i:i+1], copied to a new contiguous tensor unless it is
// contiguous already.
func sample(x *ts.Tensor, i int64) *ts.Tensor {
	v := x.MustNarrow(0, i, 1, false)
	if v.MustIsContiguous() {
		return v
	}
	c := ts.MustEmpty(v.MustSize(), v.DType(), v.MustDevice())
	torchrt.Copy_(c, v)
	v.MustDrop()
	return c
}

// catFree concatenates ts along dimension 0 and frees them.
func catFree(ts_ []*ts.Tensor) *ts.Tensor {
	y := ts.MustCat(ts_, 0)
	for _, t := range ts_ {
		t.MustDrop()
	}
	return y
}
