package patchmemory

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/internal/torchtest"
	"github.com/diad-project/diad/backend/layers"
	"github.com/diad-project/diad/backend/torchrt"
)

// tiny is a memory small enough for tests; the chunks are uneven on purpose
// so that the tiled search has partial tiles.
var tiny = Config{Stride: 2, Scales: []int64{1, 2}, Patch: 3, Dims: 8, Size: 300, QueryChunk: 7, BankChunk: 50}

func TestConfigValidate(t *testing.T) {
	if err := DemoConfig.Validate(); err != nil {
		t.Fatalf("demo: %v", err)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("no memory: %v", err)
	}
	for _, change := range []func(*Config){
		func(c *Config) { c.Stride = 0 },
		func(c *Config) { c.Scales = nil },
		func(c *Config) { c.Scales = []int64{1, 0} },
		func(c *Config) { c.Patch = 4 },
		func(c *Config) { c.Dims = c.FeatureDims() + 1 },
		func(c *Config) { c.QueryChunk = 0 },
		func(c *Config) { c.Whiten = -0.1 },
		func(c *Config) { c.Whiten = 1.5 },
		func(c *Config) { c.Whiten = math.NaN() },
	} {
		c := tiny
		c.Scales = append([]int64(nil), tiny.Scales...)
		change(&c)
		if c.Validate() == nil {
			t.Errorf("%+v: no error", c)
		}
	}
	if got := (Config{Stride: 4, Scales: []int64{1, 2, 8}}).Multiple(); got != 8 {
		t.Errorf("multiple %d, want 8", got)
	}
	if got := (Config{Stride: 3, Scales: []int64{2}}).Multiple(); got != 6 {
		t.Errorf("multiple %d, want 6", got)
	}
}

// stripes are normal images: diagonal colour stripes at a random phase,
// ImageNet-normalised [n, 3, side, side].
func stripes(rng *rand.Rand, n, side int) []float32 {
	mean := []float32{0.485, 0.456, 0.406}
	std := []float32{0.229, 0.224, 0.225}
	out := make([]float32, 0, n*3*side*side)
	for i := 0; i < n; i++ {
		phase := rng.Float64() * 2 * math.Pi
		for c := 0; c < 3; c++ {
			for y := 0; y < side; y++ {
				for x := 0; x < side; x++ {
					v := 0.5 + 0.3*math.Sin(float64(x+y)*0.6+phase+float64(c))
					out = append(out, (float32(v)-mean[c])/std[c])
				}
			}
		}
	}
	return out
}

func newMemory(t testing.TB, c Config) (*Memory, *layers.Store) {
	t.Helper()
	store := layers.NewStore(gotch.CPU)
	var m *Memory
	err := torchrt.Do(func() error {
		var err error
		m, err = New(store.Root().Sub("patch_memory"), c)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m, store
}

// build fills m from n stripe images of side px, in batches of 3.
func build(t *testing.T, m *Memory, n, side int, seed uint64) {
	t.Helper()
	pix := stripes(rand.New(rand.NewPCG(seed, 1)), n, side)
	per := 3 * side * side
	err := m.Build(func(yield func(Batch) error) error {
		for i := 0; i < n; i += 3 {
			k := min(3, n-i)
			x := ts.MustOfSlice(pix[i*per:(i+k)*per]).MustView([]int64{int64(k), 3, int64(side), int64(side)}, true)
			err := yield(Batch{Images: x})
			x.MustDrop()
			if err != nil {
				return err
			}
		}
		return nil
	}, n, 7)
	if err != nil {
		t.Fatal(err)
	}
}

// A defect of a colour the stripes never have stands out of the map: the
// map's smallest value inside it is above its largest value well away from
// it, and a normal image's map is low everywhere.
func TestMapMarksAForeignPatch(t *testing.T) {
	t.Run("all rows fit the components", func(t *testing.T) { requireForeignPatchStandsOut(t, tiny) })
	t.Run("a sample of rows fits them", func(t *testing.T) {
		defer func(n int64) { pcaRows = n }(pcaRows)
		pcaRows = 100
		requireForeignPatchStandsOut(t, tiny)
	})
	t.Run("whitened", func(t *testing.T) {
		c := tiny
		c.Whiten = 0.5
		requireForeignPatchStandsOut(t, c)
	})
}

func TestWhitening(t *testing.T) {
	// Eigenvalues ascending 1, 4, 16; two kept: scales 1 and 2, and the
	// residual's (variance 1) 4 at full whitening, their square roots at half.
	for _, tc := range []struct {
		w    float64
		want []float32
	}{{1, []float32{1, 2, 4}}, {0.5, []float32{1, float32(math.Sqrt(2)), 2}}, {0, []float32{1, 1, 1}}} {
		got := whitening([]float64{1, 4, 16}, 2, tc.w)
		for i := range tc.want {
			if math.Abs(float64(got[i]-tc.want[i])) > 1e-5 {
				t.Fatalf("whiten %v: scales %v, want %v", tc.w, got, tc.want)
			}
		}
	}
}

// requireForeignPatchStandsOut builds a memory of config c from stripes and
// requires a green square on a stripe image to stand out of its map.
func requireForeignPatchStandsOut(t *testing.T, c Config) {
	const side = 32
	c.Size = 1000 // of the 9 images' 2,304 locations
	m, store := newMemory(t, c)
	defer store.Free()
	if m.Built() {
		t.Fatal("a new memory says it is built")
	}
	build(t, m, 9, side, 1)
	if !m.Built() {
		t.Fatal("a built memory says it is not")
	}
	pix := stripes(rand.New(rand.NewPCG(99, 1)), 2, side)
	// Image 1 gets a saturated green square at [12, 20) x [12, 20).
	for c, v := range []float32{-2, 2, -1.8} {
		for y := 12; y < 20; y++ {
			for x := 12; x < 20; x++ {
				pix[3*side*side+c*side*side+y*side+x] = v
			}
		}
	}
	var maps []float32
	err := torchrt.Do(func() error {
		x := ts.MustOfSlice(pix).MustView([]int64{2, 3, side, side}, true)
		defer x.MustDrop()
		mp := m.Map(x, x)
		defer mp.MustDrop()
		if got := mp.MustSize(); got[0] != 2 || got[1] != 1 || got[2] != side || got[3] != side {
			t.Fatalf("map shape %v", got)
		}
		maps = torchrt.Float32s(mp)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	normal, defect := maps[:side*side], maps[side*side:]
	insideMin, outsideMax, normalMax := float32(math.Inf(1)), float32(0), float32(0)
	for y := 0; y < side; y++ {
		for x := 0; x < side; x++ {
			p := y*side + x
			normalMax = max(normalMax, normal[p])
			switch {
			case y >= 14 && y < 18 && x >= 14 && x < 18:
				insideMin = min(insideMin, defect[p])
			case y < 6 || y >= 26 || x < 6 || x >= 26:
				outsideMax = max(outsideMax, defect[p])
			}
		}
	}
	if !(insideMin > 2*outsideMax) || !(insideMin > 2*normalMax) {
		t.Fatalf("defect not marked: min inside %.3f, max far outside %.3f, max on a normal image %.3f", insideMin, outsideMax, normalMax)
	}
}

// The tiled search finds the same nearest distances as a plain search in Go,
// over the whole bank and over a range of it (a group's rows).
func TestNearestMatchesBruteForce(t *testing.T) {
	m, store := newMemory(t, tiny)
	defer store.Free()
	build(t, m, 6, 16, 2)
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 40
	q := make([]float32, n*tiny.Dims)
	for i := range q {
		q[i] = float32(rng.NormFloat64())
	}
	for _, r := range [][2]int64{{0, tiny.Size}, {3, tiny.Size - 7}} {
		var got, bank []float32
		err := torchrt.Do(func() error {
			qt := ts.MustOfSlice(q).MustView([]int64{n, tiny.Dims}, true)
			defer qt.MustDrop()
			var d *ts.Tensor
			torchrt.NoGrad(func() { d = m.nearest(qt, nil, r[0], r[1]) })
			defer d.MustDrop()
			got = torchrt.Float32s(d)
			bank = torchrt.Float32s(m.bank)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		dims := int(tiny.Dims)
		for i := 0; i < n; i++ {
			best := math.Inf(1)
			for j := int(r[0]); j < int(r[0]+r[1]); j++ {
				s := 0.0
				for k := 0; k < dims; k++ {
					d := float64(q[i*dims+k] - bank[j*dims+k])
					s += d * d
				}
				best = min(best, s)
			}
			if want := math.Sqrt(best); math.Abs(float64(got[i])-want) > 1e-3*(1+want) {
				t.Fatalf("rows %v, query %d: tiled %v, brute force %v", r, i, got[i], want)
			}
		}
	}
}

// The same images and seed give the same memory; another seed draws
// another one.
func TestBuildIsDeterministic(t *testing.T) {
	bankOf := func(seed uint64) []float32 {
		m, store := newMemory(t, tiny)
		defer store.Free()
		build(t, m, 6, 16, seed)
		var b []float32
		if err := torchrt.Do(func() error { b = torchrt.Float32s(m.bank); return nil }); err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b, c := bankOf(5), bankOf(5), bankOf(6)
	same, differ := true, false
	for i := range a {
		same = same && a[i] == b[i]
		differ = differ || a[i] != c[i]
	}
	if !same || !differ {
		t.Fatalf("same seed same bank: %v; other seed other bank: %v", same, differ)
	}
}

// Bad input is an error, not a crash: no images, a wrong image size, an
// error from the batches.
func TestBuildAndMapRejectBadInput(t *testing.T) {
	m, store := newMemory(t, tiny)
	defer store.Free()
	if err := m.Build(func(func(Batch) error) error { return nil }, 0, 1); err == nil {
		t.Error("no images: no error")
	}
	odd := func(yield func(Batch) error) error {
		x := ts.MustZeros([]int64{1, 3, 15, 15}, gotch.Float, gotch.CPU)
		defer x.MustDrop()
		return yield(Batch{Images: x})
	}
	if err := m.Build(odd, 1, 1); err == nil {
		t.Error("15 px images with stride 2: no error")
	}
	err := torchrt.Do(func() error {
		x := ts.MustZeros([]int64{1, 3, 16, 16}, gotch.Float, gotch.CPU)
		defer x.MustDrop()
		_, err := m.mapOf(x, nil)
		return err
	})
	if err == nil {
		t.Error("map of an empty memory: no error")
	}
}

// Building and mapping free every tensor they make: a long loop of maps
// does not grow the live tensor count.
func TestMapFreesWhatItMakes(t *testing.T) {
	t.Run("plain", func(t *testing.T) { requireMapFreesWhatItMakes(t, tiny) })
	t.Run("whitened", func(t *testing.T) {
		c := tiny
		c.Whiten = 0.25
		requireMapFreesWhatItMakes(t, c)
	})
}

func requireMapFreesWhatItMakes(t *testing.T, c Config) {
	m, store := newMemory(t, c)
	defer store.Free()
	torchtest.RequireNoLeak(t, "build", 0, func() { build(t, m, 6, 16, 1) })
	coreset := c
	coreset.Coreset = true
	mc, storeC := newMemory(t, coreset)
	defer storeC.Free()
	torchtest.RequireNoLeak(t, "coreset build", 0, func() { build(t, mc, 6, 16, 1) })
	pix := stripes(rand.New(rand.NewPCG(1, 2)), 2, 16)
	torchtest.RequireNoLeak(t, "map", 0, func() {
		err := torchrt.Do(func() error {
			x := ts.MustOfSlice(pix).MustView([]int64{2, 3, 16, 16}, true)
			defer x.MustDrop()
			for i := 0; i < 50; i++ {
				m.Map(x, x).MustDrop()
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}
