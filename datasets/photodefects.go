package datasets

import (
	"math"
	"math/rand/v2"
)

// The photo set's defects are painted on the photograph's own pixels, at a
// scale relative to the image (the sizes below are fractions of its side, or
// pixels at 256 px), and each returns the pixels it changed visibly: the mask.

// maskAlpha is the paint opacity from which a pixel counts as defective.
const maskAlpha = 0.2

// photoPainter paints one defect around (cx, cy) and records its mask.
type photoPainter struct {
	c      *canvas
	r      *rand.Rand
	mask   []bool
	cx, cy float64
	px     float64 // one pixel at 256 px, in this image's pixels
}

// blend mixes f's colour into pixel (x, y) with opacity a.
func (p *photoPainter) blend(x, y int, a float64, f func(v [3]float64) [3]float64) {
	n := p.c.n
	if x < 0 || y < 0 || x >= n || y >= n || a <= 0 {
		return
	}
	a = math.Min(a, 1)
	i := 3 * (y*n + x)
	old := [3]float64{p.c.pix[i], p.c.pix[i+1], p.c.pix[i+2]}
	nv := f(old)
	for k := 0; k < 3; k++ {
		p.c.pix[i+k] = old[k]*(1-a) + nv[k]*a
	}
	if a >= maskAlpha {
		p.mask[y*n+x] = true
	}
}

// side is a fraction of the image side in pixels.
func (p *photoPainter) side(f float64) float64 { return f * float64(p.c.n) }

// surfaceDefects paint on any picture; the parts' own two are paintPartDefect.
var surfaceDefects = map[string]func(p *photoPainter){
	"scratch":       (*photoPainter).scratch,
	"crack":         (*photoPainter).crack,
	"hole":          (*photoPainter).hole,
	"stain":         (*photoPainter).stain,
	"contamination": (*photoPainter).contamination,
	"color":         (*photoPainter).color,
}

// paintPhotoDefect paints one defect of the named kind into c and returns its mask.
func paintPhotoDefect(c *canvas, defect string, object bool, r *rand.Rand) []bool {
	lo, span := 0.15, 0.7
	if object {
		lo, span = 0.22, 0.56
	}
	n := c.n
	p := &photoPainter{c: c, r: r, mask: make([]bool, n*n), px: float64(n) / 256}
	p.cx, p.cy = p.side(lo+span*r.Float64()), p.side(lo+span*r.Float64())
	if defect == "missing" || defect == "misplaced" {
		// (the parts' painter draws its own places; the two draws above
		// stay, so that a seed gives the same set as it always did)
		return paintPartDefect(c, defect, lo, span, r)
	}
	if paint, ok := surfaceDefects[defect]; ok {
		paint(p)
	}
	return p.mask
}

// scratch is a thin, slightly curved line, lighter or darker than the surface.
func (p *photoPainter) scratch() {
	r := p.r
	length := p.side(0.18 + 0.25*r.Float64())
	ang := r.Float64() * math.Pi
	bend := (r.Float64() - 0.5) * 0.5
	width := (1 + 1.5*r.Float64()) * p.px
	shift := 0.3 + 0.25*r.Float64()
	if r.IntN(3) == 0 {
		shift = -shift
	}
	strokeLine(curve(p.cx, p.cy, ang, bend, length, p.c.n), width, p.c.n, func(x, y int, a float64) {
		p.blend(x, y, a, func(v [3]float64) [3]float64 { return [3]float64{v[0] + shift, v[1] + shift, v[2] + shift} })
	})
}

// crack is a dark random walk with a branch.
func (p *photoPainter) crack() {
	r := p.r
	width := (1 + r.Float64()) * p.px
	walk := func(x, y, ang float64, steps int) []point {
		pts := []point{{x, y}}
		for k := 0; k < steps; k++ {
			ang += (r.Float64() - 0.5) * 0.9
			x += 2 * p.px * math.Cos(ang)
			y += 2 * p.px * math.Sin(ang)
			pts = append(pts, point{x, y})
		}
		return pts
	}
	ang := r.Float64() * 2 * math.Pi
	steps := int((0.15 + 0.2*r.Float64()) * 256 / 2)
	trunk := walk(p.cx, p.cy, ang, steps)
	b := trunk[len(trunk)/2]
	branch := walk(b.x, b.y, ang+(r.Float64()-0.5)*2, steps/3)
	dark := func(x, y int, a float64) {
		p.blend(x, y, a, func(v [3]float64) [3]float64 { return [3]float64{v[0] * 0.2, v[1] * 0.2, v[2] * 0.2} })
	}
	strokeLine(trunk, width, p.c.n, dark)
	strokeLine(branch, width*0.8, p.c.n, dark)
}

// hole is a dark irregular opening with a lighter torn rim.
func (p *photoPainter) hole() {
	rad := p.side(0.03 + 0.04*p.r.Float64())
	forBlob(p.c.n, p.cx, p.cy, rad*1.25, newBlob(p.r), func(x, y int, d float64) {
		switch {
		case d <= 0.8:
			depth := 0.03 + 0.05*d
			p.blend(x, y, 1, func([3]float64) [3]float64 { return [3]float64{depth, depth, depth * 1.1} })
		case d <= 1:
			p.blend(x, y, 0.6, func(v [3]float64) [3]float64 { return [3]float64{v[0] + 0.25, v[1] + 0.22, v[2] + 0.2} })
		}
	})
}

// stainTints are rust, oil, water and paint.
var stainTints = [][3]float64{{0.45, 0.22, 0.08}, {0.1, 0.09, 0.07}, {0.75, 0.7, 0.35}, {0.2, 0.35, 0.15}}

// stain is a soft irregular tint.
func (p *photoPainter) stain() {
	r := p.r
	tint := stainTints[r.IntN(len(stainTints))]
	rad := p.side(0.05 + 0.07*r.Float64())
	strength := 0.55 + 0.3*r.Float64()
	forBlob(p.c.n, p.cx, p.cy, rad, newBlob(r), func(x, y int, d float64) {
		p.blend(x, y, strength*smooth(1, 0.55, d), func(v [3]float64) [3]float64 {
			l := (v[0] + v[1] + v[2]) / 3
			return [3]float64{tint[0] * (0.6 + l), tint[1] * (0.6 + l), tint[2] * (0.6 + l)}
		})
	})
}

// contamination is foreign matter: a few specks and a fibre in a colour the
// surface lacks.
func (p *photoPainter) contamination() {
	r := p.r
	col := [3]float64{r.Float64(), r.Float64(), r.Float64()}
	if r.IntN(2) == 0 {
		col = [3]float64{0.95, 0.93, 0.85}
	}
	paint := func(x, y int, a float64) {
		p.blend(x, y, a, func([3]float64) [3]float64 { return col })
	}
	for k, m := 0, 3+r.IntN(5); k < m; k++ {
		sx := p.cx + p.side((r.Float64()-0.5)*0.12)
		sy := p.cy + p.side((r.Float64()-0.5)*0.12)
		rad := (1.5 + 2.5*r.Float64()) * p.px
		forBlob(p.c.n, sx, sy, rad, newBlob(r), func(x, y int, d float64) { paint(x, y, smooth(1, 0.7, d)) })
	}
	fibre := curve(p.cx, p.cy, r.Float64()*math.Pi, (r.Float64()-0.5)*2, p.side(0.06+0.08*r.Float64()), p.c.n)
	strokeLine(fibre, 1.2*p.px, p.c.n, paint)
}

// color is a region whose colour turned: hue rotated, or bleached. Its mask
// is where the colour changed visibly (a grey pixel keeps its colour under
// a rotation of the channels).
func (p *photoPainter) color() {
	c, r, n := p.c, p.r, p.c.n
	rad := p.side(0.06 + 0.07*r.Float64())
	shape := newBlob(r)
	bleach := r.IntN(3) == 0
	before := append([]float64(nil), c.pix...)
	forBlob(n, p.cx, p.cy, rad, shape, func(x, y int, d float64) {
		i := 3 * (y*n + x)
		a := smooth(1, 0.7, d)
		v := [3]float64{c.pix[i], c.pix[i+1], c.pix[i+2]}
		nv := [3]float64{v[2] * 1.15, v[0] * 0.85, v[1]}
		if bleach {
			l := (v[0] + v[1] + v[2]) / 3
			nv = [3]float64{l*0.5 + 0.45, l*0.5 + 0.42, l*0.5 + 0.38}
		}
		for k := 0; k < 3; k++ {
			c.pix[i+k] = v[k]*(1-a) + nv[k]*a
		}
	})
	markChanged(c, before, p.mask, 0.06)
}

// partChange is the least mean colour change (per channel) inside a missing
// or moved piece's rectangle: a piece of flat paint moved onto flat paint is
// no visible defect, so another place is drawn.
const partChange = 0.03

// paintPartDefect removes a piece of a part (its detail smoothed away to the
// surrounding colour) or moves one from where it belongs. The mask is the
// whole rectangle the piece now spoils, as MVTec-AD marks such defects.
func paintPartDefect(c *canvas, defect string, lo, span float64, r *rand.Rand) []bool {
	n := c.n
	orig := append([]float64(nil), c.pix...)
	var x0, y0, w, h int
	for attempt := 0; ; attempt++ {
		copy(c.pix, orig)
		cx, cy := (lo+span*r.Float64())*float64(n), (lo+span*r.Float64())*float64(n)
		w = int((0.1 + 0.1*r.Float64()) * float64(n))
		h = int((0.1 + 0.1*r.Float64()) * float64(n))
		x0, y0 = int(cx)-w/2, int(cy)-h/2
		if defect == "missing" {
			fillSmooth(c, x0, y0, w, h)
		} else {
			ang := r.Float64() * 2 * math.Pi
			dist := (0.06 + 0.06*r.Float64()) * float64(n)
			dx, dy := int(dist*math.Cos(ang)), int(dist*math.Sin(ang))
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					fx, fy, tx, ty := x0+x, y0+y, x0+x+dx, y0+y+dy
					if fx < 0 || fy < 0 || fx >= n || fy >= n || tx < 0 || ty < 0 || tx >= n || ty >= n {
						continue
					}
					i, j := 3*(fy*n+fx), 3*(ty*n+tx)
					copy(c.pix[j:j+3], orig[i:i+3])
				}
			}
			x0, y0 = x0+dx, y0+dy
		}
		if rectChange(c.pix, orig, n, x0, y0, w, h) >= partChange || attempt == 50 {
			break
		}
	}
	mask := make([]bool, n*n)
	for y := max(y0, 0); y < min(y0+h, n); y++ {
		for x := max(x0, 0); x < min(x0+w, n); x++ {
			mask[y*n+x] = true
		}
	}
	return mask
}

// rectChange is the mean absolute change per channel inside a rectangle.
func rectChange(now, before []float64, n, x0, y0, w, h int) float64 {
	sum, count := 0.0, 0
	for y := max(y0, 0); y < min(y0+h, n); y++ {
		for x := max(x0, 0); x < min(x0+w, n); x++ {
			i := 3 * (y*n + x)
			for k := 0; k < 3; k++ {
				sum += math.Abs(now[i+k] - before[i+k])
				count++
			}
		}
	}
	if count == 0 {
		return 0
	}
	return sum / float64(count)
}

type point struct{ x, y float64 }

// curve samples a circular arc of the given length through (cx, cy), about
// one point per pixel; bend is the total turn in radians.
func curve(cx, cy, ang, bend, length float64, n int) []point {
	steps := max(2, int(length))
	var pts []point
	x, y := cx-0.5*length*math.Cos(ang), cy-0.5*length*math.Sin(ang)
	a := ang - bend/2
	for k := 0; k <= steps; k++ {
		pts = append(pts, point{x, y})
		x += length / float64(steps) * math.Cos(a)
		y += length / float64(steps) * math.Sin(a)
		a += bend / float64(steps)
	}
	return pts
}

// strokeLine calls paint once for every pixel of an n x n image near the
// polyline, in row order, with its antialiased coverage in (0, 1] (the
// largest over the polyline's segments).
func strokeLine(pts []point, width float64, n int, paint func(x, y int, a float64)) {
	half := width / 2
	cover := make([]float64, n*n)
	for k := 0; k+1 < len(pts); k++ {
		a, b := pts[k], pts[k+1]
		x0 := max(0, int(math.Floor(math.Min(a.x, b.x)-half-1)))
		x1 := min(n-1, int(math.Ceil(math.Max(a.x, b.x)+half+1)))
		y0 := max(0, int(math.Floor(math.Min(a.y, b.y)-half-1)))
		y1 := min(n-1, int(math.Ceil(math.Max(a.y, b.y)+half+1)))
		for y := y0; y <= y1; y++ {
			for x := x0; x <= x1; x++ {
				d := segmentDistance(float64(x)+0.5, float64(y)+0.5, a, b)
				cover[y*n+x] = math.Max(cover[y*n+x], math.Min(1, half+0.5-d))
			}
		}
	}
	for i, a := range cover {
		if a > 0 {
			paint(i%n, i/n, a)
		}
	}
}

func segmentDistance(x, y float64, a, b point) float64 {
	dx, dy := b.x-a.x, b.y-a.y
	l2 := dx*dx + dy*dy
	t := 0.0
	if l2 > 0 {
		t = math.Max(0, math.Min(1, ((x-a.x)*dx+(y-a.y)*dy)/l2))
	}
	return math.Hypot(x-a.x-t*dx, y-a.y-t*dy)
}

// blobShape is an irregular outline: the radius varies with the angle.
type blobShape struct{ amp, phase [3]float64 }

func newBlob(r *rand.Rand) blobShape {
	var s blobShape
	for k := range s.amp {
		s.amp[k] = 0.15 * r.Float64()
		s.phase[k] = 2 * math.Pi * r.Float64()
	}
	return s
}

func (s blobShape) radius(theta float64) float64 {
	f := 1.0
	for k := range s.amp {
		f += s.amp[k] * math.Sin(float64(k+2)*theta+s.phase[k])
	}
	return f
}

// forBlob calls f for pixels inside the outline with d in [0, 1], the
// distance from the centre relative to the outline.
func forBlob(n int, cx, cy, rad float64, s blobShape, f func(x, y int, d float64)) {
	reach := rad * 1.5
	for y := int(cy - reach); y <= int(cy+reach); y++ {
		for x := int(cx - reach); x <= int(cx+reach); x++ {
			if x < 0 || y < 0 || x >= n || y >= n {
				continue
			}
			dx, dy := float64(x)+0.5-cx, float64(y)+0.5-cy
			d := math.Hypot(dx, dy) / (rad * s.radius(math.Atan2(dy, dx)))
			if d <= 1 {
				f(x, y, d)
			}
		}
	}
}

// fillSmooth replaces a rectangle with a smooth interpolation of the colours
// on its border, as if the detail inside had been removed.
func fillSmooth(c *canvas, x0, y0, w, h int) {
	n := c.n
	src := append([]float64(nil), c.pix...)
	get := func(x, y int) [3]float64 {
		x, y = min(max(x, 0), n-1), min(max(y, 0), n-1)
		i := 3 * (y*n + x)
		return [3]float64{src[i], src[i+1], src[i+2]}
	}
	for y := y0; y < y0+h; y++ {
		for x := x0; x < x0+w; x++ {
			if x < 0 || y < 0 || x >= n || y >= n {
				continue
			}
			u := float64(x-x0) / float64(max(w-1, 1))
			v := float64(y-y0) / float64(max(h-1, 1))
			l, rr := get(x0-1, y), get(x0+w, y)
			t, b := get(x, y0-1), get(x, y0+h)
			i := 3 * (y*n + x)
			for k := 0; k < 3; k++ {
				c.pix[i+k] = 0.5*((1-u)*l[k]+u*rr[k]) + 0.5*((1-v)*t[k]+v*b[k])
			}
		}
	}
}
