// Package quality measures whether a model visibly does what DiAD promises on
// a labelled test split: the paper's detection metrics (image and pixel AUROC,
// PRO), how faithfully normal images are rebuilt (PSNR and SSIM against the
// input), how much of the anomaly map's mass sits on the defects (mean map
// inside the masks over the mean outside, on anomalous images), and how much
// the predicted image changes along the trajectory (the denoising a teacher
// can show).
package quality

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/metrics"
	"github.com/diad-project/diad/backend/scoring"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
)

// Row is one category's (or the mean's) figures; metrics are fractions.
type Row struct {
	Category   string
	ImageAUROC float64
	PixelAUROC float64
	PRO        float64
	// PSNR (dB) and SSIM of normal test images' reconstructions.
	PSNR, SSIM float64
	// Removal is mean map inside the defect masks / mean map outside them.
	Removal float64
}

// DefectRow is one defect type of one category: the image AUROC of its
// images' scores and the pixel AUROC of their maps, each against the
// category's normal images, and its defect removal (in/out) - where a
// category falls short, and on what.
type DefectRow struct {
	Category, Defect string
	Images           int
	ImageAUROC       float64
	PixelAUROC       float64
	Removal          float64
}

// Options are how Measure evaluates beyond the model's own configuration.
type Options struct {
	// PixelSize is the side the pixel figures (pixel AUROC, PRO, defect
	// removal) are computed at: the anomaly maps are resized bilinearly
	// to it and the masks read from their files at it, so that a thin
	// defect keeps its true shape when the model runs at a smaller size.
	// 0 is the model's image size; the reference evaluates at 256.
	PixelSize int
}

// maxPixelSize bounds Options.PixelSize: every test image's map is held at
// that size until the metrics are computed (4 MiB each at 1024).
const maxPixelSize = 1024

// Report is a measurement.
type Report struct {
	Rows []Row // categories sorted by name, then "mean"
	// Defects are the defect types, by category then defect.
	Defects []DefectRow
	// StepChange is the mean absolute change of the decoded predicted image
	// between the first and the last sampler step, in 8-bit levels (0-255).
	StepChange float64
	// Guidance is how much the SG network changes the denoiser's noise
	// prediction at the first step: RMS(eps - eps without SG) / RMS(eps),
	// over the test images. Near 0 means the reconstruction does not use
	// the image guidance DiAD is built on, only the partly noised input.
	Guidance float64
	// GuidanceT is the timestep Guidance was measured at.
	GuidanceT int
	Scorer    string
	// PixelSize is the side the pixel figures were computed at.
	PixelSize int
	StartT    int
	Steps     int
	Images    int
	Seconds   float64
}

// Mean is the mean row.
func (r Report) Mean() Row { return r.Rows[len(r.Rows)-1] }

type catAcc struct {
	metrics.Category
	defects    []string // defect type of each map ("good" for normal images)
	psnr, ssim []float64
	removal    inOut
}

// categories accumulate the measures per category.
type categories map[string]*catAcc

// pixels is one image's anomaly map and ground-truth mask at the side the
// pixel figures are computed at.
type pixels struct {
	side   int
	scores []float32
	mask   []bool
}

// pixelsOf is the item's map m (size x size) and mask at o.PixelSize.
func (o Options) pixelsOf(it datasets.Item, m []float32, size int) (pixels, error) {
	if o.PixelSize == 0 || o.PixelSize == size {
		return pixels{side: size, scores: m, mask: it.Mask}, nil
	}
	mask, err := datasets.LoadMask(it.Sample, o.PixelSize)
	if err != nil {
		return pixels{}, fmt.Errorf("quality: %w", err)
	}
	return pixels{side: o.PixelSize, scores: resizeBilinear(m, size, o.PixelSize), mask: mask}, nil
}

// add records one scored image of the test split, its pixel figures from px.
func (cs categories) add(it datasets.Item, sc evaluate.Scored, px pixels, ssim float64) {
	s := it.Sample
	c := cs[s.Category]
	if c == nil {
		c = &catAcc{Category: metrics.Category{Name: s.Category}}
		cs[s.Category] = c
	}
	c.ImageScores = append(c.ImageScores, float32(sc.Score))
	c.ImageLabels = append(c.ImageLabels, s.Anomalous)
	c.Maps = append(c.Maps, metrics.Map{Width: px.side, Height: px.side, Scores: px.scores, Mask: px.mask})
	c.defects = append(c.defects, s.Defect)
	if !s.Anomalous {
		c.psnr = append(c.psnr, psnr(it.Image, sc.Recon, len(it.Image)/3))
		c.ssim = append(c.ssim, ssim)
		return
	}
	c.removal.add(px.scores, px.mask)
}

// summarise adds the per-category rows, their mean and the per-defect rows
// to rep.
func (cs categories) summarise(rep *Report, cfg metrics.EvalConfig) error {
	var cats []metrics.Category
	var names []string
	for n := range cs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		cats = append(cats, cs[n].Category)
	}
	tab := metrics.Evaluate(cats, cfg)
	values := map[string]map[string]float64{}
	for _, row := range tab.Rows {
		values[row.Category] = row.Values
	}
	for _, n := range names {
		c := cs[n]
		rep.Rows = append(rep.Rows, Row{Category: n, ImageAUROC: values[n][metrics.ImageAUROC], PixelAUROC: values[n][metrics.PixelAUROC],
			PRO: values[n][metrics.AUPRO], PSNR: avg(c.psnr), SSIM: avg(c.ssim), Removal: c.removal.ratio()})
	}
	mean := Row{Category: "mean"}
	k := float64(len(rep.Rows))
	for _, r := range rep.Rows {
		mean.ImageAUROC += r.ImageAUROC / k
		mean.PixelAUROC += r.PixelAUROC / k
		mean.PRO += r.PRO / k
		mean.PSNR += r.PSNR / k
		mean.SSIM += r.SSIM / k
		mean.Removal += r.Removal / k
	}
	rep.Rows = append(rep.Rows, mean)
	for _, n := range names {
		d, err := byDefect(n, cs[n])
		if err != nil {
			return err
		}
		rep.Defects = append(rep.Defects, d...)
	}
	return nil
}

// Measure evaluates cfg's checkpoint on the test split of cfg.Data.
func Measure(ctx context.Context, cfg evaluate.Config, opts Options) (Report, error) {
	if opts.PixelSize < 0 || opts.PixelSize > maxPixelSize {
		return Report{}, fmt.Errorf("quality: pixel size must be in [0, %d], got %d", maxPixelSize, opts.PixelSize)
	}
	split, err := evaluate.OpenTestSplit(cfg)
	if err != nil {
		return Report{}, err
	}
	det := split.Detector
	defer det.Free()
	size := det.Model.Config.ImageSize
	rep := Report{Scorer: det.Scorer.Kind(), StartT: det.Sampler.StartT, Steps: det.Sampler.Steps, PixelSize: cmp.Or(opts.PixelSize, size)}
	byCat := categories{}
	var changeSum float64
	var changeN int64
	var guidDiff, guidNorm float64
	hw := size * size
	// The first and last steps' predicted images of the batch being scored.
	var first, last []float32
	hook := func(s diffusion.Step) error {
		if s.Index != 0 && s.Index != s.Total-1 {
			return nil
		}
		if s.Index == 0 {
			d, n, err := guidanceEffect(det, s)
			if err != nil {
				return err
			}
			guidDiff, guidNorm, rep.GuidanceT = guidDiff+d, guidNorm+n, s.T
		}
		dec := det.PredictedImage(s)
		v := torchrt.Float32s(dec)
		dec.MustDrop()
		if s.Index == 0 {
			first = v
		}
		if s.Index == s.Total-1 {
			last = v
		}
		return nil
	}
	err = det.ScoreEach(ctx, split.Batches(ctx), evaluate.ScoreOptions{Seed: cfg.Seed, Hook: hook}, func(b evaluate.ScoredBatch) error {
		if first != nil && last != nil {
			changeSum += unitAbsDiffSum(first, last, hw)
			changeN += int64(len(first))
		}
		first, last = nil, nil
		ssims, err := ssimPerImage(b.X, b.Scored, size)
		if err != nil {
			return err
		}
		for i, it := range b.Items {
			px, err := opts.pixelsOf(it, b.Scored[i].Map, size)
			if err != nil {
				return err
			}
			byCat.add(it, b.Scored[i], px, ssims[i])
		}
		rep.Images += len(b.Items)
		return nil
	})
	if err != nil {
		return Report{}, err
	}
	if err := byCat.summarise(&rep, cfg.Metrics); err != nil {
		return Report{}, err
	}
	if changeN > 0 {
		rep.StepChange = 255 * changeSum / float64(changeN)
	}
	if guidNorm > 0 {
		rep.Guidance = math.Sqrt(guidDiff / guidNorm)
	}
	return rep, nil
}

// guidanceEffect returns the summed squares of (eps - eps without the SG
// network) and of eps, for one step.
func guidanceEffect(det *evaluate.Detector, s diffusion.Step) (diff, norm float64, err error) {
	err = torchrt.Do(func() error {
		b := int(s.Zt.MustSize()[0])
		t := make([]int, b)
		for i := range t {
			t[i] = s.T
		}
		torchrt.NoGrad(func() {
			u := det.Model.PredictEpsUnguided(s.Zt, t)
			d := s.Eps.MustSub(u, false)
			u.MustDrop()
			dd := d.MustSquare(true).MustSum(gotch.Float, true)
			diff = dd.Float64Values()[0]
			dd.MustDrop()
			nn := s.Eps.MustSquare(false).MustSum(gotch.Float, true)
			norm = nn.Float64Values()[0]
			nn.MustDrop()
		})
		return nil
	})
	return diff, norm, err
}

func avg(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

// imagenet statistics, to measure in [0, 1] RGB.
var (
	mean3 = [3]float64{0.485, 0.456, 0.406}
	std3  = [3]float64{0.229, 0.224, 0.225}
)

func toUnit(v float32, ch int) float64 {
	return math.Min(math.Max(float64(v)*std3[ch]+mean3[ch], 0), 1)
}

// unitAbsDiffSum sums |a - b| in [0, 1] RGB over batches of channel-major images.
func unitAbsDiffSum(a, b []float32, hw int) float64 {
	s := 0.0
	for i := range a {
		ch := (i / hw) % 3
		s += math.Abs(toUnit(a[i], ch) - toUnit(b[i], ch))
	}
	return s
}

// psnr of a reconstruction against its input, in [0, 1] RGB (peak 1).
func psnr(img, rec []float32, hw int) float64 {
	mse := 0.0
	for i := range img {
		ch := i / hw
		d := toUnit(img[i], ch) - toUnit(rec[i], ch)
		mse += d * d
	}
	mse /= float64(len(img))
	if mse == 0 {
		return math.Inf(1)
	}
	return 10 * math.Log10(1/mse)
}

// ssimPerImage is the mean SSIM of each reconstruction against its input.
func ssimPerImage(x *ts.Tensor, scored []evaluate.Scored, size int) (out []float64, err error) {
	defer torchrt.Recover(&err, "quality: ssim")
	var flat []float32
	for _, s := range scored {
		flat = append(flat, s.Recon...)
	}
	torchrt.NoGrad(func() {
		rec := torchrt.ImageBatch(flat, len(scored), size, x.MustDevice())
		a, b := scoring.ToUnit(x), scoring.ToUnit(rec)
		rec.MustDrop()
		a = a.MustClamp(ts.FloatScalar(0), ts.FloatScalar(1), true)
		b = b.MustClamp(ts.FloatScalar(0), ts.FloatScalar(1), true)
		m := scoring.SSIMMap(a, b)
		a.MustDrop()
		b.MustDrop()
		per := m.MustMeanDim([]int64{1, 2, 3}, false, m.DType(), true)
		out = torchrt.Float64s(per)
		per.MustDrop()
	})
	return out, nil
}

// Format renders the report as a table (metrics in percent).
// inOut accumulates anomaly-map values inside and outside defect masks.
type inOut struct {
	inSum, outSum float64
	inN, outN     int64
}

func (a *inOut) add(m []float32, mask []bool) {
	for j, v := range m {
		if mask[j] {
			a.inSum += float64(v)
			a.inN++
		} else {
			a.outSum += float64(v)
			a.outN++
		}
	}
}

// ratio is the defect removal: mean inside the masks / mean outside (NaN
// without both).
func (a inOut) ratio() float64 {
	if a.inN == 0 || a.outN == 0 || !(a.outSum > 0) {
		return math.NaN()
	}
	return (a.inSum / float64(a.inN)) / (a.outSum / float64(a.outN))
}

// byDefect splits a category's pixel figures by defect type.
func byDefect(cat string, c *catAcc) ([]DefectRow, error) {
	var goodScores, goodImage []float32
	kinds := map[string][]int{}
	var order []string
	for i, d := range c.defects {
		if !c.ImageLabels[i] {
			goodScores = append(goodScores, c.Maps[i].Scores...)
			goodImage = append(goodImage, c.ImageScores[i])
			continue
		}
		if kinds[d] == nil {
			order = append(order, d)
		}
		kinds[d] = append(kinds[d], i)
	}
	sort.Strings(order)
	var out []DefectRow
	for _, d := range order {
		var scores []float32
		var labels []bool
		var io inOut
		for _, i := range kinds[d] {
			m := c.Maps[i]
			scores = append(scores, m.Scores...)
			labels = append(labels, m.Mask...)
			io.add(m.Scores, m.Mask)
		}
		scores = append(scores, goodScores...)
		labels = append(labels, make([]bool, len(goodScores))...)
		row := DefectRow{Category: cat, Defect: d, Images: len(kinds[d]), ImageAUROC: math.NaN(), PixelAUROC: math.NaN(), Removal: io.ratio()}
		if b, err := metrics.BinaryMetrics(scores, labels); err == nil {
			row.PixelAUROC = b.AUROC
		} else if !errors.Is(err, metrics.ErrOneClass) {
			return nil, fmt.Errorf("quality: %s/%s: %w", cat, d, err)
		}
		imgScores := append([]float32(nil), goodImage...)
		imgLabels := make([]bool, len(goodImage))
		for _, i := range kinds[d] {
			imgScores = append(imgScores, c.ImageScores[i])
			imgLabels = append(imgLabels, true)
		}
		if b, err := metrics.BinaryMetrics(imgScores, imgLabels); err == nil {
			row.ImageAUROC = b.AUROC
		} else if !errors.Is(err, metrics.ErrOneClass) {
			return nil, fmt.Errorf("quality: %s/%s: %w", cat, d, err)
		}
		out = append(out, row)
	}
	return out, nil
}

func Format(r Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "scorer %s, start level %d, %d steps, %d test images; pixel figures at %dx%d\n", r.Scorer, r.StartT, r.Steps, r.Images, r.PixelSize, r.PixelSize)
	fmt.Fprintf(&b, "%-10s %8s %8s %8s %9s %6s %8s\n", "category", "I-AUROC", "P-AUROC", "PRO", "PSNR(dB)", "SSIM", "in/out")
	for _, row := range r.Rows {
		fmt.Fprintf(&b, "%-10s %8.1f %8.1f %8.1f %9.2f %6.3f %8.2f\n", row.Category, 100*row.ImageAUROC, 100*row.PixelAUROC, 100*row.PRO, row.PSNR, row.SSIM, row.Removal)
	}
	if len(r.Defects) > 0 {
		fmt.Fprintf(&b, "per defect type (image and pixel AUROC against the category's normal images; in/out inside the type's masks):\n")
		for _, d := range r.Defects {
			fmt.Fprintf(&b, "  %-10s %-13s %3d images  I-AUROC %5.1f  P-AUROC %5.1f  in/out %5.2f\n", d.Category, d.Defect, d.Images, 100*d.ImageAUROC, 100*d.PixelAUROC, d.Removal)
		}
	}
	fmt.Fprintf(&b, "predicted image, first to last step: mean |change| %.1f/255\n", r.StepChange)
	fmt.Fprintf(&b, "SG guidance at the first step (t = %d): changes the noise prediction by %.2g%% RMS\n", r.GuidanceT, 100*r.Guidance)
	return b.String()
}

// resizeBilinear resizes a square map from x from to to x to by bilinear
// interpolation with half-pixel centres (libtorch's align_corners=False, as
// the patch memory upsamples its own map), clamped at the border. Made
// smaller it samples without antialiasing (halving averages 2x2 blocks).
func resizeBilinear(m []float32, from, to int) []float32 {
	out := make([]float32, to*to)
	idx := make([]int, to)
	frac := make([]float32, to)
	for i := range to {
		src := (float64(i)+0.5)*float64(from)/float64(to) - 0.5
		src = min(max(src, 0), float64(from-1))
		idx[i] = max(0, min(int(src), from-2))
		frac[i] = float32(src - float64(idx[i]))
	}
	for y := range to {
		y0, fy := idx[y], frac[y]
		y1 := min(y0+1, from-1)
		for x := range to {
			x0, fx := idx[x], frac[x]
			x1 := min(x0+1, from-1)
			top := m[y0*from+x0]*(1-fx) + m[y0*from+x1]*fx
			bottom := m[y1*from+x0]*(1-fx) + m[y1*from+x1]*fx
			out[y*to+x] = top*(1-fy) + bottom*fy
		}
	}
	return out
}
