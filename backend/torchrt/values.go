package torchrt

import (
	"unsafe"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// Float32s copies a tensor's values (any device, any float dtype, any layout)
// into a Go slice in C order. Unlike gotch's Float64Values it frees the
// temporary tensors it makes.
func Float32s(t *ts.Tensor) []float32 {
	c := t.MustDetach(false).MustTo(gotch.CPU, true)
	if c.DType() != gotch.Float {
		c = c.MustTotype(gotch.Float, true)
	}
	c = c.MustContiguous(true)
	defer c.MustDrop()
	n := int(c.Numel())
	out := make([]float32, n)
	if n > 0 {
		copy(out, unsafe.Slice((*float32)(c.MustDataPtr()), n))
	}
	return out
}

// Float64s is Float32s widened to float64.
func Float64s(t *ts.Tensor) []float64 {
	f := Float32s(t)
	out := make([]float64, len(f))
	for i, v := range f {
		out[i] = float64(v)
	}
	return out
}
