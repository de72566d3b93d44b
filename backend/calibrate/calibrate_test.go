package calibrate

import (
	"math/rand/v2"
	"reflect"
	"testing"
)

func TestCorruptChangesOnlyTheMaskedPixels(t *testing.T) {
	const size = 32
	r := rand.New(rand.NewPCG(1, 2))
	var images []Image
	for i := 0; i < 6; i++ {
		im := make(Image, 3*size*size)
		for k := range im {
			im[k] = float32(r.NormFloat64())
		}
		images = append(images, im)
	}
	bad, masks := Corrupt(images, size, 7)
	again, masks2 := Corrupt(images, size, 7)
	if !reflect.DeepEqual(bad, again) || !reflect.DeepEqual(masks, masks2) {
		t.Fatal("the same seed gave different corruptions")
	}
	hw := size * size
	for i := range images {
		inMask, changed := 0, 0
		for p := 0; p < hw; p++ {
			diff := false
			for ch := 0; ch < 3; ch++ {
				if bad[i][ch*hw+p] != images[i][ch*hw+p] {
					diff = true
				}
			}
			if masks[i][p] {
				inMask++
			}
			if diff {
				changed++
				if !masks[i][p] {
					t.Fatalf("image %d: pixel %d changed outside the mask", i, p)
				}
			}
		}
		// 8-25% of the side in each direction.
		if inMask < 1 || inMask > hw/10 {
			t.Fatalf("image %d: mask of %d pixels", i, inMask)
		}
		if changed < inMask/2 {
			t.Fatalf("image %d: only %d of %d masked pixels changed", i, changed, inMask)
		}
	}
	// Image 2 carries the scratch: a thin curve, so no 5x5 block is all
	// defect, yet long enough to be seen.
	scratchMask := masks[2]
	n := 0
	for _, m := range scratchMask {
		if m {
			n++
		}
	}
	if n < size/4 {
		t.Fatalf("scratch of %d pixels", n)
	}
	for y := 0; y+5 <= size; y++ {
		for x := 0; x+5 <= size; x++ {
			full := true
			for dy := 0; dy < 5 && full; dy++ {
				for dx := 0; dx < 5; dx++ {
					if !scratchMask[(y+dy)*size+x+dx] {
						full = false
						break
					}
				}
			}
			if full {
				t.Fatalf("the scratch fills the 5x5 block at (%d, %d)", x, y)
			}
		}
	}
}
