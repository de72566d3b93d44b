package quality

import (
	"image"
	"image/color"
	"math"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
)

// The resized map agrees with libtorch's bilinear upsampling
// (align_corners=False; halving too) to float precision, and keeps a
// constant map constant.
func TestResizeBilinearMatchesLibtorch(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct{ from, to int }{{2, 4}, {3, 8}, {16, 40}, {1, 5}, {8, 8}, {8, 4}} {
		m := make([]float32, c.from*c.from)
		for i := range m {
			m[i] = rng.Float32()
		}
		got := resizeBilinear(m, c.from, c.to)
		var want []float32
		torchrt.NoGrad(func() {
			x := ts.MustOfSlice(m).MustView([]int64{1, 1, int64(c.from), int64(c.from)}, true)
			up := x.MustUpsampleBilinear2d([]int64{int64(c.to), int64(c.to)}, false, nil, nil, true)
			want = torchrt.Float32s(up)
			up.MustDrop()
		})
		for i := range want {
			if math.Abs(float64(got[i]-want[i])) > 1e-5 {
				t.Fatalf("%d -> %d: value %d is %g, libtorch %g", c.from, c.to, i, got[i], want[i])
			}
		}
	}
	for _, v := range resizeBilinear([]float32{2, 2, 2, 2}, 2, 7) {
		if v != 2 {
			t.Fatalf("a constant map upsampled to %g", v)
		}
	}
}

// At a larger pixel size the mask is read from its file at that size, so a
// one-pixel line keeps its true area, and the map is upsampled to match.
func TestPixelsOfReadsTheMaskAtThePixelSize(t *testing.T) {
	dir := t.TempDir()
	const full = 64
	img := image.NewGray(image.Rect(0, 0, full, full))
	for x := 8; x < 56; x++ {
		img.SetGray(x, 30, color.Gray{Y: 255})
	}
	maskPath := filepath.Join(dir, "000_mask.png")
	filetest.WritePNG(t, maskPath, img)
	s := datasets.Sample{MaskPath: maskPath, Anomalous: true}
	small, err := datasets.LoadMask(s, 16)
	if err != nil {
		t.Fatal(err)
	}
	it := datasets.Item{Sample: s, Mask: small}
	m := make([]float32, 16*16)
	same, err := Options{}.pixelsOf(it, m, 16)
	if err != nil || same.side != 16 || len(same.scores) != 16*16 || &same.mask[0] != &small[0] {
		t.Fatalf("no pixel size: side %d, %d scores, %v", same.side, len(same.scores), err)
	}
	px, err := Options{PixelSize: full}.pixelsOf(it, m, 16)
	if err != nil {
		t.Fatal(err)
	}
	if px.side != full || len(px.scores) != full*full || len(px.mask) != full*full {
		t.Fatalf("side %d, %d scores, %d mask pixels", px.side, len(px.scores), len(px.mask))
	}
	if n := count(px.mask); n != 48 {
		t.Fatalf("the line covers %d pixels at %d px, want its 48", n, full)
	}
	if _, err := (Options{PixelSize: full}).pixelsOf(datasets.Item{Sample: datasets.Sample{MaskPath: filepath.Join(dir, "missing.png")}}, m, 16); err == nil {
		t.Fatal("a missing mask file gave no error")
	}
}

func count(mask []bool) int {
	n := 0
	for _, v := range mask {
		if v {
			n++
		}
	}
	return n
}
