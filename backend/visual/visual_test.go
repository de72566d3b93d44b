package visual

import (
	"image"
	"image/color"
	"testing"
)

func TestDivergingIsSignedAndClamped(t *testing.T) {
	zero, pos, neg := Diverging(0, 3), Diverging(3, 3), Diverging(-3, 3)
	if zero.R > 0x30 || zero.G > 0x30 || zero.B > 0x30 {
		t.Fatalf("0 should be dark, got %v", zero)
	}
	if pos.R <= pos.B || neg.B <= neg.R {
		t.Fatalf("+limit %v should be warm, -limit %v cool", pos, neg)
	}
	if Diverging(30, 3) != pos || Diverging(-30, 3) != neg {
		t.Fatal("values beyond the limit are not clamped")
	}
	half := Diverging(1.5, 3)
	if !(zero.R < half.R && half.R < pos.R) {
		t.Fatalf("not monotonic: %v %v %v", zero, half, pos)
	}
}

func TestLatentChannelsTilesEachChannel(t *testing.T) {
	const c, h, w = 4, 2, 3
	latent := make([]float32, c*h*w)
	for ch := 0; ch < c; ch++ {
		for i := 0; i < h*w; i++ {
			latent[ch*h*w+i] = float32(ch-1) * 3 // channels -3, 0, 3, 6
		}
	}
	latent[2*h*w+1*w+2] = -3 // channel 2, y 1, x 2
	img := LatentChannels(latent, c, h, w, 3)
	if b := img.Bounds(); b.Dx() != 2*w+1 || b.Dy() != 2*h+1 {
		t.Fatalf("mosaic %v, want 2x2 tiles with a 1 px gap", b)
	}
	// Tile origins: channel 0 (0,0), 1 (w+1,0), 2 (0,h+1), 3 (w+1,h+1).
	checks := []struct {
		x, y int
		want color.RGBA
	}{
		{0, 0, Diverging(-3, 3)}, {w + 1, 0, Diverging(0, 3)}, {0, h + 1, Diverging(3, 3)},
		{w + 1, h + 1, Diverging(6, 3)}, {2, h + 2, Diverging(-3, 3)}, {w, 0, color.RGBA{}},
	}
	for _, c := range checks {
		if got := img.RGBAAt(c.x, c.y); got != c.want {
			t.Errorf("pixel (%d,%d) = %v, want %v", c.x, c.y, got, c.want)
		}
	}
}

func TestLatentLimitRoundsUp(t *testing.T) {
	for _, c := range []struct{ in, want float64 }{{0, 0.25}, {0.3, 0.5}, {1, 1}, {2.7, 3}, {3.5, 5}, {42, 42}} {
		if got := LatentLimit(c.in); got != c.want {
			t.Errorf("LatentLimit(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestAbsQuantileIgnoresOutliers(t *testing.T) {
	values := make([]float32, 1000)
	for i := range values {
		values[i] = float32(i%10) / 10 * float32(1-2*(i%2)) // |v| up to 0.9, both signs
	}
	values[7] = -50 // one outlier
	if q := AbsQuantile(values, 0.99); q != float64(float32(0.9)) {
		t.Fatalf("0.99 quantile %v, want 0.9 (the outlier clamped)", q)
	}
	if q := AbsQuantile(values, 1); q != 50 {
		t.Fatalf("quantile 1 = %v, want the largest |v|", q)
	}
	if AbsQuantile(nil, 0.99) != 0 {
		t.Fatal("empty input")
	}
}

// A 4x4 block in a 6x6 mask: its 12 border pixels are drawn, its 4 inner
// pixels and everything outside it are left alone.
func TestMaskOutlineDrawsTheBorderOnly(t *testing.T) {
	img := image.NewRGBA(image.Rect(0, 0, 6, 6))
	mask := make([]bool, 36)
	for y := 1; y <= 4; y++ {
		for x := 1; x <= 4; x++ {
			mask[y*6+x] = true
		}
	}
	cyan := color.RGBA{0, 229, 255, 255}
	MaskOutline(img, mask, cyan)
	n := 0
	for y := 0; y < 6; y++ {
		for x := 0; x < 6; x++ {
			drawn := img.RGBAAt(x, y) == cyan
			border := mask[y*6+x] && (x == 1 || x == 4 || y == 1 || y == 4)
			if drawn != border {
				t.Fatalf("pixel %d,%d drawn %v, on the border %v", x, y, drawn, border)
			}
			if drawn {
				n++
			}
		}
	}
	if n != 12 {
		t.Fatalf("%d outline pixels, want 12", n)
	}
	MaskOutline(img, mask[:5], color.RGBA{255, 0, 0, 255}) // wrong size: nothing
	if img.RGBAAt(0, 0) != (color.RGBA{}) {
		t.Fatal("a mask of the wrong size drew")
	}
}
