package patchmemory

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/torchrt"
)

// BenchmarkMap is the demo memory's map of one 128 px image, at the demo
// size and at three times it (the memory's cost grows with its size).
//
//	go test ./backend/patchmemory -run NONE -bench Map -benchtime 20x
func BenchmarkMap(b *testing.B) {
	for _, size := range []int64{DemoConfig.Size, 3 * DemoConfig.Size} {
		b.Run(fmt.Sprintf("size=%d", size), func(b *testing.B) {
			c := DemoConfig
			c.Size = size
			m, store := newMemory(b, c)
			defer store.Free()
			const side = 128
			pix := stripes(rand.New(rand.NewPCG(1, 1)), 8, side)
			err := m.Build(func(yield func(Batch) error) error {
				x := ts.MustOfSlice(pix).MustView([]int64{8, 3, side, side}, true)
				defer x.MustDrop()
				return yield(Batch{Images: x})
			}, 8, 1)
			if err != nil {
				b.Fatal(err)
			}
			err = torchrt.Do(func() error {
				x := ts.MustOfSlice(pix[:3*side*side]).MustView([]int64{1, 3, side, side}, true)
				defer x.MustDrop()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					m.Map(x, x).MustDrop()
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkCoreset is the coreset's cost per pick (ns/op is one search of
// 4,096 picks among 65,536 rows of the demo's 64 dimensions), with the
// default block and a quarter of it.
//
//	go test ./backend/patchmemory -run NONE -bench Coreset -benchtime 3x
func BenchmarkCoreset(b *testing.B) {
	const n, k = 65536, 4096
	rng := rand.New(rand.NewPCG(1, 2))
	rows := make([]float32, n*DemoConfig.Dims)
	for i := range rows {
		rows[i] = float32(rng.NormFloat64())
	}
	for _, block := range []int64{CoresetBlock, CoresetBlock / 4} {
		b.Run(fmt.Sprintf("block=%d", block), func(b *testing.B) {
			coresetBlock = block
			defer func() { coresetBlock = CoresetBlock }()
			err := torchrt.Do(func() error {
				x := ts.MustOfSlice(rows).MustView([]int64{n, DemoConfig.Dims}, true)
				defer x.MustDrop()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					coreset(x, k, nil, rand.New(rand.NewPCG(3, uint64(i))))
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*k), "us/pick")
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		})
	}
}
