package scoring

import (
	"fmt"
	"sort"
	"strings"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/layers"
	"github.com/diad-project/diad/backend/torchrt"
)

// A Term is one way of comparing images with their reconstructions: it returns
// an unsmoothed distance map [B, 1, H, W] (larger = more different) for
// ImageNet-normalised batches [B, 3, H, W]. The caller frees the map.
type Term interface {
	Name() string
	Map(images, recons *ts.Tensor) *ts.Tensor
}

// GroupTerm is a term whose map can use each image's group, its category:
// a memory of normal patches compares an image with its own category's.
// groups is nil when no image's group is known.
type GroupTerm interface {
	Term
	MapGroups(images, recons *ts.Tensor, groups []string) *ts.Tensor
}

// FeatureTerm compares two images in a network's feature space: per layer
// 1 - cosine similarity over channels, upsampled (bilinear, align_corners) to
// the image size and summed over layers - the reference's map, for any
// feature network (the ImageNet ResNet, or the autoencoder's own encoder).
type FeatureTerm struct {
	Label   string
	Forward func(x *ts.Tensor) []*ts.Tensor
	// Layers is how many feature maps Forward returns.
	Layers int
}

// Name identifies the term.
func (f FeatureTerm) Name() string { return f.Label }

// Map is the summed per-layer cosine distance.
func (f FeatureTerm) Map(images, recons *ts.Tensor) *ts.Tensor {
	m, _ := f.mapLayers(images, recons, false)
	return m
}

func (f FeatureTerm) mapLayers(images, recons *ts.Tensor, perLayer bool) (*ts.Tensor, []*ts.Tensor) {
	s := images.MustSize()
	fa := f.Forward(images)
	fb := f.Forward(recons)
	defer dropAll(fa)
	defer dropAll(fb)
	return AnomalyMap(fa, fb, s[2], s[3], perLayer)
}

// imagenetMean and imagenetStd undo the input normalisation (the pixel terms
// compare images in [0, 1] RGB, where a colour difference means what it looks like).
var (
	imagenetMean = []float32{0.485, 0.456, 0.406}
	imagenetStd  = []float32{0.229, 0.224, 0.225}
)

// ToUnit maps ImageNet-normalised images [B, 3, H, W] back to [0, 1] RGB.
func ToUnit(x *ts.Tensor) *ts.Tensor {
	dev := x.MustDevice()
	std := ts.MustOfSlice(imagenetStd).MustView([]int64{1, 3, 1, 1}, true).MustTo(dev, true)
	mean := ts.MustOfSlice(imagenetMean).MustView([]int64{1, 3, 1, 1}, true).MustTo(dev, true)
	out := x.MustMul(std, false).MustAdd(mean, true)
	std.MustDrop()
	mean.MustDrop()
	return out
}

// MapTerm is a term computed by a function, such as a learnt head.
type MapTerm struct {
	Label string
	F     func(images, recons *ts.Tensor) *ts.Tensor
}

// Name identifies the term.
func (m MapTerm) Name() string { return m.Label }

// Map calls the function.
func (m MapTerm) Map(images, recons *ts.Tensor) *ts.Tensor { return m.F(images, recons) }

// GroupMapTerm is a GroupTerm made of a function of images, reconstructions
// and the images' groups.
type GroupMapTerm struct {
	Label string
	F     func(images, recons *ts.Tensor, groups []string) *ts.Tensor
}

// Name identifies the term.
func (m GroupMapTerm) Name() string { return m.Label }

// Map calls the function without groups.
func (m GroupMapTerm) Map(images, recons *ts.Tensor) *ts.Tensor { return m.F(images, recons, nil) }

// MapGroups calls the function.
func (m GroupMapTerm) MapGroups(images, recons *ts.Tensor, groups []string) *ts.Tensor {
	return m.F(images, recons, groups)
}

// PixelTerm is the mean absolute RGB difference over channels, in [0, 1] units.
type PixelTerm struct{}

// Name identifies the term.
func (PixelTerm) Name() string { return "pixel" }

// Map is |x - x_hat| averaged over the colour channels.
func (PixelTerm) Map(images, recons *ts.Tensor) *ts.Tensor {
	a, b := ToUnit(images), ToUnit(recons)
	d := a.MustSub(b, true).MustAbs(true)
	b.MustDrop()
	return d.MustMeanDim([]int64{1}, true, d.DType(), true)
}

// SSIMTerm is 1 - SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5,
// K1 0.01, K2 0.03, data range 1), averaged over the colour channels. It sees
// structure (texture, edges) that a plain colour difference misses.
type SSIMTerm struct{}

// Name identifies the term.
func (SSIMTerm) Name() string { return "ssim" }

// Map is the per-pixel SSIM distance.
func (SSIMTerm) Map(images, recons *ts.Tensor) *ts.Tensor {
	a, b := ToUnit(images), ToUnit(recons)
	s := SSIMMap(a, b)
	a.MustDrop()
	b.MustDrop()
	d := s.MustNeg(true).MustAddScalar(ts.FloatScalar(1), true)
	return d.MustMeanDim([]int64{1}, true, d.DType(), true)
}

// SSIM window and constants (Wang et al. 2004).
const (
	ssimWindow = 11
	ssimSigma  = 1.5
	ssimC1     = 0.01 * 0.01
	ssimC2     = 0.03 * 0.03
)

// SSIMMap returns the per-pixel, per-channel SSIM of two batches [B, C, H, W]
// with values in [0, 1], same shape (reflect-padded, so the map keeps the
// image size). It is differentiable (the autoencoder's objective uses it).
func SSIMMap(a, b *ts.Tensor) *ts.Tensor {
	s := a.MustSize()
	ch := s[1]
	k1 := GaussianKernel1D(ssimSigma, float64(ssimWindow/2)/ssimSigma)
	w := make([]float32, 0, ch*ssimWindow*ssimWindow)
	for c := int64(0); c < ch; c++ {
		for _, y := range k1 {
			for _, x := range k1 {
				w = append(w, float32(x*y))
			}
		}
	}
	win := ts.MustOfSlice(w).MustView([]int64{ch, 1, ssimWindow, ssimWindow}, true).MustTo(a.MustDevice(), true)
	defer win.MustDrop()
	r := int64(ssimWindow / 2)
	blur := func(x *ts.Tensor) *ts.Tensor {
		p := x.MustReflectionPad2d([]int64{r, r, r, r}, false)
		out := ts.MustConv2d(p, win, layers.None, []int64{1, 1}, []int64{0, 0}, []int64{1, 1}, ch)
		p.MustDrop()
		return out
	}
	sq := func(x, y *ts.Tensor) *ts.Tensor {
		p := x.MustMul(y, false)
		out := blur(p)
		p.MustDrop()
		return out
	}
	muA, muB := blur(a), blur(b)
	sAA, sBB, sAB := sq(a, a), sq(b, b), sq(a, b)
	muAA := muA.MustMul(muA, false)
	muBB := muB.MustMul(muB, false)
	muAB := muA.MustMul(muB, false)
	muA.MustDrop()
	muB.MustDrop()
	varA := sAA.MustSub(muAA, true)
	varB := sBB.MustSub(muBB, true)
	cov := sAB.MustSub(muAB, true)
	num1 := muAB.MustMulScalar(ts.FloatScalar(2), true).MustAddScalar(ts.FloatScalar(ssimC1), true)
	num2 := cov.MustMulScalar(ts.FloatScalar(2), true).MustAddScalar(ts.FloatScalar(ssimC2), true)
	den1 := muAA.MustAdd(muBB, true).MustAddScalar(ts.FloatScalar(ssimC1), true)
	muBB.MustDrop()
	den2 := varA.MustAdd(varB, true).MustAddScalar(ts.FloatScalar(ssimC2), true)
	varB.MustDrop()
	num := num1.MustMul(num2, true)
	num2.MustDrop()
	den := den1.MustMul(den2, true)
	den2.MustDrop()
	out := num.MustDiv(den, true)
	den.MustDrop()
	return out
}

// Kinds of scorer, by the terms they sum.
const (
	// KindResNet is the paper's map: ImageNet ResNet features (the default
	// whenever feature weights are given).
	KindResNet = "resnet"
	// KindAE compares the autoencoder encoder's features, learned on the
	// normal images.
	KindAE = "ae"
	// KindPixel and KindSSIM compare the images themselves.
	KindPixel = "pixel"
	KindSSIM  = "ssim"
	// KindSeg is the model's learnt anomaly head (package seghead): the map
	// for models without ImageNet weights that have one.
	KindSeg = "seg"
	// KindPatch is the model's memory of training patches (package
	// patchmemory): each location's distance to the nearest normal patch.
	KindPatch = "patch"
)

// ParseKind splits a scorer kind such as "ae+pixel" into its sorted, unique
// term names and checks them.
func ParseKind(kind string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, part := range strings.Split(kind, "+") {
		part = strings.TrimSpace(part)
		switch part {
		case KindResNet, KindAE, KindPixel, KindSSIM, KindSeg, KindPatch:
		default:
			return nil, fmt.Errorf("scoring: unknown term %q in scorer %q (want %s, %s, %s, %s, %s, %s joined by +)", part, kind, KindResNet, KindAE, KindPixel, KindSSIM, KindSeg, KindPatch)
		}
		if !seen[part] {
			seen[part] = true
			out = append(out, part)
		}
	}
	sort.Strings(out)
	return out, nil
}

// CanonicalKind is the kind written with its terms sorted ("pixel+ae" ->
// "ae+pixel"), so that runs and checkpoints compare by string.
func CanonicalKind(kind string) (string, error) {
	terms, err := ParseKind(kind)
	if err != nil {
		return "", err
	}
	return strings.Join(terms, "+"), nil
}

// sumTerms sums the terms' maps, each divided by its scale. With parts it
// also returns the parts: a feature term's per-layer maps, other terms' maps.
func sumTerms(terms []Term, scales []float64, images, recons *ts.Tensor, groups []string, parts bool) (*ts.Tensor, []*ts.Tensor) {
	var sum *ts.Tensor
	var each []*ts.Tensor
	torchrt.NoGrad(func() {
		for i, t := range terms {
			var m *ts.Tensor
			var layerMaps []*ts.Tensor
			gt, grouped := t.(GroupTerm)
			if ft, ok := t.(FeatureTerm); ok {
				m, layerMaps = ft.mapLayers(images, recons, parts)
			} else {
				if grouped {
					m = gt.MapGroups(images, recons, groups)
				} else {
					m = t.Map(images, recons)
				}
				if parts {
					layerMaps = []*ts.Tensor{m.MustShallowClone()}
				}
			}
			if scales[i] != 1 {
				m = m.MustDivScalar(ts.FloatScalar(scales[i]), true)
				for k, l := range layerMaps {
					layerMaps[k] = l.MustDivScalar(ts.FloatScalar(scales[i]), true)
				}
			}
			each = append(each, layerMaps...)
			if sum == nil {
				sum = m
			} else {
				sum = sum.MustAdd(m, true)
				m.MustDrop()
			}
		}
	})
	return sum, each
}
