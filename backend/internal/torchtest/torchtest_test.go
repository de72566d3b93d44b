package torchtest

import (
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/torchrt"
)

// TestValueReadersFreeTheirCopies: reading a tensor's values as float64 or
// int64 (a converted copy inside gotch) leaves no tensor handle behind
// (upstream gotch left Float64Values' copy to the garbage collector).
func TestValueReadersFreeTheirCopies(t *testing.T) {
	defer torchrt.Pin()()
	x := ts.MustOnes([]int64{3, 4}, gotch.Float, gotch.CPU)
	defer x.MustDrop()
	RequireNoLeak(t, "Float64Values", 0, func() {
		if v := x.Float64Values(); len(v) != 12 || v[0] != 1 {
			t.Fatalf("values %v", v)
		}
	})
	RequireNoLeak(t, "Int64Values", 0, func() {
		if v := x.Int64Values(); len(v) != 12 || v[0] != 1 {
			t.Fatalf("values %v", v)
		}
	})
}
