package patchmemory

import (
	"math/rand/v2"
	"testing"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/internal/torchtest"
	"github.com/diad-project/diad/backend/torchrt"
)

// A coreset keeps the rare rows a random draw of the same size misses: 5
// rows far from a crowd of 2,000 are all among 40 picks, in one block and in
// several, and no row is picked twice.
func TestCoresetKeepsRareRows(t *testing.T) {
	const crowd, rare, dims, k = 2000, 5, 8, 40
	rng := rand.New(rand.NewPCG(1, 2))
	rows := make([]float32, 0, (crowd+rare)*dims)
	for i := 0; i < crowd; i++ {
		for j := 0; j < dims; j++ {
			rows = append(rows, float32(0.1*rng.NormFloat64()))
		}
	}
	for i := 0; i < rare; i++ {
		for j := 0; j < dims; j++ {
			v := float32(0)
			if j == i {
				v = 10
			}
			rows = append(rows, v)
		}
	}
	for _, block := range []int64{CoresetBlock, 500} {
		coresetBlock = block
		var picked []float32
		torchtest.RequireNoLeak(t, "coreset", 0, func() { picked = pickCoreset(t, rows, dims, k, nil, 3) })
		coresetBlock = CoresetBlock
		seen := map[int]bool{}
		for _, v := range picked {
			i := int(v)
			if i < 0 || i >= crowd+rare || seen[i] {
				t.Fatalf("block %d: pick %d out of range or repeated (%v)", block, i, picked)
			}
			seen[i] = true
		}
		if len(seen) != k {
			t.Fatalf("block %d: %d picks, want %d", block, len(seen), k)
		}
		for i := crowd; i < crowd+rare; i++ {
			if !seen[i] {
				t.Errorf("block %d: rare row %d not in the coreset %v", block, i, picked)
			}
		}
	}
}

// A memory built as a coreset maps like a random one (a foreign patch
// stands out) and is reproducible from its seed.
func TestCoresetMemory(t *testing.T) {
	c := tiny
	c.Coreset = true
	bankOf := func() []float32 {
		m, store := newMemory(t, c)
		defer store.Free()
		build(t, m, 6, 16, 5)
		var b []float32
		if err := torchrt.Do(func() error { b = torchrt.Float32s(m.bank); return nil }); err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b := bankOf(), bankOf()
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("two coreset builds differ at %d", i)
		}
	}
	requireForeignPatchStandsOut(t, c)
}

// Each group gets its share of the coreset: a tight group inside a wide
// one gets picks in proportion to its rows (a search over both would give
// it none: its rows are never the farthest).
func TestCoresetSharesByGroup(t *testing.T) {
	const wide, tight, dims, k = 2000, 200, 8, 44
	rng := rand.New(rand.NewPCG(5, 6))
	rows := make([]float32, 0, (wide+tight)*dims)
	groups := make([]int, 0, wide+tight)
	for i := 0; i < wide+tight; i++ {
		spread, g := 1.0, 0
		if i >= wide {
			spread, g = 0.01, 1
		}
		for j := 0; j < dims; j++ {
			rows = append(rows, float32(spread*rng.NormFloat64()))
		}
		groups = append(groups, g)
	}
	countTight := func(groups []int) int {
		picked := pickCoreset(t, rows, dims, k, groups, 7)
		if len(picked) != k {
			t.Fatalf("%d picks, want %d", len(picked), k)
		}
		n := 0
		for _, v := range picked {
			if int(v) >= wide {
				n++
			}
		}
		return n
	}
	if got, want := countTight(groups), k*tight/(wide+tight); got != want {
		t.Errorf("the tight group got %d picks, want its share %d", got, want)
	}
	if got := countTight(nil); got > 1 {
		t.Errorf("without groups the tight group got %d picks (the test's premise: at most the random first one)", got)
	}
}

// pickCoreset runs coreset over rows of dims values and returns the picks.
func pickCoreset(t *testing.T, rows []float32, dims int, k int64, groups []int, seed uint64) []float32 {
	t.Helper()
	var picked []float32
	err := torchrt.Do(func() error {
		x := ts.MustOfSlice(rows).MustView([]int64{int64(len(rows) / dims), int64(dims)}, true)
		defer x.MustDrop()
		for _, i := range coreset(x, k, groups, rand.New(rand.NewPCG(seed, seed+1))) {
			picked = append(picked, float32(i))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return picked
}
