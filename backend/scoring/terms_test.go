package scoring

import (
	"math"
	"strings"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/internal/torchtest"
	"github.com/diad-project/diad/backend/torchrt"
)

// normalised turns [0, 1] RGB values into an ImageNet-normalised batch.
func normalised(unit []float32, b, size int) *ts.Tensor {
	hw := size * size
	out := make([]float32, len(unit))
	for i, v := range unit {
		ch := (i / hw) % 3
		out[i] = (v - imagenetMean[ch]) / imagenetStd[ch]
	}
	return torchrt.ImageBatch(out, b, size, gotch.CPU)
}

func TestSSIMOfIdenticalImagesIsOneAndDropsWithNoise(t *testing.T) {
	defer torchrt.Pin()()
	a := ts.MustRand([]int64{1, 3, 32, 32}, gotch.Float, gotch.CPU)
	defer a.MustDrop()
	same := SSIMMap(a, a)
	defer same.MustDrop()
	for _, v := range same.Float64Values() {
		if math.Abs(v-1) > 1e-4 {
			t.Fatalf("SSIM of an image with itself: %g, want 1", v)
		}
	}
	prev := 1.0
	for _, sigma := range []float64{0.02, 0.1, 0.3} {
		n := ts.MustRandn([]int64{1, 3, 32, 32}, gotch.Float, gotch.CPU).MustMulScalar(ts.FloatScalar(sigma), true)
		b := a.MustAdd(n, false)
		n.MustDrop()
		m := SSIMMap(a, b)
		b.MustDrop()
		mean := m.MustMean(gotch.Float, true)
		v := mean.Float64Values()[0]
		mean.MustDrop()
		if !(v < prev) {
			t.Fatalf("SSIM with noise sigma %g is %g, not below %g", sigma, v, prev)
		}
		prev = v
	}
}

func TestPixelTermMeasuresTheColourDifference(t *testing.T) {
	defer torchrt.Pin()()
	const size = 16
	unitA := make([]float32, 3*size*size)
	unitB := make([]float32, 3*size*size)
	for i := range unitA {
		unitA[i] = 0.5
		unitB[i] = 0.5
	}
	// Pixel (3, 5): red +0.3, green -0.3, blue unchanged -> mean |diff| 0.2.
	unitB[0*size*size+5*size+3] += 0.3
	unitB[1*size*size+5*size+3] -= 0.3
	a, b := normalised(unitA, 1, size), normalised(unitB, 1, size)
	defer a.MustDrop()
	defer b.MustDrop()
	var m *ts.Tensor
	torchtest.RequireNoLeak(t, "PixelTerm.Map", 1, func() { m = PixelTerm{}.Map(a, b) })
	defer m.MustDrop()
	vals := torchrt.Float32s(m)
	for i, v := range vals {
		want := 0.0
		if i == 5*size+3 {
			want = 0.2
		}
		if math.Abs(float64(v)-want) > 1e-5 {
			t.Fatalf("pixel %d: %g, want %g", i, v, want)
		}
	}
}

func TestTermsAreSummedWithTheirScales(t *testing.T) {
	defer torchrt.Pin()()
	const size = 32
	x := ts.MustRandn([]int64{1, 3, size, size}, gotch.Float, gotch.CPU)
	defer x.MustDrop()
	y := x.MustAddScalar(ts.FloatScalar(0.5), false)
	defer y.MustDrop()
	cfg := Config{Sigma: 1, Truncate: 4, PoolKernel: 1, PoolTimes: 0}
	single, err := NewTerms(cfg, "pixel", []Term{PixelTerm{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	double, err := NewTerms(cfg, "pixel+pixel", []Term{PixelTerm{}, PixelTerm{}}, []float64{0.5, 2})
	if err != nil {
		t.Fatal(err)
	}
	r1, err := single.Score(x, y, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Free()
	r2, err := double.Score(x, y, true)
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Free()
	if len(r2.LayerMaps) != 2 {
		t.Fatalf("%d parts, want one per term", len(r2.LayerMaps))
	}
	// 1/0.5 + 1/2 = 2.5 times the single term.
	if got, want := r2.Scores[0], 2.5*r1.Scores[0]; math.Abs(got-want) > 1e-4*want || want == 0 {
		t.Fatalf("scaled sum scores %g, want %g", got, want)
	}
}

func TestParseKind(t *testing.T) {
	for _, c := range []struct{ in, want, err string }{
		{"resnet", "resnet", ""},
		{"ssim+ae", "ae+ssim", ""},
		{"pixel+ae+pixel", "ae+pixel", ""},
		{"ae+lpips", "", `unknown term "lpips"`},
		{"", "", `unknown term ""`},
	} {
		got, err := CanonicalKind(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want one containing %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestNewTermsRejectsBadScales(t *testing.T) {
	if _, err := NewTerms(ReferenceConfig, "pixel", []Term{PixelTerm{}}, []float64{0}); err == nil {
		t.Fatal("a zero scale was accepted")
	}
	if _, err := NewTerms(ReferenceConfig, "pixel", []Term{PixelTerm{}}, []float64{1, 2}); err == nil {
		t.Fatal("two scales for one term were accepted")
	}
	if _, err := NewTerms(ReferenceConfig, "", nil, nil); err == nil {
		t.Fatal("a scorer without terms was accepted")
	}
}

// ScoreGroups hands each image's group to the terms that take groups, Score
// hands them none, and a wrong number of groups is an error.
func TestScoreGroupsReachGroupTerms(t *testing.T) {
	defer torchrt.Pin()()
	x := ts.MustZeros([]int64{2, 3, 8, 8}, gotch.Float, gotch.CPU)
	defer x.MustDrop()
	var seen [][]string
	// The map is 1 where an image's group is "b", else 0.
	term := GroupMapTerm{Label: "g", F: func(images, _ *ts.Tensor, groups []string) *ts.Tensor {
		seen = append(seen, groups)
		v := make([]float32, 2*8*8)
		for i, g := range groups {
			if g == "b" {
				for j := range 64 {
					v[i*64+j] = 1
				}
			}
		}
		return ts.MustOfSlice(v).MustView([]int64{2, 1, 8, 8}, true)
	}}
	sc, err := NewTerms(Config{Sigma: 1, Truncate: 4, PoolKernel: 1, PoolTimes: 0}, "g", []Term{term, PixelTerm{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := sc.ScoreGroups(x, x, []string{"a", "b"}, false)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Free()
	if r.Scores[0] != 0 || math.Abs(r.Scores[1]-1) > 1e-5 {
		t.Fatalf("scores %v, want 0 for group a and 1 for group b", r.Scores)
	}
	r0, err := sc.Score(x, x, false)
	if err != nil {
		t.Fatal(err)
	}
	r0.Free()
	if len(seen) != 2 || len(seen[0]) != 2 || seen[1] != nil {
		t.Fatalf("the term saw groups %q, want [a b] then none", seen)
	}
	if _, err := sc.ScoreGroups(x, x, []string{"a"}, false); err == nil {
		t.Fatal("one group for two images: no error")
	}
}
