// Package unet implements DiAD's denoiser: the Stable Diffusion v1.5 UNet
// (ldm's openaimodel.UNetModel with SpatialTransformers) and the Semantic-Guided
// network that steers it (a ControlNet-like encoder copy with a hint block on the
// image, zero convolutions, and the SFF block), wired as the reference code's
// ControlledUnetModel with only_mid_control.
//
// Parameter names follow the reference state dict below the prefix the caller
// gives (model.diffusion_model. for the UNet, control_model. for the SG network).
package unet

import (
	"fmt"
	"time"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/layers"
	"github.com/diad-project/diad/backend/recompute"
)

// Config is the UNet architecture (models/diad.yaml of the reference for the paper).
type Config struct {
	InChannels    int64   `yaml:"in_channels"`
	OutChannels   int64   `yaml:"out_channels"`
	ModelChannels int64   `yaml:"model_channels"`
	ChannelMult   []int64 `yaml:"channel_mult"`
	NumResBlocks  int     `yaml:"num_res_blocks"`
	// AttentionLevels lists the levels (0 = full latent resolution) that get a
	// SpatialTransformer after each ResBlock; the paper uses 0, 1, 2 (ds 1, 2, 4).
	AttentionLevels  []int   `yaml:"attention_levels"`
	NumHeads         int64   `yaml:"num_heads"`
	TransformerDepth int64   `yaml:"transformer_depth"`
	ContextDim       int64   `yaml:"context_dim"`
	ContextLen       int64   `yaml:"context_len"`
	NormGroups       int64   `yaml:"norm_groups"`
	NormEps          float64 `yaml:"norm_eps"`
}

// TimeEmbedDim is the width of the timestep embedding MLP (4x model channels).
func (c Config) TimeEmbedDim() int64 { return 4 * c.ModelChannels }

// Validate checks the configuration for consistency.
func (c Config) Validate() error {
	if c.ModelChannels <= 0 || len(c.ChannelMult) == 0 || c.NumResBlocks <= 0 {
		return fmt.Errorf("unet: model_channels, channel_mult and num_res_blocks must be positive")
	}
	if len(c.ChannelMult) < 2 {
		return fmt.Errorf("unet: need at least 2 levels for the SFF block, got %d", len(c.ChannelMult))
	}
	for _, m := range c.ChannelMult {
		ch := m * c.ModelChannels
		if ch%c.NormGroups != 0 {
			return fmt.Errorf("unet: %d channels not divisible by %d norm groups", ch, c.NormGroups)
		}
		if ch%c.NumHeads != 0 {
			return fmt.Errorf("unet: %d channels not divisible by %d heads", ch, c.NumHeads)
		}
	}
	return nil
}

func (c Config) attentionAt(level int) bool {
	for _, l := range c.AttentionLevels {
		if l == level {
			return true
		}
	}
	return false
}

func (c Config) transformer() layers.TransformerConfig {
	return layers.TransformerConfig{Heads: c.NumHeads, Depth: c.TransformerDepth, ContextDim: c.ContextDim, NormGroups: c.NormGroups}
}

// ResBlock is openaimodel's ResBlock: GroupNorm-SiLU-conv, plus a projection of
// the timestep embedding, GroupNorm-SiLU-(dropout)-zero conv, and a skip.
type ResBlock struct {
	InNorm  *layers.GroupNorm
	InConv  *layers.Conv2d
	Emb     *layers.Linear
	OutNorm *layers.GroupNorm
	OutConv *layers.Conv2d
	Skip    *layers.Conv2d // nil when channels are unchanged
}

func newResBlock(p layers.Path, c Config, in, out int64) *ResBlock {
	r := &ResBlock{
		InNorm:  layers.NewGroupNorm(p.Sub("in_layers").Sub("0"), c.NormGroups, in, c.NormEps),
		InConv:  layers.NewConv2d(p.Sub("in_layers").Sub("2"), in, out, 3, layers.ConvOpts{Padding: 1}),
		Emb:     layers.NewLinear(p.Sub("emb_layers").Sub("1"), c.TimeEmbedDim(), out, false),
		OutNorm: layers.NewGroupNorm(p.Sub("out_layers").Sub("0"), c.NormGroups, out, c.NormEps),
		OutConv: layers.NewConv2d(p.Sub("out_layers").Sub("3"), out, out, 3, layers.ConvOpts{Padding: 1, ZeroInit: true}),
	}
	if in != out {
		r.Skip = layers.NewConv2d(p.Sub("skip_connection"), in, out, 1, layers.ConvOpts{})
	}
	return r
}

// Forward applies the block; embSiLU is SiLU(time embedding), shared by all blocks.
func (r *ResBlock) Forward(x, embSiLU *ts.Tensor) *ts.Tensor {
	n0 := r.InNorm.ForwardSiLU(x)
	h := r.InConv.Forward(n0)
	n0.MustDrop()
	e := r.Emb.Forward(embSiLU).MustUnsqueeze(-1, true).MustUnsqueeze(-1, true)
	h = h.MustAdd(e, true)
	e.MustDrop()
	n := r.OutNorm.ForwardSiLU(h)
	h.MustDrop()
	h = r.OutConv.Forward(n)
	n.MustDrop()
	if r.Skip != nil {
		s := r.Skip.Forward(x)
		out := h.MustAdd(s, true)
		s.MustDrop()
		return out
	}
	return h.MustAdd(x, true)
}

// block is one entry of input_blocks / middle_block / output_blocks: a
// TimestepEmbedSequential of a conv, ResBlock, SpatialTransformer, Downsample or
// Upsample in order.
type block struct {
	conv     *layers.Conv2d // input_blocks.0 and Downsample ("op")
	res      *ResBlock
	attn     *layers.SpatialTransformer
	upsample *layers.Conv2d // after nearest x2
	// params is where the block's parameters live (whether any is
	// trained decides whether recomputation keeps anything for it).
	params trainable
}

// trainable names a part of a network's parameters: those under prefix.
type trainable struct {
	store  *layers.Store
	prefix string
}

func trainableAt(p layers.Path) trainable { return trainable{store: p.Store(), prefix: p.Name("")} }

// now reports whether any of the parameters is trained at present.
func (t trainable) now() bool { return t.store != nil && t.store.RequiresGrad(t.prefix) }

func (b *block) forward(x, embSiLU, context *ts.Tensor) *ts.Tensor {
	h := x
	owned := false
	step := func(next *ts.Tensor) {
		if owned {
			h.MustDrop()
		}
		h, owned = next, true
	}
	if b.conv != nil {
		step(b.conv.Forward(h))
	}
	if b.res != nil {
		step(b.res.Forward(h, embSiLU))
	}
	if b.attn != nil {
		step(b.attn.Forward(h, context))
	}
	if b.upsample != nil {
		size := h.MustSize()
		up := h.MustUpsampleNearest2d([]int64{size[2] * 2, size[3] * 2}, nil, nil, false)
		step(up)
		step(b.upsample.Forward(h))
	}
	if !owned {
		return h.MustShallowClone()
	}
	return h
}

// timeEmbed is time_embed.0 (Linear), SiLU, time_embed.2 (Linear).
type timeEmbed struct{ l1, l2 *layers.Linear }

func newTimeEmbed(p layers.Path, c Config) *timeEmbed {
	d := c.TimeEmbedDim()
	return &timeEmbed{l1: layers.NewLinear(p.Sub("0"), c.ModelChannels, d, false), l2: layers.NewLinear(p.Sub("2"), d, d, false)}
}

// forwardSiLU returns SiLU(time_embed(sinusoid(t))): every ResBlock applies SiLU
// to the embedding first (emb_layers.0), so it is computed once.
func (te *timeEmbed) forwardSiLU(t *ts.Tensor, modelChannels int64) *ts.Tensor {
	s := layers.TimestepEmbedding(t, modelChannels)
	h := te.l1.Forward(s)
	s.MustDrop()
	h = h.MustSilu(true)
	e := te.l2.Forward(h)
	h.MustDrop()
	return e.MustSilu(true)
}

// encoder is the shared structure of the UNet's and the SG network's input
// blocks and middle block.
type encoder struct {
	time   *timeEmbed
	input  []*block
	middle []*block
	// chans[i] is the channel count after input block i.
	chans []int64
}

func newEncoder(p layers.Path, c Config) *encoder {
	e := &encoder{time: newTimeEmbed(p.Sub("time_embed"), c)}
	in := p.Sub("input_blocks")
	e.input = append(e.input, &block{conv: layers.NewConv2d(in.Sub("0").Sub("0"), c.InChannels, c.ModelChannels, 3, layers.ConvOpts{Padding: 1}), params: trainableAt(in.Sub("0"))})
	ch := c.ModelChannels
	e.chans = []int64{ch}
	for level, mult := range c.ChannelMult {
		for r := 0; r < c.NumResBlocks; r++ {
			bp := in.Subf("%d", len(e.input))
			out := mult * c.ModelChannels
			b := &block{res: newResBlock(bp.Sub("0"), c, ch, out), params: trainableAt(bp)}
			ch = out
			if c.attentionAt(level) {
				b.attn = layers.NewSpatialTransformer(bp.Sub("1"), ch, c.transformer())
			}
			e.input = append(e.input, b)
			e.chans = append(e.chans, ch)
		}
		if level != len(c.ChannelMult)-1 {
			bp := in.Subf("%d", len(e.input))
			e.input = append(e.input, &block{conv: layers.NewConv2d(bp.Sub("0").Sub("op"), ch, ch, 3, layers.ConvOpts{Stride: 2, Padding: 1}), params: trainableAt(bp)})
			e.chans = append(e.chans, ch)
		}
	}
	mp := p.Sub("middle_block")
	e.middle = []*block{
		{res: newResBlock(mp.Sub("0"), c, ch, ch), params: trainableAt(mp.Sub("0"))},
		{attn: layers.NewSpatialTransformer(mp.Sub("1"), ch, c.transformer()), params: trainableAt(mp.Sub("1"))},
		{res: newResBlock(mp.Sub("2"), c, ch, ch), params: trainableAt(mp.Sub("2"))},
	}
	return e
}

// BlockTimer receives how long each block of a forward pass took, named by
// its parameters' prefix (e.g. "model.diffusion_model.input_blocks.3."):
// a per-block time profile. On the CPU libtorch runs each operation before
// returning, so the wall time is the block's; on CUDA it is only the launch.
type BlockTimer func(block string, d time.Duration)

// hooks are what a network runs its blocks under, both optional: the
// recompute tape and the block timer.
type hooks struct {
	tape  *recompute.Tape
	timer BlockTimer
}

// run applies one of the network's parts (a block; fn for other parts) under
// h: on the tape when activations are recomputed in backward (no tape: an
// ordinary call), timed when a timer is set.
func (h hooks) run(params trainable, fn recompute.Block, in ...*ts.Tensor) *ts.Tensor {
	start := time.Now()
	var out *ts.Tensor
	if h.tape == nil {
		out = fn(in) // inference and ordinary training: no look at the parameters
	} else {
		out = h.tape.Run(fn, params.now(), in...)
	}
	if h.timer != nil {
		h.timer(params.prefix, time.Since(start))
	}
	return out
}

// run applies a block under h.
func (b *block) run(h hooks, x, embSiLU, context *ts.Tensor) *ts.Tensor {
	return h.run(b.params, func(in []*ts.Tensor) *ts.Tensor { return b.forward(in[0], in[1], in[2]) }, x, embSiLU, context)
}

func (e *encoder) forwardMiddle(h hooks, x, embSiLU, context *ts.Tensor) *ts.Tensor {
	cur := x.MustShallowClone()
	for _, b := range e.middle {
		next := b.run(h, cur, embSiLU, context)
		cur.MustDrop()
		cur = next
	}
	return cur
}

// UNet is the SD denoiser: encoder (input blocks, middle), decoder (output blocks
// with skip concatenation) and the output head.
type UNet struct {
	cfg     Config
	enc     *encoder
	output  []*block
	outNorm *layers.GroupNorm
	outConv *layers.Conv2d
	hooks   hooks
}

// SetTape makes Forward run its blocks on tp (activation recomputation for
// training; nil: off). The caller runs tp.Backward after the loss's.
func (u *UNet) SetTape(tp *recompute.Tape) { u.hooks.tape = tp }

// SetBlockTimer makes Forward report each block's time to t (nil: off).
func (u *UNet) SetBlockTimer(t BlockTimer) { u.hooks.timer = t }

// NewUNet creates the UNet's parameters under p.
func NewUNet(p layers.Path, c Config) (*UNet, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	u := &UNet{cfg: c, enc: newEncoder(p, c)}
	chans := append([]int64(nil), u.enc.chans...)
	ch := chans[len(chans)-1]
	op := p.Sub("output_blocks")
	for level := len(c.ChannelMult) - 1; level >= 0; level-- {
		for r := 0; r <= c.NumResBlocks; r++ {
			bp := op.Subf("%d", len(u.output))
			skip := chans[len(chans)-1]
			chans = chans[:len(chans)-1]
			out := c.ChannelMult[level] * c.ModelChannels
			b := &block{res: newResBlock(bp.Sub("0"), c, ch+skip, out), params: trainableAt(bp)}
			ch = out
			next := 1
			if c.attentionAt(level) {
				b.attn = layers.NewSpatialTransformer(bp.Sub("1"), ch, c.transformer())
				next = 2
			}
			if level > 0 && r == c.NumResBlocks {
				b.upsample = layers.NewConv2d(bp.Subf("%d", next).Sub("conv"), ch, ch, 3, layers.ConvOpts{Padding: 1})
			}
			u.output = append(u.output, b)
		}
	}
	u.outNorm = layers.NewGroupNorm(p.Sub("out").Sub("0"), c.NormGroups, ch, c.NormEps)
	u.outConv = layers.NewConv2d(p.Sub("out").Sub("2"), ch, c.OutChannels, 3, layers.ConvOpts{Padding: 1, ZeroInit: true})
	return u, nil
}

// Config returns the architecture.
func (u *UNet) Config() Config { return u.cfg }

// Forward predicts the noise of zt [B, C, h, w] at timesteps t (float [B]) with
// cross-attention context [B, M, Cc]. control, if not nil, is the SG network's
// output (len(inputs)+1 tensors, the middle last): the middle gets control[last]
// and the first ControlledSkips() output blocks get control on their skips
// (only_mid_control).
func (u *UNet) Forward(zt, t, context *ts.Tensor, control []*ts.Tensor) *ts.Tensor {
	// With the reference freezing the encoder's parameters do not require
	// gradients, so autograd records nothing here (the reference's no_grad);
	// when everything trains, the graph runs through the encoder too.
	emb := u.enc.time.forwardSiLU(t, u.cfg.ModelChannels)
	defer emb.MustDrop()
	hs := make([]*ts.Tensor, 0, len(u.enc.input))
	cur := zt
	for _, b := range u.enc.input {
		cur = b.run(u.hooks, cur, emb, context)
		hs = append(hs, cur)
	}
	h := u.enc.forwardMiddle(u.hooks, cur, emb, context)
	if control != nil {
		h = h.MustAdd(control[len(control)-1], true)
	}
	controlled := u.ControlledSkips()
	for i, b := range u.output {
		skip := hs[len(hs)-1]
		hs = hs[:len(hs)-1]
		if control != nil && i < controlled {
			skip = skip.MustAdd(control[len(control)-2-i], true)
		}
		cat := ts.MustCat([]*ts.Tensor{h, skip}, 1)
		h.MustDrop()
		skip.MustDrop()
		h = b.run(u.hooks, cat, emb, context)
		cat.MustDrop()
	}
	n := u.outNorm.ForwardSiLU(h)
	h.MustDrop()
	out := u.outConv.Forward(n)
	n.MustDrop()
	return out
}

// ControlledSkips is how many output blocks receive SG control on their skip:
// the blocks of the last (lowest-resolution) level, three in the paper.
func (u *UNet) ControlledSkips() int { return u.cfg.NumResBlocks + 1 }

// InputBlocks is the number of encoder blocks (12 in the paper).
func (u *UNet) InputBlocks() int { return len(u.enc.input) }
