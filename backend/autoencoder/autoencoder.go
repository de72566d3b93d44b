// Package autoencoder implements the Stable Diffusion "KL-f8" AutoencoderKL
// (ldm/modules/diffusionmodules/model.py) that maps ImageNet-normalised images
// to 4-channel latents and back: encoder with the asymmetric stride-2
// downsampling, one single-head attention block in each middle, a diagonal
// Gaussian posterior, and the 0.18215 latent scale factor.
//
// Parameter names follow the reference state dict below the caller's prefix
// ("first_stage_model.").
package autoencoder

import (
	"fmt"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/layers"
)

// Config is the autoencoder architecture.
type Config struct {
	InChannels   int64   `yaml:"in_channels"`
	Ch           int64   `yaml:"ch"`
	ChMult       []int64 `yaml:"ch_mult"`
	NumResBlocks int     `yaml:"num_res_blocks"`
	ZChannels    int64   `yaml:"z_channels"`
	EmbedDim     int64   `yaml:"embed_dim"`
	NormGroups   int64   `yaml:"norm_groups"`
	NormEps      float64 `yaml:"norm_eps"`
	// ScaleFactor multiplies posterior samples into diffusion latents.
	ScaleFactor float64 `yaml:"scale_factor"`
}

// Downsampling is the spatial factor between image and latent.
func (c Config) Downsampling() int64 { return 1 << (len(c.ChMult) - 1) }

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Ch <= 0 || len(c.ChMult) == 0 || c.NumResBlocks <= 0 || c.ZChannels <= 0 || c.EmbedDim <= 0 {
		return fmt.Errorf("autoencoder: ch, ch_mult, num_res_blocks, z_channels and embed_dim must be positive")
	}
	for _, m := range c.ChMult {
		if (m*c.Ch)%c.NormGroups != 0 {
			return fmt.Errorf("autoencoder: %d channels not divisible by %d norm groups", m*c.Ch, c.NormGroups)
		}
	}
	if c.ScaleFactor <= 0 {
		return fmt.Errorf("autoencoder: scale_factor must be positive")
	}
	return nil
}

// resnetBlock is the autoencoder's ResnetBlock (no timestep).
type resnetBlock struct {
	norm1, norm2 *layers.GroupNorm
	conv1, conv2 *layers.Conv2d
	shortcut     *layers.Conv2d
}

func newResnetBlock(p layers.Path, c Config, in, out int64) *resnetBlock {
	r := &resnetBlock{
		norm1: layers.NewGroupNorm(p.Sub("norm1"), c.NormGroups, in, c.NormEps),
		conv1: layers.NewConv2d(p.Sub("conv1"), in, out, 3, layers.ConvOpts{Padding: 1}),
		norm2: layers.NewGroupNorm(p.Sub("norm2"), c.NormGroups, out, c.NormEps),
		conv2: layers.NewConv2d(p.Sub("conv2"), out, out, 3, layers.ConvOpts{Padding: 1}),
	}
	if in != out {
		r.shortcut = layers.NewConv2d(p.Sub("nin_shortcut"), in, out, 1, layers.ConvOpts{})
	}
	return r
}

func (r *resnetBlock) forward(x *ts.Tensor) *ts.Tensor {
	n := r.norm1.ForwardSiLU(x)
	h := r.conv1.Forward(n)
	n.MustDrop()
	n = r.norm2.ForwardSiLU(h)
	h.MustDrop()
	h = r.conv2.Forward(n)
	n.MustDrop()
	if r.shortcut != nil {
		s := r.shortcut.Forward(x)
		out := h.MustAdd(s, true)
		s.MustDrop()
		return out
	}
	return h.MustAdd(x, true)
}

// attnBlock is the single-head spatial self-attention with 1x1-conv q, k, v, proj_out.
type attnBlock struct {
	norm          *layers.GroupNorm
	q, k, v, proj *layers.Conv2d
}

func newAttnBlock(p layers.Path, c Config, ch int64) *attnBlock {
	return &attnBlock{
		norm: layers.NewGroupNorm(p.Sub("norm"), c.NormGroups, ch, c.NormEps),
		q:    layers.NewConv2d(p.Sub("q"), ch, ch, 1, layers.ConvOpts{}),
		k:    layers.NewConv2d(p.Sub("k"), ch, ch, 1, layers.ConvOpts{}),
		v:    layers.NewConv2d(p.Sub("v"), ch, ch, 1, layers.ConvOpts{}),
		proj: layers.NewConv2d(p.Sub("proj_out"), ch, ch, 1, layers.ConvOpts{}),
	}
}

func (a *attnBlock) forward(x *ts.Tensor) *ts.Tensor {
	s := x.MustSize()
	b, c, h, w := s[0], s[1], s[2], s[3]
	n := a.norm.Forward(x)
	// [B, C, H, W] -> [B, 1, HW, C]: one head attending over all positions.
	tokens := func(t *ts.Tensor) *ts.Tensor {
		return t.MustView([]int64{b, c, h * w}, true).MustTranspose(1, 2, true).MustUnsqueeze(1, true)
	}
	q, k, v := tokens(a.q.Forward(n)), tokens(a.k.Forward(n)), tokens(a.v.Forward(n))
	n.MustDrop()
	o := layers.Attention(q, k, v)
	q.MustDrop()
	k.MustDrop()
	v.MustDrop()
	img := o.MustSqueezeDim(1, true).MustTranspose(1, 2, true).MustReshape([]int64{b, c, h, w}, true)
	out := a.proj.Forward(img)
	img.MustDrop()
	return out.MustAdd(x, true)
}

// Encoder maps images to posterior moments.
type Encoder struct {
	convIn     *layers.Conv2d
	down       [][]*resnetBlock
	downsample []*layers.Conv2d // nil at the last level
	mid1, mid2 *resnetBlock
	midAttn    *attnBlock
	normOut    *layers.GroupNorm
	convOut    *layers.Conv2d
}

func newEncoder(p layers.Path, c Config) *Encoder {
	e := &Encoder{convIn: layers.NewConv2d(p.Sub("conv_in"), c.InChannels, c.Ch, 3, layers.ConvOpts{Padding: 1})}
	in := c.Ch
	for i, m := range c.ChMult {
		lp := p.Sub("down").Subf("%d", i)
		out := m * c.Ch
		var blocks []*resnetBlock
		for j := 0; j < c.NumResBlocks; j++ {
			blocks = append(blocks, newResnetBlock(lp.Sub("block").Subf("%d", j), c, in, out))
			in = out
		}
		e.down = append(e.down, blocks)
		var ds *layers.Conv2d
		if i != len(c.ChMult)-1 {
			// Stride 2 with no padding: the input is padded (0,1,0,1) first.
			ds = layers.NewConv2d(lp.Sub("downsample").Sub("conv"), in, in, 3, layers.ConvOpts{Stride: 2})
		}
		e.downsample = append(e.downsample, ds)
	}
	mp := p.Sub("mid")
	e.mid1 = newResnetBlock(mp.Sub("block_1"), c, in, in)
	e.midAttn = newAttnBlock(mp.Sub("attn_1"), c, in)
	e.mid2 = newResnetBlock(mp.Sub("block_2"), c, in, in)
	e.normOut = layers.NewGroupNorm(p.Sub("norm_out"), c.NormGroups, in, c.NormEps)
	e.convOut = layers.NewConv2d(p.Sub("conv_out"), in, 2*c.ZChannels, 3, layers.ConvOpts{Padding: 1})
	return e
}

// downsample is the reference's asymmetric stride-2 step: pad (0,1,0,1),
// then the 3x3 conv with no padding.
func downsample(ds *layers.Conv2d, t *ts.Tensor) *ts.Tensor {
	padded := t.MustConstantPadNd([]int64{0, 1, 0, 1}, false)
	out := ds.Forward(padded)
	padded.MustDrop()
	return out
}

// chain applies f to h and frees h.
func chain(h *ts.Tensor, f func(*ts.Tensor) *ts.Tensor) *ts.Tensor {
	out := f(h)
	h.MustDrop()
	return out
}

func (e *Encoder) forward(x *ts.Tensor) *ts.Tensor {
	h := e.convIn.Forward(x)
	for i, blocks := range e.down {
		for _, b := range blocks {
			h = chain(h, b.forward)
		}
		if ds := e.downsample[i]; ds != nil {
			h = chain(h, func(t *ts.Tensor) *ts.Tensor { return downsample(ds, t) })
		}
	}
	h = chain(h, e.mid1.forward)
	h = chain(h, e.midAttn.forward)
	h = chain(h, e.mid2.forward)
	h = chain(h, e.normOut.ForwardSiLU)
	return chain(h, e.convOut.Forward)
}

// Decoder maps (unscaled) latents to ImageNet-normalised images.
type Decoder struct {
	convIn     *layers.Conv2d
	mid1, mid2 *resnetBlock
	midAttn    *attnBlock
	up         [][]*resnetBlock // indexed by level, as the reference's decoder.up.{level}
	upsample   []*layers.Conv2d // nil at level 0
	normOut    *layers.GroupNorm
	convOut    *layers.Conv2d
}

func newDecoder(p layers.Path, c Config) *Decoder {
	levels := len(c.ChMult)
	in := c.ChMult[levels-1] * c.Ch
	d := &Decoder{convIn: layers.NewConv2d(p.Sub("conv_in"), c.ZChannels, in, 3, layers.ConvOpts{Padding: 1})}
	mp := p.Sub("mid")
	d.mid1 = newResnetBlock(mp.Sub("block_1"), c, in, in)
	d.midAttn = newAttnBlock(mp.Sub("attn_1"), c, in)
	d.mid2 = newResnetBlock(mp.Sub("block_2"), c, in, in)
	d.up = make([][]*resnetBlock, levels)
	d.upsample = make([]*layers.Conv2d, levels)
	for i := levels - 1; i >= 0; i-- {
		lp := p.Sub("up").Subf("%d", i)
		out := c.ChMult[i] * c.Ch
		for j := 0; j <= c.NumResBlocks; j++ {
			d.up[i] = append(d.up[i], newResnetBlock(lp.Sub("block").Subf("%d", j), c, in, out))
			in = out
		}
		if i != 0 {
			d.upsample[i] = layers.NewConv2d(lp.Sub("upsample").Sub("conv"), in, in, 3, layers.ConvOpts{Padding: 1})
		}
	}
	d.normOut = layers.NewGroupNorm(p.Sub("norm_out"), c.NormGroups, in, c.NormEps)
	d.convOut = layers.NewConv2d(p.Sub("conv_out"), in, c.InChannels, 3, layers.ConvOpts{Padding: 1})
	return d
}

func (d *Decoder) forward(z *ts.Tensor) *ts.Tensor {
	h := d.convIn.Forward(z)
	h = chain(h, d.mid1.forward)
	h = chain(h, d.midAttn.forward)
	h = chain(h, d.mid2.forward)
	for i := len(d.up) - 1; i >= 0; i-- {
		for _, b := range d.up[i] {
			h = chain(h, b.forward)
		}
		if us := d.upsample[i]; us != nil {
			h = chain(h, func(t *ts.Tensor) *ts.Tensor {
				s := t.MustSize()
				up := t.MustUpsampleNearest2d([]int64{2 * s[2], 2 * s[3]}, nil, nil, false)
				out := us.Forward(up)
				up.MustDrop()
				return out
			})
		}
	}
	h = chain(h, d.normOut.ForwardSiLU)
	return chain(h, d.convOut.Forward)
}

// AutoencoderKL is the full first stage.
type AutoencoderKL struct {
	cfg       Config
	enc       *Encoder
	dec       *Decoder
	quant     *layers.Conv2d
	postQuant *layers.Conv2d
}

// New creates the autoencoder's parameters under p.
func New(p layers.Path, c Config) (*AutoencoderKL, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &AutoencoderKL{
		cfg:       c,
		enc:       newEncoder(p.Sub("encoder"), c),
		dec:       newDecoder(p.Sub("decoder"), c),
		quant:     layers.NewConv2d(p.Sub("quant_conv"), 2*c.ZChannels, 2*c.EmbedDim, 1, layers.ConvOpts{}),
		postQuant: layers.NewConv2d(p.Sub("post_quant_conv"), c.EmbedDim, c.ZChannels, 1, layers.ConvOpts{}),
	}, nil
}

// Config returns the architecture.
func (a *AutoencoderKL) Config() Config { return a.cfg }

// Posterior is the diagonal Gaussian over latents that the encoder predicts.
type Posterior struct {
	Mean, LogVar *ts.Tensor
}

// Free releases the posterior's tensors.
func (p Posterior) Free() {
	p.Mean.MustDrop()
	p.LogVar.MustDrop()
}

// Encode maps ImageNet-normalised images [B, 3, H, W] (H, W multiples of 8) to
// the posterior. logvar is clamped to [-30, 20] as in DiagonalGaussianDistribution.
func (a *AutoencoderKL) Encode(x *ts.Tensor) Posterior {
	h := a.enc.forward(x)
	moments := chain(h, a.quant.Forward)
	mean := moments.MustNarrow(1, 0, a.cfg.EmbedDim, false)
	logvar := moments.MustNarrow(1, a.cfg.EmbedDim, a.cfg.EmbedDim, true).MustClamp(ts.FloatScalar(-30), ts.FloatScalar(20), true)
	return Posterior{Mean: mean, LogVar: logvar}
}

// Sample returns mean + exp(logvar/2) * eps for standard normal eps (same
// shape as the mean); the caller keeps eps.
func (p Posterior) Sample(eps *ts.Tensor) *ts.Tensor {
	std := p.LogVar.MustMulScalar(ts.FloatScalar(0.5), false)
	std = std.MustExp(true)
	noise := eps.MustMul(std, false)
	std.MustDrop()
	return noise.MustAdd(p.Mean, true)
}

// Mode is the posterior mean.
func (p Posterior) Mode() *ts.Tensor { return p.Mean.MustShallowClone() }

// KL is the KL divergence to N(0, I), summed over latent dimensions and
// averaged over the batch (the reference's kl loss before its 1e-6 weight).
func (p Posterior) KL() *ts.Tensor {
	// 0.5 * sum(mean^2 + var - 1 - logvar)
	m2 := p.Mean.MustMul(p.Mean, false)
	v := p.LogVar.MustExp(false)
	s := m2.MustAdd(v, true).MustSub(p.LogVar, true).MustAddScalar(ts.FloatScalar(-1), true)
	v.MustDrop()
	b := s.MustSize()[0]
	sum := s.MustSum(s.DType(), true)
	return sum.MustMulScalar(ts.FloatScalar(0.5/float64(b)), true)
}

// ToLatent scales a posterior sample (or mode) into diffusion latent space.
func (a *AutoencoderKL) ToLatent(z *ts.Tensor) *ts.Tensor {
	return z.MustMulScalar(ts.FloatScalar(a.cfg.ScaleFactor), false)
}

// LatentShape is the latent shape for a batch of b images of side size.
func (a *AutoencoderKL) LatentShape(b, size int64) []int64 {
	return []int64{b, a.cfg.EmbedDim, size / a.cfg.Downsampling(), size / a.cfg.Downsampling()}
}

// EncodeLatent is ScaleFactor * sample(posterior(x)), the reference's z0, with
// the posterior noise eps supplied by the caller.
func (a *AutoencoderKL) EncodeLatent(x, eps *ts.Tensor) *ts.Tensor {
	post := a.Encode(x)
	defer post.Free()
	z := post.Sample(eps)
	defer z.MustDrop()
	return a.ToLatent(z)
}

// Decode maps a diffusion latent (scaled) back to an ImageNet-normalised image:
// D(z / ScaleFactor).
func (a *AutoencoderKL) Decode(latent *ts.Tensor) *ts.Tensor {
	z := latent.MustMulScalar(ts.FloatScalar(1/a.cfg.ScaleFactor), false)
	h := chain(z, a.postQuant.Forward)
	return chain(h, a.dec.forward)
}

// DecodeRaw decodes an unscaled posterior sample (autoencoder fine-tuning).
func (a *AutoencoderKL) DecodeRaw(z *ts.Tensor) *ts.Tensor {
	h := a.postQuant.Forward(z)
	return chain(h, a.dec.forward)
}

// SetScaleFactor changes the latent scale (set once after stage-1 training so
// that diffusion latents have unit variance, latent diffusion's scale_by_std).
func (a *AutoencoderKL) SetScaleFactor(f float64) { a.cfg.ScaleFactor = f }

// Features runs the encoder's levels on ImageNet-normalised images and returns
// each level's output before its downsampling ([B, ch*mult, H/2^i, W/2^i]),
// the features an anomaly map can compare when no ImageNet network is at hand:
// they were learned on the normal images themselves. The caller frees them.
func (a *AutoencoderKL) Features(x *ts.Tensor) []*ts.Tensor {
	e := a.enc
	h := e.convIn.Forward(x)
	var outs []*ts.Tensor
	for i, blocks := range e.down {
		for _, b := range blocks {
			h = chain(h, b.forward)
		}
		outs = append(outs, h.MustShallowClone())
		if ds := e.downsample[i]; ds != nil {
			h = chain(h, func(t *ts.Tensor) *ts.Tensor { return downsample(ds, t) })
		}
	}
	h.MustDrop()
	return outs
}
