package patchmemory

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/scoring"
	"github.com/diad-project/diad/backend/torchrt"
)

// Features are the patches of ImageNet-normalised images [B, 3, H, W]:
// [B, FeatureDims, H/Stride, W/Stride], each location's windows at every
// scale (reflect-padded at the border), averaged over its Stride x Stride
// cell. Colours are compared in [0, 1] RGB.
func (m *Memory) Features(images *ts.Tensor) (*ts.Tensor, error) {
	s := images.MustSize()
	if len(s) != 4 || s[1] != 3 {
		return nil, fmt.Errorf("patchmemory: images must be [B, 3, H, W], got %v", s)
	}
	mul := int64(m.cfg.Multiple())
	if s[2]%mul != 0 || s[3]%mul != 0 {
		return nil, fmt.Errorf("patchmemory: image %dx%d is not a multiple of %d", s[2], s[3], mul)
	}
	grid := []int64{s[2] / m.cfg.Stride, s[3] / m.cfg.Stride}
	unit := scoring.ToUnit(images)
	defer unit.MustDrop()
	r := m.cfg.Patch / 2
	k := m.cfg.Patch
	var parts []*ts.Tensor
	defer func() {
		for _, p := range parts {
			p.MustDrop()
		}
	}()
	for _, sc := range m.cfg.Scales {
		x := unit
		if sc > 1 {
			x = unit.MustAvgPool2d([]int64{sc, sc}, []int64{sc, sc}, []int64{0, 0}, false, true, nil, false)
		}
		padded := x.MustReflectionPad2d([]int64{r, r, r, r}, x != unit)
		cols := padded.MustIm2col([]int64{k, k}, []int64{1, 1}, []int64{0, 0}, []int64{1, 1}, true)
		win := cols.MustView([]int64{s[0], 3 * k * k, s[2] / sc, s[3] / sc}, true)
		parts = append(parts, win.MustAdaptiveAvgPool2d(grid, true))
	}
	return ts.MustCat(parts, 1), nil
}

// project flattens features [B, D, h, w] to rows [B*h*w, D], centres them
// and projects them on the principal components: [B*h*w, Dims]. It also
// returns each row's squared distance to the components' subspace [B*h*w]:
// what the projection cannot see (a colour normal patches never have) still
// counts.
func (m *Memory) project(feats *ts.Tensor) (proj, residual *ts.Tensor) {
	d := m.cfg.FeatureDims()
	rows := feats.MustPermute([]int64{0, 2, 3, 1}, false).MustReshape([]int64{-1, d}, true)
	centred := rows.MustSub(m.mean, true)
	proj = centred.MustMm(m.basis, false)
	all := centred.MustMul(centred, true).MustSumDimIntlist([]int64{1}, false, gotch.Float, true)
	kept := proj.MustMul(proj, false).MustSumDimIntlist([]int64{1}, false, gotch.Float, true)
	residual = all.MustSub(kept, true).MustClampMin(ts.FloatScalar(0), true)
	kept.MustDrop()
	if m.scale != nil {
		proj = m.whiten(proj)
		rs := m.scale.MustNarrow(0, m.cfg.Dims, 1, false)
		residual = residual.MustMul(rs, true).MustMul(rs, true)
		rs.MustDrop()
	}
	return proj, residual
}

// whiten scales projected rows [N, Dims] by the components' scales (and
// frees proj): the bank and the queries are compared in the same space.
func (m *Memory) whiten(proj *ts.Tensor) *ts.Tensor {
	sc := m.scale.MustNarrow(0, 0, m.cfg.Dims, false)
	defer sc.MustDrop()
	return proj.MustMul(sc, true)
}

// whitening is the scale of each kept component and, last, of the
// residual for Config.Whiten: (variance / leading variance)^(-w/2), the
// residual's variance its mean over the components left out. vals are the
// covariance's eigenvalues, ascending (as eigh gives them).
func whitening(vals []float64, dims int64, w float64) []float32 {
	d := int64(len(vals))
	lead := max(vals[d-1], 1e-12)
	out := make([]float32, dims+1)
	for j := int64(0); j < dims; j++ {
		out[j] = float32(math.Pow(max(vals[d-1-j], 1e-12)/lead, -w/2))
	}
	rest := 0.0
	for _, v := range vals[:d-dims] {
		rest += max(v, 0)
	}
	if d > dims {
		rest /= float64(d - dims)
	}
	// A residual of (numerically) no variance, as when every component is
	// kept, must not be scaled up without bound: its variance counts as at
	// least a thousandth of the smallest kept component's.
	out[dims] = float32(math.Pow(max(rest, vals[d-dims]*1e-3, 1e-12)/lead, -w/2))
	return out
}

// Built reports whether the memory holds patches (built, or loaded from a
// model file that has them). A memory once seen built stays built, so the
// flag is read from its tensor (a device-to-host copy) only until then.
func (m *Memory) Built() bool {
	if m.seenBuilt.Load() {
		return true
	}
	var v []float32
	torchrt.NoGrad(func() { v = torchrt.Float32s(m.built) })
	ok := len(v) == 1 && v[0] == 1
	if ok {
		m.seenBuilt.Store(true)
	}
	return ok
}

// Map is the anomaly map of ImageNet-normalised images [B, 3, H, W]: each
// location's Euclidean distance (in the projected space) to its nearest
// patch in memory, bilinearly upsampled to [B, 1, H, W]. The
// reconstructions are not needed; the argument makes Map a scoring term.
// Every image is compared with the whole memory (see MapGroups).
func (m *Memory) Map(images, recons *ts.Tensor) *ts.Tensor {
	return m.MapGroups(images, recons, nil)
}

// MapGroups is Map with each image's group, its category (nil, or a name
// the memory was not built with: the whole memory): an image is compared
// with its own category's patches only, so that a patch normal for another
// category (a groove of one texture, a crack-like vein of another) does not
// hide a defect.
func (m *Memory) MapGroups(images, _ *ts.Tensor, groups []string) *ts.Tensor {
	out, err := m.mapOf(images, groups)
	if err != nil {
		// Terms panic inside the scorer's error boundary (scoring.Score
		// returns it as an error).
		panic(err)
	}
	return out
}

func (m *Memory) mapOf(images *ts.Tensor, groups []string) (*ts.Tensor, error) {
	if !m.Built() {
		return nil, fmt.Errorf("patchmemory: the memory is empty (build it: diad train, or diad train --recalibrate)")
	}
	s := images.MustSize()
	if groups != nil && int64(len(groups)) != s[0] {
		return nil, fmt.Errorf("patchmemory: %d groups for %d images", len(groups), s[0])
	}
	var out *ts.Tensor
	var err error
	torchrt.NoGrad(func() {
		var feats *ts.Tensor
		if feats, err = m.Features(images); err != nil {
			return
		}
		fs := feats.MustSize()
		q, residual := m.project(feats)
		feats.MustDrop()
		d := m.nearestByImage(q, residual, fs[0], groups)
		q.MustDrop()
		residual.MustDrop()
		grid := d.MustView([]int64{fs[0], 1, fs[2], fs[3]}, true)
		out = grid.MustUpsampleBilinear2d([]int64{s[2], s[3]}, false, nil, nil, true)
	})
	return out, err
}

// nearestByImage is nearest for the rows of b images in turn, each
// searching its group's bank rows; [N].
func (m *Memory) nearestByImage(q, residual *ts.Tensor, b int64, groups []string) *ts.Tensor {
	if groups == nil || len(m.cfg.Groups) == 0 {
		return m.nearest(q, residual, 0, m.cfg.Size)
	}
	per := q.MustSize()[0] / b
	parts := make([]*ts.Tensor, b)
	for i := range b {
		qi := q.MustNarrow(0, i*per, per, false)
		ri := residual.MustNarrow(0, i*per, per, false)
		first, n := m.cfg.rowsOf(groups[i])
		parts[i] = m.nearest(qi, ri, first, n)
		qi.MustDrop()
		ri.MustDrop()
	}
	out := ts.MustCat(parts, 0)
	for _, p := range parts {
		p.MustDrop()
	}
	return out
}

// nearest is each row's distance to its nearest bank row among rows
// [first, first+size), [N], with the row's squared residual (nil: none)
// added under the root. The search is tiled (QueryChunk x BankChunk) so that
// a tile of squared distances, |b|^2 - 2 q.b, stays small, and |q|^2 is
// added after the minimum.
func (m *Memory) nearest(q, residual *ts.Tensor, first, size int64) *ts.Tensor {
	n := q.MustSize()[0]
	var rows []*ts.Tensor
	defer func() {
		for _, r := range rows {
			r.MustDrop()
		}
	}()
	for i := int64(0); i < n; i += m.cfg.QueryChunk {
		qn := min(m.cfg.QueryChunk, n-i)
		qc := q.MustNarrow(0, i, qn, false)
		q2 := qc.MustMulScalar(ts.FloatScalar(-2), false)
		var best *ts.Tensor
		for j := first; j < first+size; j += m.cfg.BankChunk {
			bn := min(m.cfg.BankChunk, first+size-j)
			bank := m.bank.MustNarrow(0, j, bn, false).MustT(true)
			norms := m.norms.MustNarrow(0, j, bn, false)
			d := norms.MustAddmm(q2, bank, true).MustAmin([]int64{1}, false, true)
			bank.MustDrop()
			if best == nil {
				best = d
			} else {
				best = best.MustMinimum(d, true)
				d.MustDrop()
			}
		}
		q2.MustDrop()
		sq := qc.MustMul(qc, true).MustSumDimIntlist([]int64{1}, false, gotch.Float, true)
		if residual != nil {
			rn := residual.MustNarrow(0, i, qn, false)
			sq = sq.MustAdd(rn, true)
			rn.MustDrop()
		}
		rows = append(rows, best.MustAdd(sq, true).MustClampMin(ts.FloatScalar(0), true).MustSqrt(true))
		sq.MustDrop()
	}
	return ts.MustCat(rows, 0)
}

// Batch is a batch of normal images for Build: Images ImageNet-normalised
// [B, 3, H, W] (the caller frees them) and Groups each image's group, its
// category (nil: one group). A coreset is chosen per group, each group's
// share of the memory in proportion to its patches.
type Batch struct {
	Images *ts.Tensor
	Groups []string
}

// Build fills the memory from normal images. batches yields them (an error
// ends the build); Build calls it twice and both calls must yield the same
// images, images of them. The first pass fits the principal components on
// at most PCARows locations drawn at random; the second projects the
// locations (all of them, or PoolRows drawn at random when there are more)
// and Size of them become the memory: a coreset (Config.Coreset) or a
// random draw. The same images and seed give the same memory.
func (m *Memory) Build(batches func(yield func(Batch) error) error, images int, seed uint64) error {
	if images < 1 {
		return fmt.Errorf("patchmemory: no images to build the memory from")
	}
	return torchrt.Do(func() error {
		var err error
		torchrt.NoGrad(func() { err = m.build(batches, images, seed) })
		return err
	})
}

// PCARows is how many locations (at most) the principal components are
// fitted on, and PoolRows how many projected locations (at most) the memory
// is chosen from: the build's peak memory is PCARows rows in float64 and
// PoolRows rows of Dims floats, whatever the number of images.
const (
	PCARows  = 65536
	PoolRows = 1 << 19
)

// pcaRows is PCARows (a test lowers it to reach the subsampling path).
var pcaRows int64 = PCARows

func (m *Memory) build(batches func(yield func(Batch) error) error, images int, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 0x9a7c4))
	// The components are fitted on all groups together: the rows' groups
	// matter only when the memory is chosen.
	fit, _, _, err := m.pool(batches, images, pcaRows, rng, nil)
	if err != nil {
		return err
	}
	n := fit.MustSize()[0]
	if n < 2 {
		fit.MustDrop()
		return fmt.Errorf("patchmemory: %d patches are too few to build a memory", n)
	}
	if n > pcaRows {
		idx := sampleIndices(rng, n, pcaRows, fit.MustDevice())
		fit = fit.MustIndexSelect(0, idx, true)
		idx.MustDrop()
	}
	mean, basis, vals := principal(fit, m.cfg.Dims)
	fit.MustDrop()
	torchrt.Copy_(m.mean, mean)
	torchrt.Copy_(m.basis, basis)
	mean.MustDrop()
	basis.MustDrop()
	if m.scale != nil {
		sc := ts.MustOfSlice(whitening(vals, m.cfg.Dims, m.cfg.Whiten)).MustTo(m.scale.MustDevice(), true)
		torchrt.Copy_(m.scale, sc)
		sc.MustDrop()
	}
	projected, groups, names, err := m.pool(batches, images, PoolRows, rng, func(rows *ts.Tensor) *ts.Tensor {
		centred := rows.MustSub(m.mean, false)
		proj := centred.MustMm(m.basis, true)
		if m.scale != nil {
			proj = m.whiten(proj)
		}
		return proj
	})
	if err != nil {
		return err
	}
	defer projected.MustDrop()
	return m.fill(projected, groups, names, rng)
}

// pool gathers about want locations' patches [N, FeatureDims] from the
// images, the same share from each (every location when they have fewer),
// drawn at random, each row's group (numbered in order of appearance) and
// the groups' names by number; keep, when not nil, maps each image's rows to
// what is kept of them (and the rows are freed).
func (m *Memory) pool(batches func(yield func(Batch) error) error, images int, want int64, rng *rand.Rand, keep func(*ts.Tensor) *ts.Tensor) (*ts.Tensor, []int, []string, error) {
	perImage := (want + int64(images) - 1) / int64(images)
	var parts []*ts.Tensor
	defer func() {
		for _, p := range parts {
			p.MustDrop()
		}
	}()
	var groups []int
	var names []string
	groupIDs := map[string]int{}
	err := batches(func(x Batch) error {
		feats, err := m.Features(x.Images)
		if err != nil {
			return err
		}
		fs := feats.MustSize()
		if x.Groups != nil && int64(len(x.Groups)) != fs[0] {
			feats.MustDrop()
			return fmt.Errorf("%d groups for %d images", len(x.Groups), fs[0])
		}
		d := m.cfg.FeatureDims()
		rows := feats.MustPermute([]int64{0, 2, 3, 1}, true).MustReshape([]int64{fs[0], fs[2] * fs[3], d}, true)
		defer rows.MustDrop()
		locs := fs[2] * fs[3]
		take := min(perImage, locs)
		for b := int64(0); b < fs[0]; b++ {
			idx := sampleIndices(rng, locs, take, x.Images.MustDevice())
			one := rows.MustSelect(0, b, false).MustIndexSelect(0, idx, true)
			idx.MustDrop()
			if keep != nil {
				kept := keep(one)
				one.MustDrop()
				one = kept
			}
			parts = append(parts, one)
			g := ""
			if x.Groups != nil {
				g = x.Groups[b]
			}
			id, ok := groupIDs[g]
			if !ok {
				id = len(groupIDs)
				groupIDs[g] = id
				names = append(names, g)
			}
			for range take {
				groups = append(groups, id)
			}
		}
		return nil
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("patchmemory: build: %w", err)
	}
	if len(parts) == 0 {
		return nil, nil, nil, fmt.Errorf("patchmemory: build: the images yielded nothing")
	}
	return ts.MustCat(parts, 0), groups, names, nil
}

// fill chooses the memory among the projected locations [N, Dims] of
// groups (named by names): Size of them, a coreset or drawn at random (with
// replacement when N < Size), the bank's rows ordered by group.
func (m *Memory) fill(projected *ts.Tensor, groups []int, names []string, rng *rand.Rand) error {
	n := projected.MustSize()[0]
	var picks []int64
	if m.cfg.Coreset && n > m.cfg.Size {
		picks = coreset(projected, m.cfg.Size, groups, rng)
	} else {
		picks = samplePicks(rng, n, m.cfg.Size)
	}
	bankGroups := orderByGroup(picks, groups, names)
	idx := ts.MustOfSlice(picks).MustTo(projected.MustDevice(), true)
	bank := projected.MustIndexSelect(0, idx, false)
	idx.MustDrop()
	norms := bank.MustMul(bank, false).MustSumDimIntlist([]int64{1}, false, gotch.Float, true)
	torchrt.Copy_(m.bank, bank)
	torchrt.Copy_(m.norms, norms)
	bank.MustDrop()
	norms.MustDrop()
	one := ts.MustOnes([]int64{1}, gotch.Float, m.built.MustDevice())
	torchrt.Copy_(m.built, one)
	one.MustDrop()
	m.cfg.Groups = bankGroups
	return nil
}

// orderByGroup sorts picks (indices of rows of groups) by group, stably, and
// returns the groups' rows in that order: none when there is one group
// (searching it is searching everything).
func orderByGroup(picks []int64, groups []int, names []string) []Group {
	if len(names) < 2 || slices.Contains(names, "") {
		return nil // one group, or images without one among them
	}
	slices.SortStableFunc(picks, func(a, b int64) int { return groups[a] - groups[b] })
	counts := make([]int64, len(names))
	for _, p := range picks {
		counts[groups[p]]++
	}
	var out []Group
	for id, c := range counts {
		if c > 0 { // a group too small for a share keeps no rows: its images search all
			out = append(out, Group{Name: names[id], Rows: c})
		}
	}
	return out
}

// principal returns the rows' mean [D] and the leading dims eigenvectors of
// their covariance as columns [D, dims], computed in float64 (float32 on
// the model's device), and all the eigenvalues, ascending. An eigenvector's
// sign does not matter: distances are the same either way.
func principal(rows *ts.Tensor, dims int64) (mean, basis *ts.Tensor, vals []float64) {
	x := rows.MustTotype(gotch.Double, false)
	defer x.MustDrop()
	n := x.MustSize()[0]
	mu := x.MustMeanDim([]int64{0}, true, gotch.Double, false)
	xc := x.MustSub(mu, false)
	cov := xc.MustT(false).MustMm(xc, true).MustDivScalar(ts.FloatScalar(float64(n-1)), true)
	xc.MustDrop()
	ev, vecs := cov.MustLinalgEigh("L", true)
	vals = ev.Float64Values()
	ev.MustDrop()
	d := vecs.MustSize()[1]
	// eigh orders eigenvalues ascending: the last columns lead.
	top := vecs.MustNarrow(1, d-dims, dims, true).MustFlip([]int64{1}, true)
	dev := rows.MustDevice()
	mean = mu.MustView([]int64{-1}, true).MustTotype(gotch.Float, true).MustTo(dev, true)
	basis = top.MustTotype(gotch.Float, true).MustContiguous(true).MustTo(dev, true)
	return mean, basis, vals
}

// sampleIndices draws k indices in [0, n) on device: without replacement
// when k <= n, else with replacement.
func sampleIndices(rng *rand.Rand, n, k int64, dev gotch.Device) *ts.Tensor {
	return ts.MustOfSlice(samplePicks(rng, n, k)).MustTo(dev, true)
}

// samplePicks draws k indices in [0, n): without replacement when k <= n,
// else with replacement.
func samplePicks(rng *rand.Rand, n, k int64) []int64 {
	idx := make([]int64, k)
	if k <= n {
		for i, v := range rng.Perm(int(n))[:k] {
			idx[i] = int64(v)
		}
	} else {
		for i := range idx {
			idx[i] = rng.Int64N(n)
		}
	}
	return idx
}
