package torchrt

/*
#include <stdlib.h>
typedef void *tensor;
// gotch's C API (libtch/torch_api.h), linked into every diad binary.
extern char *get_and_reset_last_err();
extern void at_backward(tensor, int, int);
static char *diad_backward(tensor t, int keep) { at_backward(t, keep, 0); return get_and_reset_last_err(); }
*/
import "C"

import (
	"errors"
	"unsafe"

	"github.com/sugarme/gotch/ts"
)

// Backward runs autograd's backward pass from the scalar t. With keepGraph
// the graph's saved tensors stay, so that another backward may run through
// a shared part of it (activation recomputation does: every recomputed block
// reaches the time embedding). gotch's Backward always frees the graph.
func Backward(t *ts.Tensor, keepGraph bool) error {
	keep := C.int(0)
	if keepGraph {
		keep = 1
	}
	if msg := C.diad_backward(ct(t), keep); msg != nil {
		s := C.GoString(msg)
		C.free(unsafe.Pointer(msg))
		return errors.New(s)
	}
	return nil
}
