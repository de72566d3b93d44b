package torchrt

import (
	"runtime"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// finalizerTwin has the patched gotch Tensor's layout: what the finalizer
// that gotch sets on every tensor (and clears on Drop) is set on.
type finalizerTwin struct {
	name       string
	ptr        uintptr
	calledFrom string
}

// BenchmarkTensorFinalizer measures what gotch's safety-net finalizer costs
// next to the smallest tensor operation: "op" is one addition of two
// 1-element tensors and the drop of its result (a wrapper call, a new
// tensor with its finalizer, a free that clears it); "finalizer" is the
// finalizer's part alone, set on a new object of the Tensor's layout and
// cleared. Their ratio is the finalizer's share of the cheapest operation;
// every model operation costs far more than this one.
func BenchmarkTensorFinalizer(b *testing.B) {
	defer Pin()()
	x := ts.MustOnes([]int64{1}, gotch.Float, gotch.CPU)
	defer x.MustDrop()
	b.Run("op", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			y := x.MustAdd(x, false)
			y.MustDrop()
		}
	})
	free := func(*finalizerTwin) {}
	b.Run("finalizer", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			t := &finalizerTwin{}
			runtime.SetFinalizer(t, free)
			runtime.SetFinalizer(t, nil)
		}
	})
}
