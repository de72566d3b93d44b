// Package calibrate chooses, after training, what a model's loss cannot teach
// it: the noise level its reconstructions start from and the scales of its
// anomaly map's terms. It measures on held-out normal training images and on
// copies of them with synthetic defects (patches cut from other images and
// pasted, DRAEM/CutPaste-style, and regions with shifted colour) - generic
// corruptions, never the test set and never the test defects.
package calibrate

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/features"
	"github.com/diad-project/diad/backend/metrics"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/scoring"
	"github.com/diad-project/diad/backend/torchrt"
)

// AllTerms are the image terms every calibration measures.
const AllTerms = scoring.KindAE + "+" + scoring.KindPixel + "+" + scoring.KindSSIM

// Config is a calibration.
type Config struct {
	// StartTCandidates are the start levels to try (empty: keep the model's).
	StartTCandidates []int
	// Scorer is the scorer kind to calibrate (see scoring.ParseKind).
	Scorer string
	// ScorerCandidates, when set, are the kinds to choose among (with the
	// start level, by the same held-out measure); Scorer is then ignored.
	ScorerCandidates []string
	Seed             uint64
	BatchSize        int
}

// Trial is one start level's and scorer's outcome.
type Trial struct {
	StartT     int                `json:"start_t"`
	Scorer     string             `json:"scorer"`
	ImageAUROC float64            `json:"image_auroc"`
	PixelAUROC float64            `json:"pixel_auroc"`
	Scales     map[string]float64 `json:"scales"`
}

// Result is the chosen setting and every trial.
type Result struct {
	StartT int
	Scorer model.ScorerConfig
	Trials []Trial
}

// Image is one held-out image: ImageNet-normalised, 3*S*S, channel-major.
type Image = []float32

// scorerKinds are the candidate scorers, canonicalised, and the kind whose
// terms are measured: every image term and every candidate's, so that the
// model carries scales for any combination of them
// (backend/model/demo/README.md compares them).
func (cfg Config) scorerKinds() (kinds []string, measured string, err error) {
	kinds = append([]string(nil), cfg.ScorerCandidates...)
	if len(kinds) == 0 {
		kinds = []string{cfg.Scorer}
	}
	measured = AllTerms
	for i, k := range kinds {
		if kinds[i], err = scoring.CanonicalKind(k); err != nil {
			return nil, "", err
		}
		if measured, err = scoring.CanonicalKind(measured + "+" + kinds[i]); err != nil {
			return nil, "", err
		}
	}
	return kinds, measured, nil
}

// Run tries each start level (and each candidate scorer) on the held-out
// images and their corrupted copies, and picks the pair with the best mean of
// image and pixel AUROC (the first on a tie: lower level, earlier scorer). Term scales are the mean of each term's map over the
// clean images at that level, so every term contributes about 1 on normal
// content. groups are the images' categories (nil: unknown), which a patch
// memory compares each image with, as at test time. The model is not
// changed; the caller applies the result.
func Run(ctx context.Context, m *model.DiAD, images []Image, groups []string, cfg Config) (Result, error) {
	if len(images) < 2 {
		return Result{}, fmt.Errorf("calibrate: need at least 2 held-out images, have %d", len(images))
	}
	if groups != nil && len(groups) != len(images) {
		return Result{}, fmt.Errorf("calibrate: %d groups for %d images", len(groups), len(images))
	}
	kinds, measured, err := cfg.scorerKinds()
	if err != nil {
		return Result{}, err
	}
	size := m.Config.ImageSize
	corrupted, masks := Corrupt(images, size, cfg.Seed)
	candidates := cfg.StartTCandidates
	if len(candidates) == 0 {
		candidates = []int{m.Config.Sampler.StartT}
	}
	// Unit scales while measuring: the parts come back per term.
	saved := m.Config.Scorer
	m.Config.Scorer = model.ScorerConfig{}
	defer func() { m.Config.Scorer = saved }()
	sc, ext, err := evaluate.NewScorer(m, measured, features.ReferenceConfig, scoring.Config{})
	if err != nil {
		return Result{}, err
	}
	if ext != nil {
		defer ext.Free()
	}
	terms, err := scoring.ParseKind(measured)
	if err != nil {
		return Result{}, err
	}
	blur := scoring.ReferenceConfig.ForImageSize(size)
	var res Result
	best := -1.0
	for _, t0 := range candidates {
		sampler := m.Config.Sampler
		sampler.StartT = t0
		sampler.Timesteps = nil
		clean, err := termMaps(ctx, m, sc, images, groups, size, sampler, cfg)
		if err != nil {
			return Result{}, err
		}
		bad, err := termMaps(ctx, m, sc, corrupted, groups, size, sampler, cfg)
		if err != nil {
			return Result{}, err
		}
		scales := map[string]float64{}
		for k, name := range terms {
			scales[name] = math.Max(meanOf(clean[k]), 1e-6)
		}
		for _, kind := range kinds {
			chosen, err := scoring.ParseKind(kind)
			if err != nil {
				return Result{}, err
			}
			tr, err := trial(clean, bad, masks, terms, chosen, scales, size, blur)
			if err != nil {
				return Result{}, err
			}
			tr.StartT, tr.Scorer, tr.Scales = t0, kind, scales
			res.Trials = append(res.Trials, tr)
			if v := (tr.ImageAUROC + tr.PixelAUROC) / 2; v > best+1e-9 {
				best = v
				res.StartT = t0
				res.Scorer = model.ScorerConfig{Kind: kind, Scales: scales}
			}
		}
	}
	return res, nil
}

// trial measures one combination of terms on the clean and corrupted maps.
func trial(clean, bad [][][]float32, masks [][]bool, terms, chosen []string, scales map[string]float64, size int, blur scoring.Config) (Trial, error) {
	combine := func(parts [][][]float32) ([][]float32, []float32, error) {
		return combineMaps(parts, terms, chosen, scales, size, blur)
	}
	cMaps, cScores, err := combine(clean)
	if err != nil {
		return Trial{}, err
	}
	bMaps, bScores, err := combine(bad)
	if err != nil {
		return Trial{}, err
	}
	var scores []float32
	var labels []bool
	scores = append(scores, cScores...)
	scores = append(scores, bScores...)
	for range cScores {
		labels = append(labels, false)
	}
	for range bScores {
		labels = append(labels, true)
	}
	img, err := metrics.BinaryMetrics(scores, labels)
	if err != nil {
		return Trial{}, fmt.Errorf("calibrate: image AUROC: %w", err)
	}
	var pm []metrics.Map
	for _, mp := range cMaps {
		pm = append(pm, metrics.Map{Width: size, Height: size, Scores: mp, Mask: make([]bool, size*size)})
	}
	for i, mp := range bMaps {
		pm = append(pm, metrics.Map{Width: size, Height: size, Scores: mp, Mask: masks[i]})
	}
	pix, err := metrics.PixelMetrics(pm)
	if err != nil {
		return Trial{}, fmt.Errorf("calibrate: pixel AUROC: %w", err)
	}
	return Trial{ImageAUROC: img.AUROC, PixelAUROC: pix.AUROC}, nil
}

func meanOf(maps [][]float32) float64 {
	var s float64
	var n int
	for _, m := range maps {
		for _, v := range m {
			s += float64(v)
		}
		n += len(m)
	}
	return s / float64(max(n, 1))
}

// termMaps reconstructs images in batches and returns, per term, each image's
// unsmoothed map.
func termMaps(ctx context.Context, m *model.DiAD, sc *scoring.Scorer, images []Image, groups []string, size int, sampler diffusion.SamplerConfig, cfg Config) ([][][]float32, error) {
	bs := max(cfg.BatchSize, 1)
	out := make([][][]float32, 0)
	for lo := 0; lo < len(images); lo += bs {
		hi := min(lo+bs, len(images))
		var flat []float32
		for _, im := range images[lo:hi] {
			flat = append(flat, im...)
		}
		unlock := torchrt.LockCompute()
		x := torchrt.ImageBatch(flat, hi-lo, size, m.Device())
		rec, err := m.Reconstruct(ctx, x, sampler, diffusion.NewNoise(cfg.Seed+uint64(lo)), nil)
		if err != nil {
			x.MustDrop()
			unlock()
			return nil, err
		}
		var g []string
		if groups != nil {
			g = groups[lo:hi]
		}
		r, err := sc.ScoreGroups(x, rec.Image, g, true)
		rec.Free()
		x.MustDrop()
		if err != nil {
			unlock()
			return nil, err
		}
		parts := termParts(sc, r.LayerMaps)
		r.Free()
		unlock()
		if len(out) == 0 {
			out = make([][][]float32, len(parts))
		}
		hw := size * size
		for k, p := range parts {
			for i := 0; i < hi-lo; i++ {
				out[k] = append(out[k], p[i*hw:(i+1)*hw])
			}
		}
	}
	return out, nil
}

// termParts folds a result's parts (feature terms give one per layer) back
// into one flat map per term.
func termParts(sc *scoring.Scorer, parts []*ts.Tensor) [][]float32 {
	var out [][]float32
	k := 0
	for _, t := range sc.Terms() {
		n := 1
		if ft, ok := t.(scoring.FeatureTerm); ok {
			n = ft.Layers
		}
		var sum []float32
		for j := 0; j < n; j++ {
			v := torchrt.Float32s(parts[k+j])
			if sum == nil {
				sum = v
			} else {
				for i := range sum {
					sum[i] += v[i]
				}
			}
		}
		k += n
		out = append(out, sum)
	}
	return out
}

// combineMaps sums the scaled maps of the chosen terms and smooths and pools
// them like the scorer does.
func combineMaps(parts [][][]float32, terms, chosen []string, scales map[string]float64, size int, cfg scoring.Config) ([][]float32, []float32, error) {
	n := len(parts[0])
	flat := make([]float32, n*size*size)
	use := map[string]bool{}
	for _, c := range chosen {
		use[c] = true
	}
	for k, name := range terms {
		if !use[name] {
			continue
		}
		s := float32(1 / scales[name])
		for i, mp := range parts[k] {
			off := i * size * size
			for j, v := range mp {
				flat[off+j] += v * s
			}
		}
	}
	var maps [][]float32
	var scores []float32
	var err error
	err = torchrt.Do(func() error {
		t := ts.MustOfSlice(flat).MustView([]int64{int64(n), 1, int64(size), int64(size)}, true)
		sm := scoring.GaussianBlur(t, scoring.GaussianKernel1D(cfg.Sigma, cfg.Truncate))
		t.MustDrop()
		sc := scoring.PooledMax(sm, cfg.PoolKernel, cfg.PoolTimes)
		vals := torchrt.Float32s(sm)
		sm.MustDrop()
		for i := 0; i < n; i++ {
			maps = append(maps, vals[i*size*size:(i+1)*size*size])
			scores = append(scores, float32(sc[i]))
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("calibrate: %w", err)
	}
	return maps, scores, nil
}

// Corrupt returns a copy of each image with one synthetic defect and its mask.
// Four generic families take turns, so that the held-out measure rewards a
// start level that removes small and thin defects as well as large ones
// (with only large, strong ones every level finds them and the lowest wins,
// backend/model/demo/README.md):
//   - a rectangle cut from another image and pasted (CutPaste);
//   - an ellipse whose colour is scaled and shifted a little per channel;
//   - a scratch: a thin curve, 1-3 pixels wide, darker or lighter;
//   - a rectangle of the same image moved elsewhere in it.
//
// Rectangles and ellipses are 8-25% of the side in each direction.
func Corrupt(images []Image, size int, seed uint64) ([]Image, [][]bool) {
	r := rand.New(rand.NewPCG(seed, 0xc0441))
	out := make([]Image, len(images))
	masks := make([][]bool, len(images))
	hw := size * size
	side := func() int { return max(1, int(float64(size)*(0.08+0.17*r.Float64()))) }
	for i, im := range images {
		c := append(Image(nil), im...)
		mask := make([]bool, hw)
		w, h := side(), side()
		x0, y0 := r.IntN(size-w+1), r.IntN(size-h+1)
		copyRect := func(src Image, sx, sy int) {
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					for ch := 0; ch < 3; ch++ {
						c[ch*hw+(y0+y)*size+x0+x] = src[ch*hw+(sy+y)*size+sx+x]
					}
					mask[(y0+y)*size+x0+x] = true
				}
			}
		}
		switch i % 4 {
		case 0:
			src := images[(i+1+r.IntN(max(len(images)-1, 1)))%len(images)]
			copyRect(src, r.IntN(size-w+1), r.IntN(size-h+1))
		case 1:
			var gain, shift [3]float32
			for ch := range gain {
				gain[ch] = float32(0.75 + 0.5*r.Float64())
				shift[ch] = float32(r.Float64() - 0.5)
			}
			cx, cy := float64(x0)+float64(w)/2, float64(y0)+float64(h)/2
			for y := y0; y < y0+h; y++ {
				for x := x0; x < x0+w; x++ {
					dx, dy := (float64(x)+0.5-cx)/(float64(w)/2), (float64(y)+0.5-cy)/(float64(h)/2)
					if dx*dx+dy*dy > 1 {
						continue
					}
					for ch := 0; ch < 3; ch++ {
						c[ch*hw+y*size+x] = c[ch*hw+y*size+x]*gain[ch] + shift[ch]
					}
					mask[y*size+x] = true
				}
			}
		case 2:
			scratch(c, mask, size, r)
		case 3:
			// The source is at least a third of the rectangle away, so
			// the moved content differs from what it covers.
			sx, sy := r.IntN(size-w+1), r.IntN(size-h+1)
			for k := 0; k < 16 && abs(sx-x0) < w/3 && abs(sy-y0) < h/3; k++ {
				sx, sy = r.IntN(size-w+1), r.IntN(size-h+1)
			}
			copyRect(im, sx, sy)
		}
		out[i], masks[i] = c, mask
	}
	return out, masks
}

// scratch draws a quadratic Bezier curve 1-3 pixels wide, 30-70% of the side
// long, shifting every channel by the same 0.6-1.2 (in normalised units)
// darker or lighter.
func scratch(c Image, mask []bool, size int, r *rand.Rand) {
	hw := size * size
	s := float64(size)
	length := s * (0.3 + 0.4*r.Float64())
	ax, ay := s*(0.15+0.7*r.Float64()), s*(0.15+0.7*r.Float64())
	angle := 2 * math.Pi * r.Float64()
	bx, by := ax+length*math.Cos(angle), ay+length*math.Sin(angle)
	// The control point bends the curve sideways by up to a third of its length.
	bend := (r.Float64() - 0.5) * 2 * length / 3
	mx, my := (ax+bx)/2-bend*math.Sin(angle), (ay+by)/2+bend*math.Cos(angle)
	radius := 0.5 + r.Float64()
	delta := float32(0.6 + 0.6*r.Float64())
	if r.IntN(2) == 0 {
		delta = -delta
	}
	steps := int(2*length) + 1
	for k := 0; k <= steps; k++ {
		u := float64(k) / float64(steps)
		px := (1-u)*(1-u)*ax + 2*(1-u)*u*mx + u*u*bx
		py := (1-u)*(1-u)*ay + 2*(1-u)*u*my + u*u*by
		for y := int(py - radius); y <= int(py+radius)+1; y++ {
			for x := int(px - radius); x <= int(px+radius)+1; x++ {
				if x < 0 || y < 0 || x >= size || y >= size || mask[y*size+x] {
					continue
				}
				if dx, dy := float64(x)+0.5-px, float64(y)+0.5-py; dx*dx+dy*dy > radius*radius {
					continue
				}
				for ch := 0; ch < 3; ch++ {
					c[ch*hw+y*size+x] += delta
				}
				mask[y*size+x] = true
			}
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
