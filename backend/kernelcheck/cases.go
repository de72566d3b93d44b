package kernelcheck

import (
	"fmt"
	"math/rand/v2"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/layers"
	"github.com/diad-project/diad/backend/torchrt"
)

// output is one tensor a case computed with libtorch, its float64 reference
// and the tolerance of each element.
type output struct {
	name  string
	got   []float32
	want  []float64
	bound []float64
}

// kernelCase is one operation of the model at a shape that exercises the
// kernel libtorch picks for it.
type kernelCase struct {
	op    string // what it computes, as a warning names it
	shape string
	run   func(tc *tensors, rnd *rand.Rand) ([]output, error)
}

// cases are the operations the model's forward and backward passes are
// made of. The convolutions with few output channels are the shapes at
// which oneDNN 3.7.2 returned NaN or wrong input gradients on AMD Zen 5
// (the denoiser's last convolution, 64 -> 4); the others cover every other
// kernel family a training step calls (oneDNN's convolutions, ATen's group
// norm and fused attention, the BLAS's matrix products).
var cases = []kernelCase{
	convCase("conv2d 64->4 3x3", convShape{N: 2, C: 64, H: 16, W: 16, O: 4, K: 3, Stride: 1, Pad: 1}),
	convCase("conv2d 32->4 3x3", convShape{N: 1, C: 32, H: 32, W: 32, O: 4, K: 3, Stride: 1, Pad: 1}),
	convCase("conv2d 4->64 3x3", convShape{N: 2, C: 4, H: 16, W: 16, O: 64, K: 3, Stride: 1, Pad: 1}),
	convCase("conv2d 32->32 3x3 stride 2", convShape{N: 2, C: 32, H: 16, W: 16, O: 32, K: 3, Stride: 2, Pad: 1}),
	convCase("conv2d 64->32 1x1", convShape{N: 2, C: 64, H: 8, W: 8, O: 32, K: 1, Stride: 1, Pad: 0}),
	convTransposeCase("conv_transpose2d 32->16 4x4 stride 2", 2, 32, 16, 8, 4, 2, 1),
	groupNormCase("group_norm 32 groups", 2, 64, 8, 32),
	attentionCase("scaled_dot_product_attention", 2, 4, 64, 16),
	linearCase("linear 64->96", 128, 64, 96),
}

// tensors records the tensors a case makes, so that one call frees them all.
type tensors struct{ list []*ts.Tensor }

func (tc *tensors) keep(t *ts.Tensor) *ts.Tensor {
	tc.list = append(tc.list, t)
	return t
}

func (tc *tensors) free() {
	for _, t := range tc.list {
		t.MustDrop()
	}
	tc.list = nil
}

// param makes a float32 tensor of the given shape from vals, recording
// gradients when grad is set.
func (tc *tensors) param(vals []float64, shape []int64, grad bool) *ts.Tensor {
	f := make([]float32, len(vals))
	for i, v := range vals {
		f[i] = float32(v)
	}
	t := tc.keep(ts.MustOfSlice(f).MustView(shape, true))
	if grad {
		torchrt.SetRequiresGrad_(t, true)
	}
	return t
}

// grad is t's gradient after a backward pass, as Go values.
func grad(t *ts.Tensor) []float32 {
	g := t.MustGrad(false)
	defer g.MustDrop()
	return torchrt.Float32s(g)
}

// backward runs autograd from Σ y·g, which makes g the output gradient.
func (tc *tensors) backward(y, g *ts.Tensor) error {
	loss := tc.keep(tc.keep(y.MustMul(g, false)).MustSum(y.DType(), false))
	return torchrt.Backward(loss, false)
}

// uniform draws n values in [-a, a), rounded to float32 so that the
// reference and libtorch see the same inputs.
func uniform(rnd *rand.Rand, n int, a float64) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = float64(float32((2*rnd.Float64() - 1) * a))
	}
	return out
}

func convCase(op string, c convShape) kernelCase {
	oh, ow := c.out()
	return kernelCase{op: op, shape: fmt.Sprintf("input %dx%dx%dx%d", c.N, c.C, c.H, c.W), run: func(tc *tensors, rnd *rand.Rand) ([]output, error) {
		xv, wv, bv := uniform(rnd, c.inputLen(), 1), uniform(rnd, c.weightLen(), 0.1), uniform(rnd, c.O, 0.1)
		gv := uniform(rnd, c.outputLen(), 1)
		x := tc.param(xv, []int64{int64(c.N), int64(c.C), int64(c.H), int64(c.W)}, true)
		w := tc.param(wv, []int64{int64(c.O), int64(c.C), int64(c.K), int64(c.K)}, true)
		b := tc.param(bv, []int64{int64(c.O)}, true)
		g := tc.param(gv, []int64{int64(c.N), int64(c.O), int64(oh), int64(ow)}, false)
		s, p := int64(c.Stride), int64(c.Pad)
		y := tc.keep(ts.MustConv2d(x, w, b, []int64{s, s}, []int64{p, p}, []int64{1, 1}, 1))
		return tc.affineOutputs(c, y, g, [3]*ts.Tensor{x, w, b}, [4][]float64{xv, wv, bv, gv})
	}}
}

// convTransposeCase checks a transposed convolution, which is the input
// gradient of the convolution with the same weight: the reference is that.
func convTransposeCase(op string, n, in, out, size, k, stride, pad int) kernelCase {
	outSize := (size-1)*stride - 2*pad + k
	c := convShape{N: n, C: out, H: outSize, W: outSize, O: in, K: k, Stride: stride, Pad: pad}
	return kernelCase{op: op, shape: fmt.Sprintf("input %dx%dx%dx%d", n, in, size, size), run: func(tc *tensors, rnd *rand.Rand) ([]output, error) {
		xv, wv := uniform(rnd, n*in*size*size, 1), uniform(rnd, in*out*k*k, 0.1)
		x := tc.param(xv, []int64{int64(n), int64(in), int64(size), int64(size)}, false)
		w := tc.param(wv, []int64{int64(in), int64(out), int64(k), int64(k)}, false)
		s, p := int64(stride), int64(pad)
		y := tc.keep(ts.MustConvTranspose2d(x, w, layers.None, []int64{s, s}, []int64{p, p}, []int64{0, 0}, 1, []int64{1, 1}))
		// The transposed convolution of x is the input gradient of the
		// convolution for output gradient x; that convolution's own input
		// and bias do not enter it (zeros).
		ref := convRef(c, make([]float64, c.inputLen()), wv, make([]float64, c.O), xv).gx
		return []output{{"output", torchrt.Float32s(y), ref.val, ref.bound()}}, nil
	}}
}

func groupNormCase(op string, n, c, size, groups int) kernelCase {
	const eps = 1e-5
	return kernelCase{op: op, shape: fmt.Sprintf("input %dx%dx%dx%d", n, c, size, size), run: func(tc *tensors, rnd *rand.Rand) ([]output, error) {
		s := size * size
		xv, wv, bv, gv := uniform(rnd, n*c*s, 2), uniform(rnd, c, 1), uniform(rnd, c, 0.5), uniform(rnd, n*c*s, 1)
		shape := []int64{int64(n), int64(c), int64(size), int64(size)}
		x := tc.param(xv, shape, true)
		w := tc.param(wv, []int64{int64(c)}, false)
		b := tc.param(bv, []int64{int64(c)}, false)
		g := tc.param(gv, shape, false)
		y := tc.keep(ts.MustGroupNorm(x, int64(groups), w, b, eps, false))
		got := torchrt.Float32s(y)
		if err := tc.backward(y, g); err != nil {
			return nil, err
		}
		ry, rgx, ymag, gxmag := groupNormRef(n, c, s, groups, eps, xv, wv, bv, gv)
		return []output{
			{"output", got, ry, scaled(ymag, normTolerance)},
			{"input gradient", grad(x), rgx, scaled(gxmag, normTolerance)},
		}, nil
	}}
}

func attentionCase(op string, batch, heads, tokens, dim int) kernelCase {
	return kernelCase{op: op, shape: fmt.Sprintf("q, k, v %dx%dx%dx%d", batch, heads, tokens, dim), run: func(tc *tensors, rnd *rand.Rand) ([]output, error) {
		n := batch * heads * tokens * dim
		qv, kv, vv, gv := uniform(rnd, n, 2), uniform(rnd, n, 2), uniform(rnd, n, 1), uniform(rnd, n, 1)
		shape := []int64{int64(batch), int64(heads), int64(tokens), int64(dim)}
		q, k, v := tc.param(qv, shape, true), tc.param(kv, shape, true), tc.param(vv, shape, true)
		g := tc.param(gv, shape, false)
		y := tc.keep(ts.MustScaledDotProductAttention(q, k, v, layers.None, 0, false, nil))
		got := torchrt.Float32s(y)
		if err := tc.backward(y, g); err != nil {
			return nil, err
		}
		ro, rgq, rgk, rgv, omag, qmag, kmag, vmag := attentionRef(batch*heads, tokens, dim, qv, kv, vv, gv)
		return []output{
			{"output", got, ro, scaled(omag, normTolerance)},
			{"query gradient", grad(q), rgq, scaled(qmag, normTolerance)},
			{"key gradient", grad(k), rgk, scaled(kmag, normTolerance)},
			{"value gradient", grad(v), rgv, scaled(vmag, normTolerance)},
		}, nil
	}}
}

// linearCase checks a matrix product with bias (the BLAS): it is a 1x1
// convolution of 1x1 images, so the convolution reference serves.
func linearCase(op string, rows, in, out int) kernelCase {
	c := convShape{N: rows, C: in, H: 1, W: 1, O: out, K: 1, Stride: 1}
	return kernelCase{op: op, shape: fmt.Sprintf("input %dx%d", rows, in), run: func(tc *tensors, rnd *rand.Rand) ([]output, error) {
		xv, wv, bv, gv := uniform(rnd, rows*in, 1), uniform(rnd, out*in, 0.2), uniform(rnd, out, 0.1), uniform(rnd, rows*out, 1)
		x := tc.param(xv, []int64{int64(rows), int64(in)}, true)
		w := tc.param(wv, []int64{int64(out), int64(in)}, true)
		b := tc.param(bv, []int64{int64(out)}, true)
		g := tc.param(gv, []int64{int64(rows), int64(out)}, false)
		y := tc.keep(ts.MustLinear(x, w, b))
		return tc.affineOutputs(c, y, g, [3]*ts.Tensor{x, w, b}, [4][]float64{xv, wv, bv, gv})
	}}
}

// affineOutputs compares an affine op's output y = f(x, w) + b (a
// convolution or a matrix product, c its shape as a convolution) and, for
// the output gradient g, the gradients of x, w and b with the reference.
// vals are the values of x, w, b and g.
func (tc *tensors) affineOutputs(c convShape, y, g *ts.Tensor, xwb [3]*ts.Tensor, vals [4][]float64) ([]output, error) {
	got := torchrt.Float32s(y)
	if err := tc.backward(y, g); err != nil {
		return nil, err
	}
	ref := convRef(c, vals[0], vals[1], vals[2], vals[3])
	return []output{
		{"output", got, ref.y.val, ref.y.bound()},
		{"input gradient", grad(xwb[0]), ref.gx.val, ref.gx.bound()},
		{"weight gradient", grad(xwb[1]), ref.gw.val, ref.gw.bound()},
		{"bias gradient", grad(xwb[2]), ref.gb.val, ref.gb.bound()},
	}, nil
}

func scaled(mag []float64, tol float64) []float64 {
	out := make([]float64, len(mag))
	for i, m := range mag {
		out[i] = tol * m
	}
	return out
}
