package datasets

import (
	"fmt"
	"image"
	"image/png"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
)

// SynthConfig controls the synthetic MVTec-layout dataset.
type SynthConfig struct {
	Seed uint64 `yaml:"seed"`
	Size int    `yaml:"size"` // image side in pixels
	// Train is the number of good training images per category; TestGood the
	// good test images; PerDefect the test images per defect type.
	Train     int `yaml:"train"`
	TestGood  int `yaml:"test_good"`
	PerDefect int `yaml:"per_defect"`
	// Categories to generate (all if empty); see SynthCategories.
	Categories []string `yaml:"categories"`
}

// DefaultSynth is the embedded default dataset of `make run` and the docs.
var DefaultSynth = SynthConfig{Seed: 1, Size: 128, Train: 40, TestGood: 8, PerDefect: 5}

// synthCategory draws good images of one kind and knows which defects apply.
type synthCategory struct {
	name    string
	texture bool
	defects []string
}

// SynthCategories are the generated categories: four textures, two objects.
var synthCategories = []synthCategory{
	{"woven", true, []string{"scratch", "hole", "color"}},
	{"grain", true, []string{"crack", "stain", "scratch"}},
	{"grid", true, []string{"hole", "crack", "color"}},
	{"speckle", true, []string{"stain", "scratch"}},
	{"disc", false, []string{"missing", "scratch", "stain", "misplaced"}},
	{"screw", false, []string{"missing", "crack", "color"}},
}

// SynthCategories lists the category names.
func SynthCategories() []string {
	var n []string
	for _, c := range synthCategories {
		n = append(n, c.name)
	}
	return n
}

// canvas is a float RGB image in [0, 1].
type canvas struct {
	n   int
	pix []float64 // 3 per pixel
}

func newCanvas(n int) *canvas { return &canvas{n: n, pix: make([]float64, 3*n*n)} }

func (c *canvas) set(x, y int, r, g, b float64) {
	i := 3 * (y*c.n + x)
	c.pix[i], c.pix[i+1], c.pix[i+2] = r, g, b
}

func (c *canvas) get(x, y int) (float64, float64, float64) {
	i := 3 * (y*c.n + x)
	return c.pix[i], c.pix[i+1], c.pix[i+2]
}

func (c *canvas) rgba() *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, c.n, c.n))
	for i := 0; i < c.n*c.n; i++ {
		for k := 0; k < 3; k++ {
			img.Pix[4*i+k] = uint8(math.Round(math.Min(math.Max(c.pix[3*i+k], 0), 1) * 255))
		}
		img.Pix[4*i+3] = 255
	}
	return img
}

// variation is what makes good images differ: lighting, pose, noise.
type variation struct {
	gain, phase, angle, dx, dy, noise float64
}

func drawVariation(r *rand.Rand) variation {
	return variation{
		gain:  0.9 + 0.2*r.Float64(),
		phase: r.Float64() * 2 * math.Pi,
		angle: (r.Float64() - 0.5) * 0.3,
		dx:    (r.Float64() - 0.5) * 0.06,
		dy:    (r.Float64() - 0.5) * 0.06,
		noise: 0.015 + 0.01*r.Float64(),
	}
}

// render draws a noise-free good image of the category at unit lighting;
// finish applies the image's lighting and sensor noise.
func render(cat synthCategory, v variation, n int, r *rand.Rand) *canvas {
	c := newCanvas(n)
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			u, w := float64(x)/float64(n), float64(y)/float64(n)
			var cr, cg, cb float64
			switch cat.name {
			case "woven":
				a := math.Sin(2*math.Pi*10*u+v.phase) * math.Sin(2*math.Pi*10*w)
				t := 0.5 + 0.25*a
				cr, cg, cb = 0.55*t+0.2, 0.45*t+0.15, 0.3*t+0.1
			case "grain":
				d := math.Hypot(u-0.3, w*0.2-0.1)
				t := 0.5 + 0.3*math.Sin(60*d+v.phase+3*math.Sin(6*w))
				cr, cg, cb = 0.5+0.25*t, 0.32+0.2*t, 0.15+0.1*t
			case "grid":
				gx := math.Abs(math.Sin(math.Pi * (12*u + v.phase/math.Pi)))
				gy := math.Abs(math.Sin(math.Pi * (12*w + v.phase/math.Pi)))
				line := math.Max(smooth(0.15, 0.0, gx), smooth(0.15, 0.0, gy))
				cr, cg, cb = 0.25+0.5*line, 0.28+0.5*line, 0.3+0.5*line
			case "speckle":
				t := 0.55 + 0.05*math.Sin(2*math.Pi*3*u+v.phase)
				cr, cg, cb = t, t*0.95, t*0.9
			case "disc", "screw":
				cr, cg, cb = 0.12, 0.14, 0.16 // dark background
			}
			c.set(x, y, cr, cg, cb)
		}
	}
	if cat.name == "speckle" {
		for k := 0; k < n*n/40; k++ {
			x, y := r.IntN(n), r.IntN(n)
			c.set(x, y, 0.3, 0.3, 0.32)
		}
	}
	if !cat.texture {
		drawObject(c, cat.name, 0.5+v.dx, 0.5+v.dy, v.angle, v.phase, nil)
	}
	return c
}

func finish(c *canvas, v variation, r *rand.Rand) *canvas {
	for i := range c.pix {
		c.pix[i] = c.pix[i]*v.gain + r.NormFloat64()*v.noise
	}
	return c
}

func smooth(edge0, edge1, x float64) float64 {
	t := math.Min(math.Max((x-edge0)/(edge1-edge0), 0), 1)
	return t * t * (3 - 2*t)
}

// drawObject paints the part centred at (cx, cy); skip, if not nil, leaves
// pixels where it is true unpainted (a missing piece).
func drawObject(c *canvas, kind string, cx, cy, angle, phase float64, skip func(u, w float64) bool) {
	n := c.n
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			u, w := float64(x)/float64(n), float64(y)/float64(n)
			if skip != nil && skip(u, w) {
				continue
			}
			du, dw := u-cx, w-cy
			ca, sa := math.Cos(angle), math.Sin(angle)
			ru, rw := ca*du+sa*dw, -sa*du+ca*dw
			switch kind {
			case "disc":
				d := math.Hypot(ru, rw)
				if d < 0.32 {
					t := 0.7 - 0.25*d
					if d > 0.12 && d < 0.15 {
						t = 0.45 // inner ring
					}
					if d < 0.06 {
						t = 0.2 // bore
					}
					c.set(x, y, t, t*0.97, t*0.9)
				}
			case "screw":
				if math.Abs(rw) < 0.07 && ru > -0.3 && ru < 0.25 {
					t := 0.6 + 0.15*math.Sin(2*math.Pi*ru*25+phase) // thread
					c.set(x, y, t, t, t*1.02)
				} else if math.Hypot(ru-0.3, rw) < 0.12 {
					c.set(x, y, 0.7, 0.7, 0.72) // head
				}
			}
		}
	}
}

// applyDefect draws a defect into a noise-free image and returns its exact mask.
func applyDefect(c *canvas, cat synthCategory, defect string, v variation, r *rand.Rand) []bool {
	n := c.n
	mask := make([]bool, n*n)
	// a location on the part (objects) or anywhere (textures)
	cx, cy := 0.2+0.6*r.Float64(), 0.2+0.6*r.Float64()
	if !cat.texture {
		a := r.Float64() * 2 * math.Pi
		rad := 0.05 + 0.15*r.Float64()
		cx, cy = 0.5+v.dx+rad*math.Cos(a), 0.5+v.dy+rad*math.Sin(a)
		if cat.name == "screw" {
			cx, cy = 0.5+v.dx+(r.Float64()-0.5)*0.4, 0.5+v.dy
		}
	}
	paint := func(x, y int, f func(r, g, b float64) (float64, float64, float64)) {
		if x < 0 || y < 0 || x >= n || y >= n {
			return
		}
		cr, cg, cb := c.get(x, y)
		if !cat.texture && cr+cg+cb < 0.6 && defect != "hole" {
			return // surface defects of a part stay on the part
		}
		nr, ng, nb := f(cr, cg, cb)
		c.set(x, y, nr, ng, nb)
		mask[y*n+x] = true
	}
	switch defect {
	case "scratch":
		ang := r.Float64() * math.Pi
		length := 0.15 + 0.2*r.Float64()
		for s := -0.5; s <= 0.5; s += 0.5 / float64(n) {
			px := (cx + s*length*math.Cos(ang)) * float64(n)
			py := (cy + s*length*math.Sin(ang)) * float64(n)
			for o := -1; o <= 0; o++ {
				paint(int(px)+o, int(py), func(r, g, b float64) (float64, float64, float64) { return r + 0.35, g + 0.35, b + 0.35 })
			}
		}
	case "crack":
		px, py := cx*float64(n), cy*float64(n)
		ang := r.Float64() * 2 * math.Pi
		for k := 0; k < n/2; k++ {
			ang += (r.Float64() - 0.5) * 0.8
			px += math.Cos(ang)
			py += math.Sin(ang)
			paint(int(px), int(py), func(r, g, b float64) (float64, float64, float64) { return r * 0.25, g * 0.25, b * 0.25 })
			paint(int(px)+1, int(py), func(r, g, b float64) (float64, float64, float64) { return r * 0.4, g * 0.4, b * 0.4 })
		}
	case "hole":
		rad := (0.04 + 0.04*r.Float64()) * float64(n)
		disk(n, cx, cy, rad, func(x, y int, _ float64) {
			paint(x, y, func(float64, float64, float64) (float64, float64, float64) { return 0.03, 0.03, 0.04 })
		})
	case "stain":
		rad := (0.06 + 0.06*r.Float64()) * float64(n)
		tint := [3]float64{0.6 * r.Float64(), 0.3 + 0.4*r.Float64(), 0.2 * r.Float64()}
		disk(n, cx, cy, rad, func(x, y int, d float64) {
			a := 0.7 * (1 - d*d)
			paint(x, y, func(r, g, b float64) (float64, float64, float64) {
				return r*(1-a) + tint[0]*a, g*(1-a) + tint[1]*a, b*(1-a) + tint[2]*a
			})
		})
	case "color":
		rad := (0.07 + 0.06*r.Float64()) * float64(n)
		disk(n, cx, cy, rad, func(x, y int, _ float64) {
			paint(x, y, func(r, g, b float64) (float64, float64, float64) { return b * 1.1, r * 0.9, g })
		})
	case "missing":
		removeWedge(c, v, r.Float64()*2*math.Pi, mask)
	case "misplaced":
		misplace(c, cat, v, mask)
	}
	return mask
}

// removeWedge erases the wedge of the part starting at angle a0 (the good
// image repainted without it) and marks what changed.
func removeWedge(c *canvas, v variation, a0 float64, mask []bool) {
	n := c.n
	wedge := func(u, w float64) bool {
		a := math.Atan2(w-0.5-v.dy, u-0.5-v.dx)
		d := math.Mod(a-a0+4*math.Pi, 2*math.Pi)
		return d < 0.9
	}
	before := append([]float64(nil), c.pix...)
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			u, w := float64(x)/float64(n), float64(y)/float64(n)
			if wedge(u, w) {
				c.set(x, y, 0.12, 0.14, 0.16)
			}
		}
	}
	markChanged(c, before, mask, 0.02)
}

// misplace draws the part moved and turned on an empty background and
// marks what changed.
func misplace(c *canvas, cat synthCategory, v variation, mask []bool) {
	before := append([]float64(nil), c.pix...)
	for y := 0; y < c.n; y++ {
		for x := 0; x < c.n; x++ {
			c.set(x, y, 0.12, 0.14, 0.16)
		}
	}
	drawObject(c, cat.name, 0.5+v.dx+0.12, 0.5+v.dy-0.1, v.angle+0.4, v.phase, nil)
	markChanged(c, before, mask, 0.02)
}

func disk(n int, cx, cy, rad float64, f func(x, y int, d float64)) {
	px, py := cx*float64(n), cy*float64(n)
	for y := int(py - rad - 1); y <= int(py+rad+1); y++ {
		for x := int(px - rad - 1); x <= int(px+rad+1); x++ {
			if d := math.Hypot(float64(x)-px, float64(y)-py) / rad; d <= 1 {
				f(x, y, d)
			}
		}
	}
}

// markChanged marks pixels whose colour changed by more than tol.
func markChanged(c *canvas, before []float64, mask []bool, tol float64) {
	for i := 0; i < c.n*c.n; i++ {
		d := math.Abs(c.pix[3*i]-before[3*i]) + math.Abs(c.pix[3*i+1]-before[3*i+1]) + math.Abs(c.pix[3*i+2]-before[3*i+2])
		if d > tol {
			mask[i] = true
		}
	}
}

// Synthesize writes the synthetic dataset under root in MVTec-AD layout and
// returns its index. The same config always gives the same files.
func Synthesize(root string, cfg SynthConfig) (Index, error) {
	if cfg.Size < 16 || cfg.Train < 1 || cfg.TestGood < 1 || cfg.PerDefect < 1 {
		return Index{}, fmt.Errorf("synth: need size >= 16 and at least one image of each kind, got %+v", cfg)
	}
	cats := synthCategories
	if len(cfg.Categories) > 0 {
		byName := map[string]synthCategory{}
		for _, c := range synthCategories {
			byName[c.name] = c
		}
		cats = nil
		for _, name := range cfg.Categories {
			c, ok := byName[name]
			if !ok {
				return Index{}, fmt.Errorf("synth: unknown category %q (have %v)", name, SynthCategories())
			}
			cats = append(cats, c)
		}
	}
	for ci, cat := range cats {
		r := rand.New(rand.NewPCG(cfg.Seed, uint64(ci)+1))
		write := func(split, defect string, i int, c *canvas, mask []bool) error {
			dir := filepath.Join(root, cat.name, split, defect)
			name := fmt.Sprintf("%03d.png", i)
			if err := writePNG(filepath.Join(dir, name), c.rgba()); err != nil {
				return err
			}
			if mask != nil {
				m := image.NewGray(image.Rect(0, 0, c.n, c.n))
				for k, on := range mask {
					if on {
						m.Pix[k] = 255
					}
				}
				return writePNG(filepath.Join(root, cat.name, "ground_truth", defect, fmt.Sprintf("%03d_mask.png", i)), m)
			}
			return nil
		}
		for i := 0; i < cfg.Train; i++ {
			v := drawVariation(r)
			if err := write(Train, Good, i, finish(render(cat, v, cfg.Size, r), v, r), nil); err != nil {
				return Index{}, err
			}
		}
		for i := 0; i < cfg.TestGood; i++ {
			v := drawVariation(r)
			if err := write(Test, Good, i, finish(render(cat, v, cfg.Size, r), v, r), nil); err != nil {
				return Index{}, err
			}
		}
		defects := append([]string(nil), cat.defects...)
		sort.Strings(defects)
		for _, d := range defects {
			for i := 0; i < cfg.PerDefect; i++ {
				v := drawVariation(r)
				c := render(cat, v, cfg.Size, r)
				mask := applyDefect(c, cat, d, v, r)
				if err := write(Test, d, i, finish(c, v, r), mask); err != nil {
					return Index{}, err
				}
			}
		}
	}
	var names []string
	for _, c := range cats {
		names = append(names, c.name)
	}
	return Open("mvtec", root, Options{Categories: names})
}

func writePNG(path string, img image.Image) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	if err := enc.Encode(f, img); err != nil {
		f.Close()
		return fmt.Errorf("synth %s: %w", path, err)
	}
	return f.Close()
}
