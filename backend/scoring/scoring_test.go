package scoring

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/features"
	"github.com/diad-project/diad/backend/internal/torchtest"
	"github.com/diad-project/diad/backend/torchrt"
)

func newScorer(t *testing.T) *Scorer {
	t.Helper()
	torchrt.ManualSeed(1)
	ext, err := features.New(features.Config{Arch: "resnet18", Layers: []int{1, 2, 3}}, gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ext.Free)
	s, err := New(ReferenceConfig, ext)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestIdenticalImagesGiveZeroMap(t *testing.T) {
	defer torchrt.Pin()()
	s := newScorer(t)
	x := ts.MustRandn([]int64{2, 3, 128, 128}, gotch.Float, gotch.CPU)
	defer x.MustDrop()
	var r Result
	torchtest.RequireNoLeak(t, "Score", 1, func() {
		var err error
		if r, err = s.Score(x, x, false); err != nil {
			t.Fatal(err)
		}
	})
	defer r.Free()
	for _, v := range r.Map.Float64Values() {
		if math.Abs(v) > 1e-5 {
			t.Fatalf("identical images: map value %g", v)
		}
	}
	if len(r.Scores) != 2 || math.Abs(r.Scores[0]) > 1e-5 {
		t.Fatalf("scores %v", r.Scores)
	}
}

func TestDifferentPatchIsWhereTheMaximumIs(t *testing.T) {
	defer torchrt.Pin()()
	s := newScorer(t)
	x := ts.MustRandn([]int64{1, 3, 128, 128}, gotch.Float, gotch.CPU)
	defer x.MustDrop()
	// The reconstruction differs from the input in a 24x24 patch at (80..103, 16..39).
	y := x.MustMulScalar(ts.FloatScalar(1), false) // a copy, not a view
	defer y.MustDrop()
	patch := y.MustNarrow(2, 80, 24, false).MustNarrow(3, 16, 24, true)
	torchrt.Fill_(patch, 3)
	patch.MustDrop()
	r, err := s.Score(x, y, true)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Free()
	v := r.Map.Float64Values()
	best := 0
	for i := range v {
		if v[i] > v[best] {
			best = i
		}
	}
	row, col := best/128, best%128
	if row < 80 || row >= 104 || col < 16 || col >= 40 {
		t.Fatalf("maximum at (%d, %d), outside the patch", row, col)
	}
	// The smoothed map is the blur of the sum of the per-layer maps.
	if len(r.LayerMaps) != 3 {
		t.Fatalf("%d layer maps", len(r.LayerMaps))
	}
	sum := r.LayerMaps[0].MustAdd(r.LayerMaps[1], false).MustAdd(r.LayerMaps[2], true)
	blurred := GaussianBlur(sum, GaussianKernel1D(5, 4))
	sum.MustDrop()
	defer blurred.MustDrop()
	b := blurred.Float64Values()
	for i := range v {
		if math.Abs(b[i]-v[i]) > 1e-5 {
			t.Fatal("map is not the blurred sum of the layer maps")
		}
	}
	// Mismatched shapes are an error.
	z := ts.MustZeros([]int64{1, 3, 64, 64}, gotch.Float, gotch.CPU)
	defer z.MustDrop()
	if _, err := s.Score(x, z, false); err == nil {
		t.Fatal("mismatched shapes accepted")
	}
}

func TestGaussianKernelClosedForm(t *testing.T) {
	k := GaussianKernel1D(5, 4)
	if len(k) != 41 {
		t.Fatalf("%d taps, want 41 (radius int(4*5+0.5) = 20)", len(k))
	}
	norm := 0.0
	for x := -20; x <= 20; x++ {
		norm += math.Exp(-float64(x*x) / 50)
	}
	for i, v := range k {
		x := float64(i - 20)
		if want := math.Exp(-x*x/50) / norm; math.Abs(v-want) > 1e-15 {
			t.Fatalf("tap %d = %v, want %v", i, v, want)
		}
	}
}

func TestReflectIndex(t *testing.T) {
	// scipy "reflect": d c b a | a b c d | d c b a
	want := map[int]int{-1: 0, -2: 1, -4: 3, -5: 3, 4: 3, 5: 2, 8: 0, 9: 1, -9: 0, 11: 3}
	for i, w := range want {
		if got := ReflectIndex(i, 4); got != w {
			t.Errorf("ReflectIndex(%d, 4) = %d, want %d", i, got, w)
		}
	}
}

// bruteBlur filters one map along rows then columns, straight from the
// definition (float64), with scipy's reflect border.
func bruteBlur(m []float64, h, w int, k []float64) []float64 {
	r := len(k) / 2
	tmp := make([]float64, h*w)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			s := 0.0
			for j := -r; j <= r; j++ {
				s += k[j+r] * m[y*w+ReflectIndex(x+j, w)]
			}
			tmp[y*w+x] = s
		}
	}
	out := make([]float64, h*w)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			s := 0.0
			for j := -r; j <= r; j++ {
				s += k[j+r] * tmp[ReflectIndex(y+j, h)*w+x]
			}
			out[y*w+x] = s
		}
	}
	return out
}

func TestGaussianBlurMatchesDefinition(t *testing.T) {
	defer torchrt.Pin()()
	rng := rand.New(rand.NewPCG(1, 1))
	for _, c := range []struct{ h, w int }{{30, 20}, {16, 16}, {7, 50}} {
		vals := make([]float32, c.h*c.w)
		m64 := make([]float64, len(vals))
		for i := range vals {
			vals[i] = rng.Float32()
			m64[i] = float64(vals[i])
		}
		x := ts.MustOfSlice(vals).MustView([]int64{1, 1, int64(c.h), int64(c.w)}, true)
		k := GaussianKernel1D(5, 4) // radius 20: wider than some maps, reflects repeatedly
		got := GaussianBlur(x, k).Float64Values()
		want := bruteBlur(m64, c.h, c.w, k)
		for i := range want {
			if math.Abs(got[i]-want[i]) > 1e-5 {
				t.Fatalf("%dx%d: blur[%d] = %v, definition %v", c.h, c.w, i, got[i], want[i])
			}
		}
		x.MustDrop()
	}
}

func TestPooledMaxMatchesDirect(t *testing.T) {
	defer torchrt.Pin()()
	rng := rand.New(rand.NewPCG(2, 2))
	const n = 80
	vals := make([]float32, 2*n*n)
	for i := range vals {
		vals[i] = rng.Float32()
	}
	x := ts.MustOfSlice(vals).MustView([]int64{2, 1, n, n}, true)
	defer x.MustDrop()
	got := PooledMax(x, 8, 8)
	for b := 0; b < 2; b++ {
		cur := make([]float64, n*n)
		for i := range cur {
			cur[i] = float64(vals[b*n*n+i])
		}
		size := n
		for p := 0; p < 8; p++ {
			ns := size - 7
			next := make([]float64, ns*ns)
			for y := 0; y < ns; y++ {
				for xx := 0; xx < ns; xx++ {
					s := 0.0
					for dy := 0; dy < 8; dy++ {
						for dx := 0; dx < 8; dx++ {
							s += cur[(y+dy)*size+xx+dx]
						}
					}
					next[y*ns+xx] = s / 64
				}
			}
			cur, size = next, ns
		}
		want := cur[0]
		for _, v := range cur {
			want = math.Max(want, v)
		}
		if size != n-56 || math.Abs(got[b]-want) > 1e-5 {
			t.Fatalf("image %d: pooled max %v, direct %v (side %d)", b, got[b], want, size)
		}
	}
}

func TestForImageSize(t *testing.T) {
	if c := ReferenceConfig.ForImageSize(256); c != ReferenceConfig {
		t.Fatalf("256: %+v", c)
	}
	if c := ReferenceConfig.ForImageSize(64); c.Sigma != 1.25 || c.PoolKernel != 2 || c.PoolTimes != 8 || c.Truncate != 4 {
		t.Fatalf("64: %+v", c)
	}
}
