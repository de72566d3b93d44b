// Package features provides the ImageNet CNN feature extractors that DiAD
// compares input and reconstruction with: ResNet-18/34/50/101 and Wide
// ResNet-50-2/101-2 (the paper's ablation backbones), returning the outputs of
// layer1..layer4. Parameter names are torchvision's, which timm's ResNets share,
// so weights load from either (.pth or .safetensors); without weights the
// network runs with its random initialisation, and says so.
package features

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/layers"
	"github.com/diad-project/diad/backend/torchrt"
)

// Arch describes a ResNet variant.
type Arch struct {
	Name       string
	Bottleneck bool
	Blocks     [4]int
	// WidthFactor multiplies the bottleneck width (2 for wide ResNets).
	WidthFactor int64
}

// Architectures by name (torchvision's model names).
var Architectures = map[string]Arch{
	"resnet18":         {Name: "resnet18", Blocks: [4]int{2, 2, 2, 2}, WidthFactor: 1},
	"resnet34":         {Name: "resnet34", Blocks: [4]int{3, 4, 6, 3}, WidthFactor: 1},
	"resnet50":         {Name: "resnet50", Bottleneck: true, Blocks: [4]int{3, 4, 6, 3}, WidthFactor: 1},
	"resnet101":        {Name: "resnet101", Bottleneck: true, Blocks: [4]int{3, 4, 23, 3}, WidthFactor: 1},
	"wide_resnet50_2":  {Name: "wide_resnet50_2", Bottleneck: true, Blocks: [4]int{3, 4, 6, 3}, WidthFactor: 2},
	"wide_resnet101_2": {Name: "wide_resnet101_2", Bottleneck: true, Blocks: [4]int{3, 4, 23, 3}, WidthFactor: 2},
}

// ArchNames lists the supported architectures.
func ArchNames() []string {
	var n []string
	for k := range Architectures {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Channels returns the channel count of layer i (1..4).
func (a Arch) Channels(layer int) int64 {
	c := int64(64) << (layer - 1)
	if a.Bottleneck {
		c *= 4
	}
	return c
}

// Config selects the extractor.
type Config struct {
	Arch string `yaml:"arch"`
	// Weights is a torchvision/timm state dict (.pth, .safetensors); empty
	// means random initialisation (stated by Extractor.Pretrained).
	Weights string `yaml:"weights"`
	// Layers are the feature layers to compare, 1-based (reference: 1, 2, 3).
	Layers []int `yaml:"layers"`
}

// ReferenceConfig is DiAD's choice: timm ResNet-50, layers 1-3.
var ReferenceConfig = Config{Arch: "resnet50", Layers: []int{1, 2, 3}}

const bnEps = 1e-5 // torchvision's BatchNorm2d default

// randomInitSeed seeds the random initialisation used when no weights are given.
const randomInitSeed = 20240101

type batchNorm struct{ w, b, mean, variance *ts.Tensor }

func newBatchNorm(p layers.Path, c int64) *batchNorm {
	bn := &batchNorm{
		w:        p.Param("weight", []int64{c}, layers.Ones),
		b:        p.Param("bias", []int64{c}, layers.Zeros),
		mean:     p.Buffer("running_mean", []int64{c}, layers.Zeros),
		variance: p.Buffer("running_var", []int64{c}, layers.Ones),
	}
	return bn
}

func (bn *batchNorm) forward(x *ts.Tensor) *ts.Tensor {
	return ts.MustBatchNorm(x, bn.w, bn.b, bn.mean, bn.variance, false, 0.1, bnEps, true)
}

// kaimingConv is torchvision's ResNet init: kaiming_normal(fan_out, relu),
// approximated by a uniform of the same variance.
func kaimingConv(p layers.Path, in, out, k, stride, pad int64) *layers.Conv2d {
	std := math.Sqrt(2.0 / float64(out*k*k))
	c := &layers.Conv2d{W: p.Param("weight", []int64{out, in, k, k}, layers.Uniform(std*math.Sqrt(3))), Stride: stride, Padding: pad}
	return c
}

type block struct {
	convs []*layers.Conv2d
	bns   []*batchNorm
	down  *layers.Conv2d
	dbn   *batchNorm
}

func (b *block) forward(x *ts.Tensor) *ts.Tensor {
	h := x.MustShallowClone()
	for i, c := range b.convs {
		y := c.Forward(h)
		h.MustDrop()
		z := b.bns[i].forward(y)
		y.MustDrop()
		if i < len(b.convs)-1 {
			z = z.MustRelu(true)
		}
		h = z
	}
	var id *ts.Tensor
	if b.down != nil {
		d := b.down.Forward(x)
		id = b.dbn.forward(d)
		d.MustDrop()
	} else {
		id = x.MustShallowClone()
	}
	out := h.MustAdd(id, true).MustRelu(true)
	id.MustDrop()
	return out
}

// Extractor is a ResNet truncated after its deepest requested layer.
type Extractor struct {
	cfg        Config
	arch       Arch
	store      *layers.Store
	conv1      *layers.Conv2d
	bn1        *batchNorm
	stages     [][]*block
	pretrained bool
}

// New builds the extractor on device and loads cfg.Weights if given. Only the
// stages up to the deepest requested layer are built.
func New(cfg Config, device gotch.Device) (e *Extractor, err error) {
	defer torchrt.Pin()()
	arch, ok := Architectures[cfg.Arch]
	if !ok {
		return nil, fmt.Errorf("features: unknown architecture %q (have %v)", cfg.Arch, ArchNames())
	}
	if len(cfg.Layers) == 0 {
		return nil, fmt.Errorf("features: no layers selected")
	}
	deepest := 0
	for _, l := range cfg.Layers {
		if l < 1 || l > 4 {
			return nil, fmt.Errorf("features: layer %d outside 1..4", l)
		}
		deepest = max(deepest, l)
	}
	defer torchrt.Recover(&err, "features")
	if cfg.Weights == "" {
		// Without weights, every extractor of an architecture is the same
		// random network, so that scores of different runs (and of the server
		// and the CLI) stay comparable.
		torchrt.ManualSeed(randomInitSeed)
	}
	store := layers.NewStore(device)
	e = build(store, arch, cfg, deepest)
	store.SetTrainable(func(string) bool { return false })
	if cfg.Weights != "" {
		if err := e.load(cfg.Weights); err != nil {
			store.Free()
			return nil, err
		}
		e.pretrained = true
	}
	return e, nil
}

func build(store *layers.Store, arch Arch, cfg Config, deepest int) *Extractor {
	root := store.Root()
	e := &Extractor{cfg: cfg, arch: arch, store: store}
	e.conv1 = kaimingConv(root.Sub("conv1"), 3, 64, 7, 2, 3)
	e.bn1 = newBatchNorm(root.Sub("bn1"), 64)
	in := int64(64)
	for s := 0; s < deepest; s++ {
		planes := int64(64) << s
		lp := root.Subf("layer%d", s+1)
		var stage []*block
		for i := 0; i < arch.Blocks[s]; i++ {
			stride := int64(1)
			if i == 0 && s > 0 {
				stride = 2
			}
			bp := lp.Subf("%d", i)
			b := &block{}
			out := planes
			if arch.Bottleneck {
				width := planes * arch.WidthFactor
				out = planes * 4
				b.convs = []*layers.Conv2d{
					kaimingConv(bp.Sub("conv1"), in, width, 1, 1, 0),
					kaimingConv(bp.Sub("conv2"), width, width, 3, stride, 1),
					kaimingConv(bp.Sub("conv3"), width, out, 1, 1, 0),
				}
				b.bns = []*batchNorm{newBatchNorm(bp.Sub("bn1"), width), newBatchNorm(bp.Sub("bn2"), width), newBatchNorm(bp.Sub("bn3"), out)}
			} else {
				b.convs = []*layers.Conv2d{
					kaimingConv(bp.Sub("conv1"), in, planes, 3, stride, 1),
					kaimingConv(bp.Sub("conv2"), planes, planes, 3, 1, 1),
				}
				b.bns = []*batchNorm{newBatchNorm(bp.Sub("bn1"), planes), newBatchNorm(bp.Sub("bn2"), planes)}
			}
			if stride != 1 || in != out {
				dp := bp.Sub("downsample")
				b.down = kaimingConv(dp.Sub("0"), in, out, 1, stride, 0)
				b.dbn = newBatchNorm(dp.Sub("1"), out)
			}
			in = out
			stage = append(stage, b)
		}
		e.stages = append(e.stages, stage)
	}
	return e
}

// Spec lists the parameter names and shapes of an architecture (all four
// layers) without allocating.
func Spec(arch string) (*layers.Store, error) {
	a, ok := Architectures[arch]
	if !ok {
		return nil, fmt.Errorf("features: unknown architecture %q", arch)
	}
	store := layers.NewSpecStore()
	build(store, a, Config{Arch: arch}, 4)
	return store, nil
}

// fileName maps torchvision/timm keys onto the extractor's: the classifier
// and BatchNorm step counters are not used; layers beyond the deepest
// requested one are skipped.
func (e *Extractor) fileName(name string) string {
	if strings.HasPrefix(name, "fc.") || strings.HasSuffix(name, ".num_batches_tracked") {
		return ""
	}
	for l := len(e.stages) + 1; l <= 4; l++ {
		if strings.HasPrefix(name, fmt.Sprintf("layer%d.", l)) {
			return ""
		}
	}
	return name
}

func (e *Extractor) load(path string) error {
	r, err := checkpoint.Open(path)
	if err != nil {
		return fmt.Errorf("features %s weights: %w", e.arch.Name, err)
	}
	defer r.Close()
	if _, err := checkpoint.LoadInto(e.store, r, checkpoint.LoadOptions{Rename: e.fileName}); err != nil {
		return fmt.Errorf("features %s weights %s: %w", e.arch.Name, path, err)
	}
	return nil
}

// Pretrained reports whether weights were loaded (false: random initialisation).
func (e *Extractor) Pretrained() bool { return e.pretrained }

// Config returns the extractor's configuration.
func (e *Extractor) Config() Config { return e.cfg }

// Store exposes the parameters (for saving test fixtures).
func (e *Extractor) Store() *layers.Store { return e.store }

// Free releases the parameters.
func (e *Extractor) Free() { e.store.Free() }

// Forward returns the requested layers' outputs for ImageNet-normalised
// images [B, 3, H, W], in the order of cfg.Layers. The caller frees them.
func (e *Extractor) Forward(x *ts.Tensor) []*ts.Tensor {
	defer torchrt.Pin()()
	var outs [5]*ts.Tensor
	torchrt.NoGrad(func() {
		c := e.conv1.Forward(x)
		h := e.bn1.forward(c).MustRelu(true)
		c.MustDrop()
		h2 := h.MustMaxPool2d([]int64{3, 3}, []int64{2, 2}, []int64{1, 1}, []int64{1, 1}, false, false)
		h.MustDrop()
		h = h2
		for s, stage := range e.stages {
			for _, b := range stage {
				next := b.forward(h)
				h.MustDrop()
				h = next
			}
			outs[s+1] = h.MustShallowClone()
		}
		h.MustDrop()
	})
	res := make([]*ts.Tensor, len(e.cfg.Layers))
	for i, l := range e.cfg.Layers {
		res[i] = outs[l].MustShallowClone()
	}
	for _, o := range outs {
		if o != nil {
			o.MustDrop()
		}
	}
	return res
}
