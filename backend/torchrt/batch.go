package torchrt

import (
	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// ImageBatch turns n channel-major 3 x size x size images (as datasets
// produces them) into a [n, 3, size, size] float tensor on dev.
func ImageBatch(data []float32, n, size int, dev gotch.Device) *ts.Tensor {
	x := ts.MustOfSlice(data).MustView([]int64{int64(n), 3, int64(size), int64(size)}, true)
	if dev != gotch.CPU {
		x = x.MustTo(dev, true)
	}
	return x
}
