package torchrt

/*
#include <stdlib.h>
typedef void *tensor;
typedef void *scalar;
// gotch's C API (libtch/torch_api.h), linked into every diad binary.
extern char *get_and_reset_last_err();
extern void at_free(tensor);
extern scalar ats_float(double);
extern void ats_free(scalar);
extern void atg_zero_(tensor *, tensor);
extern void atg_fill_(tensor *, tensor, scalar);
extern void atg_uniform_(tensor *, tensor, double, double);
extern void atg_mul_scalar_(tensor *, tensor, scalar);
extern void atg_add_scalar_(tensor *, tensor, scalar);
extern void atg_lerp_(tensor *, tensor, tensor, scalar);
extern void atg_addcmul_(tensor *, tensor, tensor, tensor);
extern void atg_addcdiv_(tensor *, tensor, tensor, tensor);
extern void atg_requires_grad_(tensor *, tensor, int);
extern void at_copy_(tensor dst, tensor src);

// An in-place op returns a second handle to its input; gotch's Go wrappers
// swap it in and never free the first, which keeps the tensor (and, for a
// gradient, its whole buffer) alive forever. These helpers free it at once.
static char *diad_done(tensor *out) {
	if (out[0]) at_free(out[0]);
	return get_and_reset_last_err();
}
static char *diad_zero_(tensor t) { tensor out[1] = {0}; atg_zero_(out, t); return diad_done(out); }
static char *diad_fill_(tensor t, double v) {
	scalar s = ats_float(v); tensor out[1] = {0}; atg_fill_(out, t, s); ats_free(s); return diad_done(out);
}
static char *diad_uniform_(tensor t, double lo, double hi) { tensor out[1] = {0}; atg_uniform_(out, t, lo, hi); return diad_done(out); }
static char *diad_mul_scalar_(tensor t, double v) {
	scalar s = ats_float(v); tensor out[1] = {0}; atg_mul_scalar_(out, t, s); ats_free(s); return diad_done(out);
}
static char *diad_add_scalar_(tensor t, double v) {
	scalar s = ats_float(v); tensor out[1] = {0}; atg_add_scalar_(out, t, s); ats_free(s); return diad_done(out);
}
static char *diad_lerp_(tensor t, tensor end, double w) {
	scalar s = ats_float(w); tensor out[1] = {0}; atg_lerp_(out, t, end, s); ats_free(s); return diad_done(out);
}
static char *diad_addcmul_(tensor t, tensor a, tensor b) { tensor out[1] = {0}; atg_addcmul_(out, t, a, b); return diad_done(out); }
static char *diad_addcdiv_(tensor t, tensor a, tensor b) { tensor out[1] = {0}; atg_addcdiv_(out, t, a, b); return diad_done(out); }
static char *diad_copy_(tensor dst, tensor src) { at_copy_(dst, src); return get_and_reset_last_err(); }
static char *diad_requires_grad_(tensor t, int on) { tensor out[1] = {0}; atg_requires_grad_(out, t, on); return diad_done(out); }
*/
import "C"

import (
	"errors"
	"unsafe"

	"github.com/sugarme/gotch/ts"
)

// In-place tensor operations without gotch's handle leak. Each modifies t and
// panics on a libtorch error, like gotch's Must* operations.

func check(msg *C.char) {
	if msg != nil {
		s := C.GoString(msg)
		C.free(unsafe.Pointer(msg))
		panic(errors.New(s))
	}
}

func ct(t *ts.Tensor) C.tensor { return C.tensor(t.Ctensor()) }

// Zero_ sets t to zeros.
func Zero_(t *ts.Tensor) { check(C.diad_zero_(ct(t))) }

// Fill_ sets every element of t to v.
func Fill_(t *ts.Tensor, v float64) { check(C.diad_fill_(ct(t), C.double(v))) }

// Uniform_ fills t from U(lo, hi) with libtorch's global generator.
func Uniform_(t *ts.Tensor, lo, hi float64) {
	check(C.diad_uniform_(ct(t), C.double(lo), C.double(hi)))
}

// MulScalar_ is t *= v.
func MulScalar_(t *ts.Tensor, v float64) { check(C.diad_mul_scalar_(ct(t), C.double(v))) }

// AddScalar_ is t += v.
func AddScalar_(t *ts.Tensor, v float64) { check(C.diad_add_scalar_(ct(t), C.double(v))) }

// Copy_ copies src's values into dst (same shape; dtype and device converted).
func Copy_(dst, src *ts.Tensor) { check(C.diad_copy_(ct(dst), ct(src))) }

// Lerp_ is t += w * (end - t).
func Lerp_(t, end *ts.Tensor, w float64) { check(C.diad_lerp_(ct(t), ct(end), C.double(w))) }

// Addcmul_ is t += a * b.
func Addcmul_(t, a, b *ts.Tensor) { check(C.diad_addcmul_(ct(t), ct(a), ct(b))) }

// Addcdiv_ is t += a / b.
func Addcdiv_(t, a, b *ts.Tensor) { check(C.diad_addcdiv_(ct(t), ct(a), ct(b))) }

// SetRequiresGrad_ turns gradient tracking of a leaf tensor on or off.
func SetRequiresGrad_(t *ts.Tensor, on bool) {
	v := C.int(0)
	if on {
		v = 1
	}
	check(C.diad_requires_grad_(ct(t), v))
}
