package seghead

import (
	"math"
	"math/rand/v2"
)

// The head learns what a defect is from defects made here. They are generic
// on purpose (DRAEM's recipe, widened): a smooth random region or a thin
// stroke, filled with another image's content, with the image's own colours
// shifted, with its detail smoothed away, or with a shifted copy of itself.
// None of them is the shape or colour of a particular defect family, so the
// head is asked to learn "unlike this surface", not "looks like a scratch".

// Crop is an RGB crop in [0, 1], channel-major (3*Side*Side values).
type Crop struct {
	Side int
	Pix  []float32
}

// Anomaly kinds, by how the defective region is filled.
const (
	fillForeign = iota // another image's content, blended
	fillShift          // the region's own colours shifted
	fillSmooth         // the region's detail smoothed away
	fillSelf           // a shifted copy of the crop itself
	fillKinds
)

// minChange is the least colour change (mean over channels) for a pixel to
// count as defective in the target mask: a defect the eye cannot see is not
// asked of the head.
const minChange = 0.04

// Paint paints one synthetic defect into c (in place), using donor (another
// training image's crop of the same side) as foreign content, and returns the
// target mask (Side*Side, 1 where the pixel is defective).
func Paint(c, donor Crop, r *rand.Rand) []float32 {
	n := c.Side
	orig := append([]float32(nil), c.Pix...)
	region := make([]float32, n*n) // blend weight in [0, 1]
	if r.IntN(3) == 0 {
		strokeRegion(region, n, r)
	} else {
		blobRegion(region, n, r)
	}
	kind := r.IntN(fillKinds)
	beta := float32(0.5 + 0.5*r.Float64()) // opacity of the fill
	var gain, offset [3]float32
	for k := range gain {
		gain[k] = float32(0.4 + 1.2*r.Float64())
		offset[k] = float32((r.Float64() - 0.5) * 0.6)
	}
	dx, dy := r.IntN(n), r.IntN(n)
	var blurred []float32
	if kind == fillSmooth {
		blurred = boxBlur(orig, n, max(2, n/16))
	}
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			a := region[y*n+x] * beta
			if a == 0 {
				continue
			}
			for k := 0; k < 3; k++ {
				i := k*n*n + y*n + x
				v := orig[i]
				var f float32
				switch kind {
				case fillForeign:
					f = donor.Pix[i]
				case fillShift:
					f = v*gain[k] + offset[k]
				case fillSmooth:
					f = blurred[i]
				case fillSelf:
					f = orig[k*n*n+((y+dy)%n)*n+(x+dx)%n]
				}
				c.Pix[i] = clamp01(v*(1-a) + f*a)
			}
		}
	}
	mask := make([]float32, n*n)
	for p := 0; p < n*n; p++ {
		d := float32(0)
		for k := 0; k < 3; k++ {
			d += abs32(c.Pix[k*n*n+p] - orig[k*n*n+p])
		}
		if region[p] >= 0.5 && d/3 >= minChange {
			mask[p] = 1
		}
	}
	return mask
}

// blobRegion marks a smooth random region: low-frequency noise (a coarse
// random grid, bilinearly upsampled) above a threshold, kept to a window.
func blobRegion(region []float32, n int, r *rand.Rand) {
	g := 2 + r.IntN(5) // grid cells per side
	grid := make([]float64, (g+1)*(g+1))
	for i := range grid {
		grid[i] = r.Float64()
	}
	thr := 0.6 + 0.25*r.Float64()
	// a window, so that the region is a defect and not half the crop
	w := (0.15 + 0.35*r.Float64()) * float64(n)
	cx, cy := r.Float64()*float64(n), r.Float64()*float64(n)
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			if math.Abs(float64(x)-cx) > w/2 || math.Abs(float64(y)-cy) > w/2 {
				continue
			}
			u, v := float64(x)/float64(n)*float64(g), float64(y)/float64(n)*float64(g)
			i, j := int(u), int(v)
			fu, fv := u-float64(i), v-float64(j)
			at := func(a, b int) float64 { return grid[b*(g+1)+a] }
			val := (1-fu)*(1-fv)*at(i, j) + fu*(1-fv)*at(i+1, j) + (1-fu)*fv*at(i, j+1) + fu*fv*at(i+1, j+1)
			if val > thr {
				region[y*n+x] = float32(math.Min(1, (val-thr)/0.05))
			}
		}
	}
	// never empty: a small disc where the noise stayed below the threshold
	for _, v := range region {
		if v > 0 {
			return
		}
	}
	rad := 0.04*float64(n) + 2
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			if math.Hypot(float64(x)-cx, float64(y)-cy) <= rad {
				region[y*n+x] = 1
			}
		}
	}
}

// strokeRegion marks a thin random walk one to three pixels wide.
func strokeRegion(region []float32, n int, r *rand.Rand) {
	x, y := r.Float64()*float64(n), r.Float64()*float64(n)
	ang := r.Float64() * 2 * math.Pi
	width := 0.5 + r.Float64()
	steps := n/4 + r.IntN(n/2+1)
	turn := 0.05 + 0.5*r.Float64()
	for s := 0; s < steps; s++ {
		ang += (r.Float64() - 0.5) * turn
		x += math.Cos(ang)
		y += math.Sin(ang)
		for oy := -2; oy <= 2; oy++ {
			for ox := -2; ox <= 2; ox++ {
				px, py := int(x)+ox, int(y)+oy
				if px < 0 || py < 0 || px >= n || py >= n {
					continue
				}
				d := math.Hypot(float64(px)+0.5-x, float64(py)+0.5-y)
				if cov := float32(math.Min(1, width+0.5-d)); cov > region[py*n+px] {
					region[py*n+px] = cov
				}
			}
		}
	}
}

// boxBlur is a k x k mean filter per channel (clamped borders).
func boxBlur(pix []float32, n, k int) []float32 {
	out := make([]float32, len(pix))
	h := k / 2
	for c := 0; c < 3; c++ {
		plane := pix[c*n*n : (c+1)*n*n]
		for y := 0; y < n; y++ {
			for x := 0; x < n; x++ {
				var sum float32
				cnt := 0
				for yy := max(0, y-h); yy <= min(n-1, y+h); yy++ {
					for xx := max(0, x-h); xx <= min(n-1, x+h); xx++ {
						sum += plane[yy*n+xx]
						cnt++
					}
				}
				out[c*n*n+y*n+x] = sum / float32(cnt)
			}
		}
	}
	return out
}

func clamp01(v float32) float32 { return min(max(v, 0), 1) }

func abs32(v float32) float32 {
	if v < 0 {
		return -v
	}
	return v
}
