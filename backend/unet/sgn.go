package unet

import (
	"fmt"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/torchrt"

	"github.com/diad-project/diad/backend/layers"
	"github.com/diad-project/diad/backend/recompute"
)

// SGConfig is what the Semantic-Guided network adds to the UNet architecture.
type SGConfig struct {
	// HintChannels are the widths of the hint block C's four stages; each stage
	// after the first halves the resolution (3 stride-2 convs: image/8 = latent;
	// see HintDownsampling).
	// The reference: 16, 32, 96, 256.
	HintChannels []int64 `yaml:"hint_channels"`
	// ImageChannels is the hint input (the ImageNet-normalised RGB image).
	ImageChannels int64 `yaml:"image_channels"`
	// InstanceNormEps is the SFF block's InstanceNorm2d epsilon.
	InstanceNormEps float64 `yaml:"instance_norm_eps"`
	// HintDownsampling is how much the hint block shrinks the image to the
	// latent grid: the autoencoder's factor (0 means 8, the KL-f8 reference;
	// 4 for a KL-f4 autoencoder, whose last hint stage keeps the resolution).
	HintDownsampling int64 `yaml:"hint_downsampling,omitempty"`
}

// hintStrides are the strides of the three stage transitions of the hint block.
func (sg SGConfig) hintStrides() ([3]int64, error) {
	switch sg.HintDownsampling {
	case 0, 8:
		return [3]int64{2, 2, 2}, nil
	case 4:
		return [3]int64{2, 2, 1}, nil
	case 2:
		return [3]int64{2, 1, 1}, nil
	}
	return [3]int64{}, fmt.Errorf("unet: hint downsampling %d not supported (want 2, 4 or 8)", sg.HintDownsampling)
}

// Downsampling is the hint block's resolution factor (8 when unset).
func (sg SGConfig) Downsampling() int64 {
	if sg.HintDownsampling == 0 {
		return 8
	}
	return sg.HintDownsampling
}

// SemanticGuided is the SG network: its own time embedding, copies of the UNet's
// input blocks and middle block, the hint block on the image, one zero 1x1 conv
// per encoder output and one after the middle, and the SFF block that fuses the
// outputs of the second-to-last level into those of the last level.
type SemanticGuided struct {
	cfg       Config
	sg        SGConfig
	enc       *encoder
	hint      []*layers.Conv2d
	zeroConvs []*layers.Conv2d
	midOut    *layers.Conv2d
	// sff[i][j] maps source output sources[i] onto target output targets[j].
	sff              [][]*layers.Conv2d
	sources, targets []int
	hooks            hooks
	hintParams       trainable
}

// SetTape makes Forward run its blocks (and the hint block) on tp, as
// UNet.SetTape.
func (s *SemanticGuided) SetTape(tp *recompute.Tape) { s.hooks.tape = tp }

// SetBlockTimer makes Forward report each block's (and the hint block's)
// time to t (nil: off).
func (s *SemanticGuided) SetBlockTimer(t BlockTimer) { s.hooks.timer = t }

// hintForward is the hint block: convolutions at the image's resolution
// (the largest activations of the network) down to the latent grid.
func (s *SemanticGuided) hintForward(image *ts.Tensor) *ts.Tensor {
	hint := image.MustShallowClone()
	for i, cv := range s.hint {
		next := cv.Forward(hint)
		hint.MustDrop()
		if i < len(s.hint)-1 {
			next = next.MustSilu(true)
		}
		hint = next
	}
	return hint
}

// NewSemanticGuided creates the SG network's parameters under p (the reference
// prefix is "control_model.").
func NewSemanticGuided(p layers.Path, c Config, sg SGConfig) (*SemanticGuided, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if len(sg.HintChannels) != 4 {
		return nil, fmt.Errorf("unet: hint block needs 4 stage widths, got %v", sg.HintChannels)
	}
	strides, err := sg.hintStrides()
	if err != nil {
		return nil, err
	}
	s := &SemanticGuided{cfg: c, sg: sg, enc: newEncoder(p, c)}
	// Hint block: conv pairs per stage, SiLU between, zero-initialised last conv.
	// Sequential indices 0,2,4,...,14 (odd ones are SiLU).
	hp := p.Sub("input_hint_block")
	s.hintParams = trainableAt(hp)
	hc := sg.HintChannels
	type conv struct {
		in, out, stride int64
	}
	convs := []conv{
		{sg.ImageChannels, hc[0], 1}, {hc[0], hc[0], 1},
		{hc[0], hc[1], strides[0]}, {hc[1], hc[1], 1},
		{hc[1], hc[2], strides[1]}, {hc[2], hc[2], 1},
		{hc[2], hc[3], strides[2]},
	}
	for i, cv := range convs {
		s.hint = append(s.hint, layers.NewConv2d(hp.Subf("%d", 2*i), cv.in, cv.out, 3, layers.ConvOpts{Stride: cv.stride, Padding: 1}))
	}
	s.hint = append(s.hint, layers.NewConv2d(hp.Subf("%d", 2*len(convs)), hc[3], c.ModelChannels, 3, layers.ConvOpts{Padding: 1, ZeroInit: true}))

	zp := p.Sub("zero_convs")
	for i, ch := range s.enc.chans {
		s.zeroConvs = append(s.zeroConvs, layers.NewConv2d(zp.Subf("%d", i).Sub("0"), ch, ch, 1, layers.ConvOpts{ZeroInit: true}))
	}
	last := s.enc.chans[len(s.enc.chans)-1]
	s.midOut = layers.NewConv2d(p.Sub("middle_block_out").Sub("0"), last, last, 1, layers.ConvOpts{ZeroInit: true})

	// SFF: the last two levels' blocks (downsample into the level + its ResBlocks).
	group := c.NumResBlocks + 1
	n := len(s.enc.chans)
	s.targets = seq(n-group, n)
	s.sources = seq(n-2*group, n-group)
	for i, src := range s.sources {
		var row []*layers.Conv2d
		for j, dst := range s.targets {
			name := fmt.Sprintf("down%d%d", i+1, j+1)
			row = append(row, layers.NewConv2d(p.Sub(name).Sub("0"), s.enc.chans[src], s.enc.chans[dst], 3,
				layers.ConvOpts{Stride: 2, Padding: 1, NoBias: true, ZeroInit: true}))
		}
		s.sff = append(s.sff, row)
	}
	return s, nil
}

func seq(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// Forward computes the control tensors for zt at t, guided by the normalised
// image. It returns len(input blocks)+1 tensors (the middle last); the caller
// frees them. Outputs that the UNet does not use (with only_mid_control, all
// but the middle and the last level) are still computed and returned, as in the
// reference; their cost is the encoder that feeds the used ones anyway.
func (s *SemanticGuided) Forward(zt, t, context, image *ts.Tensor) []*ts.Tensor {
	emb := s.enc.time.forwardSiLU(t, s.cfg.ModelChannels)
	defer emb.MustDrop()
	hint := s.hooks.run(s.hintParams, func(in []*ts.Tensor) *ts.Tensor { return s.hintForward(in[0]) }, image)
	outs := make([]*ts.Tensor, 0, len(s.enc.input)+1)
	h := zt.MustShallowClone()
	for i, b := range s.enc.input {
		next := b.run(s.hooks, h, emb, context)
		h.MustDrop()
		if i == 0 {
			next = next.MustAdd(hint, true)
			hint.MustDrop()
		}
		h = next
		outs = append(outs, s.zeroConvs[i].Forward(h))
	}
	// SFF: out[t_j] = SiLU(out[t_j] + sum_i D_ij(out[s_i])).
	fused := make([]*ts.Tensor, len(s.targets))
	for j, dst := range s.targets {
		acc := outs[dst].MustShallowClone()
		for i, src := range s.sources {
			d := s.sff[i][j].Forward(outs[src])
			nd := layers.InstanceNorm(d, s.sg.InstanceNormEps)
			d.MustDrop()
			nd = nd.MustSilu(true)
			acc = acc.MustAdd(nd, true)
			nd.MustDrop()
		}
		acc = acc.MustSilu(true)
		fused[j] = acc
	}
	for j, dst := range s.targets {
		outs[dst].MustDrop()
		outs[dst] = fused[j]
	}
	mid := s.enc.forwardMiddle(s.hooks, h, emb, context)
	h.MustDrop()
	outs = append(outs, s.midOut.Forward(mid))
	mid.MustDrop()
	return outs
}

// CopyEncoderFrom initialises the SG network's time embedding, input blocks and
// middle block from the UNet's (the reference copies SD v1.5's weights).
func (s *SemanticGuided) CopyEncoderFrom(sgPrefix, unetPrefix string, store *layers.Store) error {
	n := 0
	for _, prm := range store.Params() {
		name, ok := cutPrefix(prm.Name, sgPrefix)
		if !ok || !(hasPrefix(name, "time_embed.") || hasPrefix(name, "input_blocks.") || hasPrefix(name, "middle_block.")) {
			continue
		}
		src := store.Get(unetPrefix + name)
		if src == nil {
			return fmt.Errorf("unet: copy SG encoder: %s has no UNet counterpart %s", prm.Name, unetPrefix+name)
		}
		if prm.Tensor != nil {
			torchrt.NoGrad(func() { prm.Tensor.Copy_(src.Tensor) })
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("unet: copy SG encoder: no parameters under %q", sgPrefix)
	}
	return nil
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

func cutPrefix(s, p string) (string, bool) {
	if hasPrefix(s, p) {
		return s[len(p):], true
	}
	return s, false
}
