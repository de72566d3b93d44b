package patchmemory

import (
	"math/rand/v2"
	"slices"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/torchrt"
)

// CoresetDims is the width of the random projection the coreset's distances
// are measured in (PatchCore's trick: the farthest-point order survives a
// projection to a few dimensions, at a fraction of the cost).
const CoresetDims = 16

// CoresetBlock is how many rows one greedy search runs over: the pool is
// shuffled and cut into blocks, each picks its share of the memory, so one
// step's distances stay in cache whatever the pool's size.
const CoresetBlock = 4096

// coresetBlock is CoresetBlock (a test lowers it to reach several blocks).
var coresetBlock int64 = CoresetBlock

// coreset picks k of rows [N, D] (k <= N) as PatchCore's greedy k-center
// coreset: each pick is the row farthest from those already picked, so rare
// patches (a groove, a highlight) are kept and common ones are not kept
// many times over. groups (nil: one group) is each row's group: the search
// runs within a group, and each group gets its share of k in proportion to
// its rows, so that a plain category is not left with a few picks because
// a busy one spreads far. It returns the picks' indices into rows (k).
func coreset(rows *ts.Tensor, k int64, groups []int, rng *rand.Rand) []int64 {
	n, d := rows.MustSize()[0], rows.MustSize()[1]
	dev := rows.MustDevice()
	proj := make([]float32, d*CoresetDims)
	for i := range proj {
		proj[i] = float32(rng.NormFloat64())
	}
	r := ts.MustOfSlice(proj).MustView([]int64{d, CoresetDims}, true).MustTo(dev, true)
	low := rows.MustMm(r, false)
	r.MustDrop()
	defer low.MustDrop()
	var picked []int64
	var done int64 // rows in the blocks searched so far
	for _, block := range coresetBlocks(n, groups, rng) {
		// The block's share of k, rounded so that the shares sum to k.
		share := ((done+int64(len(block)))*k)/n - (done*k)/n
		done += int64(len(block))
		if share == 0 {
			continue
		}
		for _, j := range greedyFarthest(low, block, share, rng) {
			picked = append(picked, block[j])
		}
	}
	return picked
}

// coresetBlocks shuffles each group's rows and cuts them into blocks of at
// most coresetBlock rows, of near-equal sizes within a group.
func coresetBlocks(n int64, groups []int, rng *rand.Rand) [][]int64 {
	byGroup := map[int][]int64{}
	var order []int
	for _, i := range rng.Perm(int(n)) {
		g := 0
		if groups != nil {
			g = groups[i]
		}
		if _, ok := byGroup[g]; !ok {
			order = append(order, g)
		}
		byGroup[g] = append(byGroup[g], int64(i))
	}
	slices.Sort(order)
	var blocks [][]int64
	for _, g := range order {
		members := byGroup[g]
		m := int64(len(members))
		parts := (m + coresetBlock - 1) / coresetBlock
		for b := int64(0); b < parts; b++ {
			blocks = append(blocks, members[b*m/parts:(b+1)*m/parts])
		}
	}
	return blocks
}

// greedyFarthest runs the k-center search over the rows members of low and
// returns k positions in members.
func greedyFarthest(low *ts.Tensor, members []int64, k int64, rng *rand.Rand) []int64 {
	idx := ts.MustOfSlice(members).MustTo(low.MustDevice(), true)
	block := low.MustIndexSelect(0, idx, false)
	idx.MustDrop()
	defer block.MustDrop()
	dist := func(i int64) *ts.Tensor {
		c := block.MustNarrow(0, i, 1, false)
		diff := block.MustSub(c, false)
		c.MustDrop()
		return diff.MustSquare(true).MustSumDimIntlist([]int64{1}, false, gotch.Float, true)
	}
	first := rng.Int64N(int64(len(members)))
	out := []int64{first}
	nearest := dist(first)
	defer func() { nearest.MustDrop() }()
	for int64(len(out)) < k {
		far := nearest.MustArgmax([]int64{0}, false, false)
		i := int64(torchrt.Float32s(far)[0]) // < CoresetBlock: exact in float32
		far.MustDrop()
		out = append(out, i)
		d := dist(i)
		nearest = nearest.MustMinimum(d, true)
		d.MustDrop()
	}
	return out
}
