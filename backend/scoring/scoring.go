// Package scoring turns an image and its DiAD reconstruction into an anomaly
// map and an image score, exactly as the reference does: per chosen CNN layer
// 1 - cosine similarity over channels, bilinear upsampling (align_corners) to
// the image size, the sum over layers, a Gaussian filter (sigma 5, scipy's
// "reflect" border, kernel truncated at 4 sigma); the image score is the
// maximum after eight successive 8x8 stride-1 average poolings. Everything is
// batched and runs on the model's device.
package scoring

import (
	"fmt"
	"math"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/features"
	"github.com/diad-project/diad/backend/layers"
	"github.com/diad-project/diad/backend/torchrt"
)

// Config is the map and score post-processing.
type Config struct {
	// Sigma and Truncate define the Gaussian filter (scipy's gaussian_filter).
	Sigma    float64 `yaml:"sigma"`
	Truncate float64 `yaml:"truncate"`
	// PoolKernel and PoolTimes define the image score's repeated average pooling.
	PoolKernel int64 `yaml:"pool_kernel"`
	PoolTimes  int   `yaml:"pool_times"`
}

// ReferenceConfig is the reference's post-processing.
var ReferenceConfig = Config{Sigma: 5, Truncate: 4, PoolKernel: 8, PoolTimes: 8}

// GaussianKernel1D is scipy.ndimage's kernel: exp(-x^2 / (2 sigma^2)) for
// |x| <= radius = int(truncate*sigma + 0.5), normalised to sum 1.
func GaussianKernel1D(sigma, truncate float64) []float64 {
	radius := int(truncate*sigma + 0.5)
	k := make([]float64, 2*radius+1)
	sum := 0.0
	for i := range k {
		x := float64(i - radius)
		k[i] = math.Exp(-0.5 * x * x / (sigma * sigma))
		sum += k[i]
	}
	for i := range k {
		k[i] /= sum
	}
	return k
}

// ReflectIndex maps an out-of-range index onto [0, n) the way scipy's
// "reflect" mode does (d c b a | a b c d | d c b a): the edge is repeated.
func ReflectIndex(i, n int) int {
	if n == 1 {
		return 0
	}
	period := 2 * n
	i %= period
	if i < 0 {
		i += period
	}
	if i >= n {
		i = period - 1 - i
	}
	return i
}

// Scorer compares images with reconstructions: the sum of its terms' maps
// (each divided by its scale), Gaussian-smoothed, and the pooled-max image score.
type Scorer struct {
	cfg    Config
	kind   string
	ext    *features.Extractor
	terms  []Term
	scales []float64
	kernel []float64
}

// New makes the reference scorer over an ImageNet feature extractor (which the
// caller keeps and frees): one feature term, exactly the paper's map.
func New(cfg Config, ext *features.Extractor) (*Scorer, error) {
	s, err := NewTerms(cfg, KindResNet, []Term{FeatureTerm{Label: KindResNet, Forward: ext.Forward, Layers: len(ext.Config().Layers)}}, nil)
	if err != nil {
		return nil, err
	}
	s.ext = ext
	return s, nil
}

// NewTerms makes a scorer that sums terms, each divided by its scale (nil
// scales: all 1). kind names the combination (see ParseKind) for run metadata.
func NewTerms(cfg Config, kind string, terms []Term, scales []float64) (*Scorer, error) {
	if !(cfg.Sigma > 0) || !(cfg.Truncate > 0) || cfg.PoolKernel < 1 || cfg.PoolTimes < 0 {
		return nil, fmt.Errorf("scoring: bad config %+v", cfg)
	}
	if len(terms) == 0 {
		return nil, fmt.Errorf("scoring: no terms")
	}
	if scales == nil {
		scales = make([]float64, len(terms))
		for i := range scales {
			scales[i] = 1
		}
	}
	if len(scales) != len(terms) {
		return nil, fmt.Errorf("scoring: %d scales for %d terms", len(scales), len(terms))
	}
	for _, v := range scales {
		if !(v > 0) {
			return nil, fmt.Errorf("scoring: term scales must be positive, got %v", scales)
		}
	}
	return &Scorer{cfg: cfg, kind: kind, terms: terms, scales: scales, kernel: GaussianKernel1D(cfg.Sigma, cfg.Truncate)}, nil
}

// Extractor is the ImageNet feature extractor in use (nil for other kinds).
func (s *Scorer) Extractor() *features.Extractor { return s.ext }

// Kind names the scorer's terms, e.g. "resnet" or "ae+ssim".
func (s *Scorer) Kind() string { return s.kind }

// Terms are the scorer's terms, in order.
func (s *Scorer) Terms() []Term { return s.terms }

// Result is one batch's scoring.
type Result struct {
	// Map is the smoothed anomaly map [B, 1, H, W].
	Map *ts.Tensor
	// LayerMaps are the unsmoothed parts of the map [B, 1, H, W], each
	// divided by its term's scale (only when requested): a feature term's
	// per-layer maps, other terms' maps, in the scorer's term order.
	LayerMaps []*ts.Tensor
	// Scores are the image scores.
	Scores []float64
}

// Free releases the result's tensors.
func (r Result) Free() {
	r.Map.MustDrop()
	for _, l := range r.LayerMaps {
		l.MustDrop()
	}
}

// Score computes anomaly maps and image scores for ImageNet-normalised images
// and their reconstructions, both [B, 3, H, W], of unknown categories.
func (s *Scorer) Score(images, recons *ts.Tensor, parts bool) (res Result, err error) {
	return s.ScoreGroups(images, recons, nil, parts)
}

// ScoreGroups is Score for images whose categories are known (groups, one
// per image; nil or "" where not known): terms that can use them do
// (GroupTerm).
func (s *Scorer) ScoreGroups(images, recons *ts.Tensor, groups []string, parts bool) (res Result, err error) {
	if groups != nil && int64(len(groups)) != images.MustSize()[0] {
		return Result{}, fmt.Errorf("scoring: %d groups for %d images", len(groups), images.MustSize()[0])
	}
	err = torchrt.Do(func() error {
		res, err = s.score(images, recons, groups, parts)
		return err
	})
	if err != nil {
		return Result{}, fmt.Errorf("scoring: %w", err)
	}
	return res, nil
}

func (s *Scorer) score(images, recons *ts.Tensor, groups []string, parts bool) (res Result, err error) {
	si, sr := images.MustSize(), recons.MustSize()
	if len(si) != 4 || fmt.Sprint(si) != fmt.Sprint(sr) {
		return Result{}, fmt.Errorf("scoring: images %v and reconstructions %v must be equal [B, 3, H, W]", si, sr)
	}
	raw, each := sumTerms(s.terms, s.scales, images, recons, groups, parts)
	torchrt.NoGrad(func() {
		res.Map = GaussianBlur(raw, s.kernel)
		raw.MustDrop()
		res.LayerMaps = each
		res.Scores = PooledMax(res.Map, s.cfg.PoolKernel, s.cfg.PoolTimes)
	})
	return res, nil
}

func dropAll(ts []*ts.Tensor) {
	for _, t := range ts {
		t.MustDrop()
	}
}

// AnomalyMap sums, over layers, 1 - cosine similarity between the two feature
// maps (over channels), each bilinearly upsampled (align_corners) to h x w.
// It returns [B, 1, h, w], and the per-layer maps when asked.
func AnomalyMap(fa, fb []*ts.Tensor, h, w int64, perLayer bool) (*ts.Tensor, []*ts.Tensor) {
	var sum *ts.Tensor
	var layers []*ts.Tensor
	for i := range fa {
		cos := ts.MustCosineSimilarity(fa[i], fb[i], 1, 1e-8)
		d := cos.MustNeg(true).MustAddScalar(ts.FloatScalar(1), true).MustUnsqueeze(1, true)
		up := d.MustUpsampleBilinear2d([]int64{h, w}, true, nil, nil, true)
		if perLayer {
			layers = append(layers, up.MustShallowClone())
		}
		if sum == nil {
			sum = up
		} else {
			sum = sum.MustAdd(up, true)
			up.MustDrop()
		}
	}
	return sum, layers
}

// reflectIndices is the gather index that pads n positions by r on each side
// in scipy's "reflect" mode.
func reflectIndices(n, r int, dev gotch.Device) *ts.Tensor {
	idx := make([]int64, n+2*r)
	for i := range idx {
		idx[i] = int64(ReflectIndex(i-r, n))
	}
	return ts.MustOfSlice(idx).MustTo(dev, true)
}

// GaussianBlur filters maps [B, 1, H, W] with the separable kernel k along
// rows then columns, with scipy's "reflect" border.
func GaussianBlur(m *ts.Tensor, k []float64) *ts.Tensor {
	s := m.MustSize()
	dev := m.MustDevice()
	r := len(k) / 2
	kf := make([]float32, len(k))
	for i, v := range k {
		kf[i] = float32(v)
	}
	kw := ts.MustOfSlice(kf).MustTo(dev, true)
	defer kw.MustDrop()
	out := m.MustShallowClone()
	for _, dim := range []int64{3, 2} {
		idx := reflectIndices(int(s[dim]), r, dev)
		padded := out.MustIndexSelect(dim, idx, true)
		idx.MustDrop()
		shape := []int64{1, 1, 1, int64(len(k))}
		if dim == 2 {
			shape = []int64{1, 1, int64(len(k)), 1}
		}
		w := kw.MustView(shape, false)
		out = ts.MustConv2d(padded, w, layers.None, []int64{1, 1}, []int64{0, 0}, []int64{1, 1}, 1)
		padded.MustDrop()
		w.MustDrop()
	}
	return out
}

// PooledMax applies times successive k x k stride-1 average poolings to maps
// [B, 1, H, W] and returns each map's maximum.
func PooledMax(m *ts.Tensor, k int64, times int) []float64 {
	h := m.MustShallowClone()
	for i := 0; i < times; i++ {
		h = h.MustAvgPool2d([]int64{k, k}, []int64{1, 1}, []int64{0, 0}, false, true, nil, true)
	}
	b := h.MustSize()[0]
	flat := h.MustView([]int64{b, -1}, true)
	mx := flat.MustAmax([]int64{1}, false, true)
	defer mx.MustDrop()
	return torchrt.Float64s(mx)
}

// ForImageSize scales the reference post-processing, defined for 256x256
// images, to another image size: the Gaussian's sigma and the pooling kernel
// shrink with the image so that they cover the same fraction of it (at 64x64,
// eight 8x8 poolings would average 57 of 64 pixels and wash out any defect).
func (c Config) ForImageSize(size int) Config {
	f := float64(size) / 256
	out := c
	out.Sigma = c.Sigma * f
	out.PoolKernel = max(1, int64(math.Round(float64(c.PoolKernel)*f)))
	return out
}
