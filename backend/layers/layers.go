package layers

import (
	"math"

	"github.com/sugarme/gotch/ts"
)

// None is an absent optional tensor argument. gotch's ts.None wraps an
// undefined tensor, which some ops (scaled_dot_product_attention's mask) reject;
// a handle with a nil C pointer reaches libtorch as std::nullopt.
var None = &ts.Tensor{}

// opt returns t, or None for an absent optional argument.
func opt(t *ts.Tensor) *ts.Tensor {
	if t == nil {
		return None
	}
	return t
}

// Conv2d is a 2-D convolution with square kernels (weight, optional bias).
type Conv2d struct {
	W, B    *ts.Tensor
	Stride  int64
	Padding int64
}

// ConvOpts configures NewConv2d; the zero value is stride 1, no padding, with bias.
type ConvOpts struct {
	Stride, Padding int64
	NoBias          bool
	// ZeroInit starts weight and bias at zero (the reference's zero_module).
	ZeroInit bool
}

// NewConv2d creates weight [out, in, k, k] and bias [out] under p.
func NewConv2d(p Path, in, out, k int64, o ConvOpts) *Conv2d {
	fanIn := in * k * k
	wInit, bInit := FanIn(fanIn), FanIn(fanIn)
	if o.ZeroInit {
		wInit, bInit = Zeros, Zeros
	}
	c := &Conv2d{W: p.Param("weight", []int64{out, in, k, k}, wInit), Stride: max(o.Stride, 1), Padding: o.Padding}
	if !o.NoBias {
		c.B = p.Param("bias", []int64{out}, bInit)
	}
	return c
}

// Forward applies the convolution.
func (c *Conv2d) Forward(x *ts.Tensor) *ts.Tensor {
	return ts.MustConv2d(x, c.W, opt(c.B), []int64{c.Stride, c.Stride}, []int64{c.Padding, c.Padding}, []int64{1, 1}, 1)
}

// Linear is y = x W^T + b.
type Linear struct{ W, B *ts.Tensor }

// NewLinear creates weight [out, in] and, unless noBias, bias [out].
func NewLinear(p Path, in, out int64, noBias bool) *Linear {
	l := &Linear{W: p.Param("weight", []int64{out, in}, FanIn(in))}
	if !noBias {
		l.B = p.Param("bias", []int64{out}, FanIn(in))
	}
	return l
}

// Forward applies the layer to the last dimension of x.
func (l *Linear) Forward(x *ts.Tensor) *ts.Tensor { return ts.MustLinear(x, l.W, opt(l.B)) }

// GroupNorm normalises channel groups of an NCHW tensor, with affine parameters.
type GroupNorm struct {
	W, B   *ts.Tensor
	Groups int64
	Eps    float64
}

// NewGroupNorm creates weight (ones) and bias (zeros) of size channels.
func NewGroupNorm(p Path, groups, channels int64, eps float64) *GroupNorm {
	return &GroupNorm{W: p.Param("weight", []int64{channels}, Ones), B: p.Param("bias", []int64{channels}, Zeros), Groups: groups, Eps: eps}
}

// Forward normalises x.
func (g *GroupNorm) Forward(x *ts.Tensor) *ts.Tensor {
	return ts.MustGroupNorm(x, g.Groups, g.W, g.B, g.Eps, true)
}

// ForwardSiLU is SiLU(GroupNorm(x)), the pre-activation used by every ResBlock.
func (g *GroupNorm) ForwardSiLU(x *ts.Tensor) *ts.Tensor {
	return g.Forward(x).MustSilu(true)
}

// InstanceNorm normalises each channel of each sample over its spatial extent,
// without affine parameters (PyTorch InstanceNorm2d defaults). It is GroupNorm
// with one group per channel and no affine transform.
func InstanceNorm(x *ts.Tensor, eps float64) *ts.Tensor {
	c := x.MustSize()[1]
	return ts.MustGroupNorm(x, c, None, None, eps, true)
}

// LayerNorm normalises the last dimension, with affine parameters.
type LayerNorm struct {
	W, B *ts.Tensor
	Dim  int64
	Eps  float64
}

// NewLayerNorm creates weight (ones) and bias (zeros) of size dim.
func NewLayerNorm(p Path, dim int64, eps float64) *LayerNorm {
	return &LayerNorm{W: p.Param("weight", []int64{dim}, Ones), B: p.Param("bias", []int64{dim}, Zeros), Dim: dim, Eps: eps}
}

// Forward normalises x.
func (l *LayerNorm) Forward(x *ts.Tensor) *ts.Tensor {
	return ts.MustLayerNorm(x, []int64{l.Dim}, l.W, l.B, l.Eps, true)
}

// SplitHeads reshapes [B, N, H*D] to [B, H, N, D].
func SplitHeads(x *ts.Tensor, heads int64, del bool) *ts.Tensor {
	s := x.MustSize()
	v := x.MustView([]int64{s[0], s[1], heads, s[2] / heads}, del)
	return v.MustTranspose(1, 2, true)
}

// MergeHeads reshapes [B, H, N, D] to [B, N, H*D].
func MergeHeads(x *ts.Tensor, del bool) *ts.Tensor {
	s := x.MustSize()
	t := x.MustTranspose(1, 2, del)
	return t.MustReshape([]int64{s[0], s[2], s[1] * s[3]}, true)
}

// Attention is libtorch's fused scaled-dot-product attention on [B, H, N, D]
// tensors, with the default 1/sqrt(D) scale.
func Attention(q, k, v *ts.Tensor) *ts.Tensor {
	return ts.MustScaledDotProductAttention(q, k, v, None, 0, false, nil)
}

// CrossAttention is ldm's CrossAttention: bias-free q/k/v projections, multi-head
// attention, and an output projection (to_out.0). With a nil context it is
// self-attention.
type CrossAttention struct {
	Q, K, V, Out *Linear
	Heads        int64
}

// NewCrossAttention creates to_q, to_k, to_v and to_out.0 under p.
func NewCrossAttention(p Path, queryDim, contextDim, heads, dimHead int64) *CrossAttention {
	inner := heads * dimHead
	return &CrossAttention{
		Q:     NewLinear(p.Sub("to_q"), queryDim, inner, true),
		K:     NewLinear(p.Sub("to_k"), contextDim, inner, true),
		V:     NewLinear(p.Sub("to_v"), contextDim, inner, true),
		Out:   NewLinear(p.Sub("to_out").Sub("0"), inner, queryDim, false),
		Heads: heads,
	}
}

// Forward attends from x [B, N, C] to context [B, M, Cc] (or to x itself).
func (a *CrossAttention) Forward(x, context *ts.Tensor) *ts.Tensor {
	if context == nil {
		context = x
	}
	q := SplitHeads(a.Q.Forward(x), a.Heads, true)
	k := SplitHeads(a.K.Forward(context), a.Heads, true)
	v := SplitHeads(a.V.Forward(context), a.Heads, true)
	o := Attention(q, k, v)
	q.MustDrop()
	k.MustDrop()
	v.MustDrop()
	m := MergeHeads(o, true)
	out := a.Out.Forward(m)
	m.MustDrop()
	return out
}

// GEGLUFeedForward is ldm's FeedForward with glu=True: net.0.proj to 2*inner,
// x * GELU(gate), net.2 back to dim.
type GEGLUFeedForward struct {
	Proj, Out *Linear
	Inner     int64
}

// NewGEGLUFeedForward creates net.0.proj and net.2 under p (inner = mult*dim).
func NewGEGLUFeedForward(p Path, dim, mult int64) *GEGLUFeedForward {
	inner := dim * mult
	net := p.Sub("net")
	return &GEGLUFeedForward{
		Proj:  NewLinear(net.Sub("0").Sub("proj"), dim, 2*inner, false),
		Out:   NewLinear(net.Sub("2"), inner, dim, false),
		Inner: inner,
	}
}

// Forward applies the feed-forward to x [B, N, dim].
func (f *GEGLUFeedForward) Forward(x *ts.Tensor) *ts.Tensor {
	h := f.Proj.Forward(x)
	val := h.MustNarrow(-1, 0, f.Inner, false)
	gate := h.MustNarrow(-1, f.Inner, f.Inner, true)
	g := gate.MustGelu("none", true)
	prod := val.MustMul(g, true)
	g.MustDrop()
	out := f.Out.Forward(prod)
	prod.MustDrop()
	return out
}

// TransformerBlock is ldm's BasicTransformerBlock: self-attention,
// cross-attention on the context, GEGLU feed-forward, each pre-normed and residual.
type TransformerBlock struct {
	Attn1, Attn2        *CrossAttention
	FF                  *GEGLUFeedForward
	Norm1, Norm2, Norm3 *LayerNorm
}

// layerNormEps is PyTorch's nn.LayerNorm default, which ldm uses.
const layerNormEps = 1e-5

// NewTransformerBlock creates attn1, attn2, ff, norm1..3 under p.
func NewTransformerBlock(p Path, dim, heads, dimHead, contextDim int64) *TransformerBlock {
	return &TransformerBlock{
		Attn1: NewCrossAttention(p.Sub("attn1"), dim, dim, heads, dimHead),
		FF:    NewGEGLUFeedForward(p.Sub("ff"), dim, 4),
		Attn2: NewCrossAttention(p.Sub("attn2"), dim, contextDim, heads, dimHead),
		Norm1: NewLayerNorm(p.Sub("norm1"), dim, layerNormEps),
		Norm2: NewLayerNorm(p.Sub("norm2"), dim, layerNormEps),
		Norm3: NewLayerNorm(p.Sub("norm3"), dim, layerNormEps),
	}
}

// residual returns x + f(norm(x)) and frees x when del is set.
func residual(x *ts.Tensor, norm *LayerNorm, f func(*ts.Tensor) *ts.Tensor, del bool) *ts.Tensor {
	n := norm.Forward(x)
	h := f(n)
	n.MustDrop()
	out := h.MustAdd(x, true)
	if del {
		x.MustDrop()
	}
	return out
}

// Forward applies the block to x [B, N, dim]; it does not free x.
func (b *TransformerBlock) Forward(x, context *ts.Tensor) *ts.Tensor {
	h := residual(x, b.Norm1, func(n *ts.Tensor) *ts.Tensor { return b.Attn1.Forward(n, nil) }, false)
	h = residual(h, b.Norm2, func(n *ts.Tensor) *ts.Tensor { return b.Attn2.Forward(n, context) }, true)
	return residual(h, b.Norm3, b.FF.Forward, true)
}

// SpatialTransformer is ldm's SpatialTransformer with 1x1-conv projections:
// GroupNorm, proj_in, transformer blocks over the H*W tokens, zero-initialised
// proj_out, plus the input.
type SpatialTransformer struct {
	Norm    *GroupNorm
	ProjIn  *Conv2d
	Blocks  []*TransformerBlock
	ProjOut *Conv2d
}

// TransformerConfig is what a SpatialTransformer needs beyond its channel count.
type TransformerConfig struct {
	Heads, Depth, ContextDim, NormGroups int64
}

// spatialNormEps is ldm's Normalize() epsilon inside the transformer.
const spatialNormEps = 1e-6

// NewSpatialTransformer creates norm, proj_in, transformer_blocks.i, proj_out under p.
func NewSpatialTransformer(p Path, channels int64, c TransformerConfig) *SpatialTransformer {
	dimHead := channels / c.Heads
	st := &SpatialTransformer{
		Norm:   NewGroupNorm(p.Sub("norm"), c.NormGroups, channels, spatialNormEps),
		ProjIn: NewConv2d(p.Sub("proj_in"), channels, channels, 1, ConvOpts{}),
	}
	for i := int64(0); i < c.Depth; i++ {
		st.Blocks = append(st.Blocks, NewTransformerBlock(p.Sub("transformer_blocks").Subf("%d", i), channels, c.Heads, dimHead, c.ContextDim))
	}
	st.ProjOut = NewConv2d(p.Sub("proj_out"), channels, channels, 1, ConvOpts{ZeroInit: true})
	return st
}

// Forward applies the transformer to x [B, C, H, W] with context [B, M, Cc].
func (s *SpatialTransformer) Forward(x, context *ts.Tensor) *ts.Tensor {
	size := x.MustSize()
	b, c, h, w := size[0], size[1], size[2], size[3]
	n := s.Norm.Forward(x)
	p := s.ProjIn.Forward(n)
	n.MustDrop()
	// [B, C, H, W] -> [B, H*W, C]
	tok := p.MustView([]int64{b, c, h * w}, true).MustTranspose(1, 2, true)
	for _, blk := range s.Blocks {
		nt := blk.Forward(tok, context)
		tok.MustDrop()
		tok = nt
	}
	img := tok.MustTranspose(1, 2, true).MustReshape([]int64{b, c, h, w}, true)
	out := s.ProjOut.Forward(img)
	img.MustDrop()
	return out.MustAdd(x, true)
}

// TimestepEmbedding is the sinusoidal embedding of ldm's timestep_embedding
// (repeat_only=False): [cos(t f_i) | sin(t f_i)] with f_i = 10000^(-i/half).
// t is a float tensor [B] on the target device.
func TimestepEmbedding(t *ts.Tensor, dim int64) *ts.Tensor {
	half := dim / 2
	freqs := make([]float32, half)
	for i := range freqs {
		freqs[i] = float32(math.Exp(-math.Log(10000) * float64(i) / float64(half)))
	}
	f := ts.MustOfSlice(freqs).MustTo(t.MustDevice(), true).MustUnsqueeze(0, true)
	tt := t.MustUnsqueeze(1, false)
	args := tt.MustMul(f, true)
	f.MustDrop()
	cos := args.MustCos(false)
	sin := args.MustSin(true)
	emb := ts.MustCat([]*ts.Tensor{cos, sin}, 1)
	cos.MustDrop()
	sin.MustDrop()
	return emb
}
