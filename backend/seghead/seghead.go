// Package seghead is DiAD's learnt anomaly map for models without ImageNet
// weights: a small fully convolutional network (a U-Net of a few levels) that
// looks at an image and its DiAD reconstruction together and marks where they
// differ in a way normal images never do. It is trained from scratch on the
// model's own training images with synthetic defects painted on them
// (DRAEM's discriminative network, Zavrtanik et al. 2021, made small), so it
// needs no downloaded weights; the reconstruction stays DiAD's.
package seghead

import (
	"fmt"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/layers"
)

// Prefix names the head's parameters in a model's state dict.
const Prefix = "anomaly_head."

// Config is the head's shape. Channels empty means no head.
type Config struct {
	// Channels are the widths of the levels, finest first; each level after
	// the first halves the resolution.
	Channels []int64 `yaml:"channels,omitempty"`
	// NormGroups is the group norm's group count (divides every width).
	NormGroups int64 `yaml:"norm_groups,omitempty"`
}

// DemoConfig is the demo model's head: four levels, 0.2M parameters.
var DemoConfig = Config{Channels: []int64{16, 32, 48, 64}, NormGroups: 8}

// Enabled reports whether the config asks for a head.
func (c Config) Enabled() bool { return len(c.Channels) > 0 }

// Validate checks the widths and groups.
func (c Config) Validate() error {
	if !c.Enabled() {
		return nil
	}
	if c.NormGroups < 1 {
		return fmt.Errorf("seghead: norm_groups must be >= 1, got %d", c.NormGroups)
	}
	for _, ch := range c.Channels {
		if ch < 1 || ch%c.NormGroups != 0 {
			return fmt.Errorf("seghead: width %d is not a positive multiple of norm_groups %d", ch, c.NormGroups)
		}
	}
	return nil
}

// Multiple is what the image side must divide by (each level halves it).
func (c Config) Multiple() int { return 1 << max(len(c.Channels)-1, 0) }

// inputChannels: the image, the reconstruction and their absolute difference.
const inputChannels = 9

// block is two 3x3 convolutions, each followed by group norm and SiLU.
type block struct {
	c1, c2 *layers.Conv2d
	n1, n2 *layers.GroupNorm
}

func newBlock(p layers.Path, in, out, groups int64) block {
	return block{
		c1: layers.NewConv2d(p.Sub("conv1"), in, out, 3, layers.ConvOpts{Padding: 1}),
		n1: layers.NewGroupNorm(p.Sub("norm1"), groups, out, 1e-5),
		c2: layers.NewConv2d(p.Sub("conv2"), out, out, 3, layers.ConvOpts{Padding: 1}),
		n2: layers.NewGroupNorm(p.Sub("norm2"), groups, out, 1e-5),
	}
}

func (b block) forward(x *ts.Tensor) *ts.Tensor {
	h := b.c1.Forward(x)
	h2 := b.n1.ForwardSiLU(h)
	h.MustDrop()
	h = b.c2.Forward(h2)
	h2.MustDrop()
	out := b.n2.ForwardSiLU(h)
	h.MustDrop()
	return out
}

// Net is the head: an encoder of len(Channels) levels and a decoder that
// upsamples and joins each finer level's features, then one 1x1 convolution
// to a logit per pixel.
type Net struct {
	cfg  Config
	down []block
	up   []block
	out  *layers.Conv2d
}

// New creates the head's parameters under p (which should be Prefix).
func New(p layers.Path, c Config) (*Net, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if !c.Enabled() {
		return nil, fmt.Errorf("seghead: no channels")
	}
	n := &Net{cfg: c}
	in := int64(inputChannels)
	for i, ch := range c.Channels {
		n.down = append(n.down, newBlock(p.Subf("down%d", i), in, ch, c.NormGroups))
		in = ch
	}
	for i := len(c.Channels) - 2; i >= 0; i-- {
		n.up = append(n.up, newBlock(p.Subf("up%d", i), in+c.Channels[i], c.Channels[i], c.NormGroups))
		in = c.Channels[i]
	}
	n.out = layers.NewConv2d(p.Sub("out"), in, 1, 1, layers.ConvOpts{})
	return n, nil
}

// Config is the head's shape.
func (n *Net) Config() Config { return n.cfg }

// Input joins ImageNet-normalised images and reconstructions [B, 3, H, W]
// into the head's input [B, 9, H, W].
func Input(images, recons *ts.Tensor) *ts.Tensor {
	d := images.MustSub(recons, false).MustAbs(true)
	out := ts.MustCat([]*ts.Tensor{images, recons, d}, 1)
	d.MustDrop()
	return out
}

// Logits maps images and reconstructions [B, 3, H, W] (H and W multiples of
// Config.Multiple) to anomaly logits [B, 1, H, W].
func (n *Net) Logits(images, recons *ts.Tensor) *ts.Tensor {
	x := Input(images, recons)
	var skips []*ts.Tensor
	for i, b := range n.down {
		if i > 0 {
			p := x.MustAvgPool2d([]int64{2, 2}, []int64{2, 2}, []int64{0, 0}, false, true, nil, false)
			x.MustDrop()
			x = p
		}
		h := b.forward(x)
		x.MustDrop()
		x = h
		if i < len(n.down)-1 {
			skips = append(skips, x.MustShallowClone())
		}
	}
	for k, b := range n.up {
		skip := skips[len(skips)-1-k]
		s := skip.MustSize()
		up := x.MustUpsampleNearest2d([]int64{s[2], s[3]}, nil, nil, true)
		cat := ts.MustCat([]*ts.Tensor{up, skip}, 1)
		up.MustDrop()
		skip.MustDrop()
		x = b.forward(cat)
		cat.MustDrop()
	}
	out := n.out.Forward(x)
	x.MustDrop()
	return out
}

// Map is the anomaly probability map [B, 1, H, W] (sigmoid of the logits).
func (n *Net) Map(images, recons *ts.Tensor) *ts.Tensor {
	return n.Logits(images, recons).MustSigmoid(true)
}

// Loss is the training objective for logits and a 0/1 target mask, both
// [B, 1, H, W]: binary cross-entropy plus the soft Dice loss (the Dice term
// keeps small defects from drowning in the normal pixels).
func Loss(logits, target *ts.Tensor) *ts.Tensor {
	bce := logits.MustBinaryCrossEntropyWithLogits(target, layers.None, layers.None, 1, false)
	p := logits.MustSigmoid(false)
	inter := p.MustMul(target, false).MustSum(p.DType(), true)
	tsum := target.MustSum(target.DType(), false)
	total := p.MustSum(p.DType(), true).MustAdd(tsum, true)
	tsum.MustDrop()
	num := inter.MustMulScalar(ts.FloatScalar(2), true).MustAddScalar(ts.FloatScalar(1), true)
	den := total.MustAddScalar(ts.FloatScalar(1), true)
	dice := num.MustDiv(den, true).MustNeg(true).MustAddScalar(ts.FloatScalar(1), true)
	den.MustDrop()
	out := bce.MustAdd(dice, true)
	dice.MustDrop()
	return out
}
