package storyboard

import (
	"bytes"
	"image"
	"image/color"
	"image/gif"
	"image/png"
	"slices"
	"strings"
	"testing"

	"github.com/diad-project/diad/backend/visual"
)

func solid(side int, c color.RGBA) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, side, side))
	for i := 0; i < len(img.Pix); i += 4 {
		img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, c.A
	}
	return img
}

// stepColour tells the steps apart: step i's predicted image is this
// colour (a grey rising with i).
func stepColour(i int) color.RGBA { v := uint8(40 + 50*i); return color.RGBA{v, v, v, 0xff} }

// testTrajectory has four 16-pixel steps; its maps are hot on the left half
// from step 2 on.
func testTrajectory() Trajectory {
	const side = 16
	t := Trajectory{Title: "test image · DDIM 4", Size: side, Input: solid(side, color.RGBA{0, 0, 200, 0xff}), Scale: visual.ThresholdScale(1)}
	for i := 0; i < 4; i++ {
		m := make([]float32, side*side)
		for y := 0; y < side; y++ {
			for x := 0; x < side/2; x++ {
				if i >= 1 {
					m[y*side+x] = 2
				}
			}
		}
		t.Steps = append(t.Steps, Step{T: 301 - 100*i, Latent: solid(4, color.RGBA{200, 0, 0, 0xff}), Image: solid(side, stepColour(i)), Map: m})
	}
	return t
}

// mean is the average colour of the 9x9 block around x, y (a GIF's
// dithering scatters single pixels).
func mean(img image.Image, x, y int) color.RGBA {
	var r, g, b, n uint32
	for dy := -4; dy <= 4; dy++ {
		for dx := -4; dx <= 4; dx++ {
			cr, cg, cb, _ := img.At(x+dx, y+dy).RGBA()
			r, g, b, n = r+cr>>8, g+cg>>8, b+cb>>8, n+1
		}
	}
	return color.RGBA{uint8(r / n), uint8(g / n), uint8(b / n), 0xff}
}

func near(c color.Color, want color.RGBA, tol int) bool {
	r, g, b, _ := c.RGBA()
	d := func(x uint32, y uint8) int { v := int(x>>8) - int(y); return max(v, -v) }
	return d(r, want.R) <= tol && d(g, want.G) <= tol && d(b, want.B) <= tol
}

// panelCentre is the middle of panel k in the row starting at y.
func panelCentre(o Options, k, y int) (int, int) {
	r := panelRect(o, k, y)
	return (r.Min.X + r.Max.X) / 2, (r.Min.Y + r.Max.Y) / 2
}

func TestGIFPlaysEveryStep(t *testing.T) {
	tr := testTrajectory()
	o := Options{Panels: []string{PanelInput, PanelImage, PanelMap}, Side: 48, DelayMS: 200}
	var buf bytes.Buffer
	if err := GIF(&buf, tr, o); err != nil {
		t.Fatal(err)
	}
	g, err := gif.DecodeAll(&buf)
	if err != nil {
		t.Fatal(err)
	}
	fw, fh := frameSize(o.withDefaults())
	if len(g.Image) != 4 || g.Config.Width != fw || g.Config.Height != fh+captionH+margin {
		t.Fatalf("%d frames of %dx%d, want 4 of %dx%d", len(g.Image), g.Config.Width, g.Config.Height, fw, fh+captionH+margin)
	}
	if g.Delay[0] != 20 || g.Delay[3] != 80 {
		t.Fatalf("delays %v: want 20 and the last held 4 times", g.Delay)
	}
	top := captionH + margin
	for i, frame := range g.Image {
		// Input, then the step's own predicted image (dithered to the
		// palette, hence the tolerance).
		if x, y := panelCentre(o, 0, top); !near(mean(frame, x, y), color.RGBA{0, 0, 200, 0xff}, 20) {
			t.Errorf("frame %d: input panel is %v", i, mean(frame, x, y))
		}
		if x, y := panelCentre(o, 1, top); !near(mean(frame, x, y), stepColour(i), 20) {
			t.Errorf("frame %d: image panel is %v, want step %d's %v", i, mean(frame, x, y), i, stepColour(i))
		}
		// The map panel: hot over the input on the left once the map is.
		x, y := panelCentre(o, 2, top)
		left, right := mean(frame, x-o.Side/4, y), mean(frame, x+o.Side/4, y)
		hot := visual.Overlay(solid(1, color.RGBA{0, 0, 200, 0xff}), []float32{2}, tr.Scale, overlayAlpha).RGBAAt(0, 0)
		if (i >= 1) != near(left, hot, 25) {
			t.Errorf("frame %d: map's left half %v (hot is %v)", i, left, hot)
		}
		if !near(right, color.RGBA{0, 0, 200, 0xff}, 20) {
			t.Errorf("frame %d: map's cold right half %v is not the input showing through", i, right)
		}
	}
}

func TestStripShowsTheChosenSteps(t *testing.T) {
	tr := testTrajectory()
	o := Options{Panels: []string{PanelLatent, PanelImage}, Side: 40, Steps: []int{3, 0}}
	var buf bytes.Buffer
	if err := Strip(&buf, tr, o); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(&buf)
	if err != nil {
		t.Fatal(err)
	}
	fw, fh := frameSize(o.withDefaults())
	top := captionH + margin
	if b := img.Bounds(); b.Dx() != fw || b.Dy() != top+2*fh {
		t.Fatalf("strip %v, want %dx%d", b, fw, top+2*fh)
	}
	for row, step := range o.Steps {
		if x, y := panelCentre(o, 0, top+row*fh); !near(img.At(x, y), color.RGBA{200, 0, 0, 0xff}, 0) {
			t.Errorf("row %d: latent panel %v", row, img.At(x, y))
		}
		if x, y := panelCentre(o, 1, top+row*fh); !near(img.At(x, y), stepColour(step), 0) {
			t.Errorf("row %d: image panel %v, want step %d's", row, img.At(x, y), step)
		}
	}
	// By default about six steps spread from the first to the last.
	if got := spread(10, 6); !slices.Equal(got, []int{0, 1, 3, 5, 7, 9}) {
		t.Fatalf("spread(10, 6) = %v", got)
	}
	if got := spread(3, 6); !slices.Equal(got, []int{0, 1, 2}) {
		t.Fatalf("spread(3, 6) = %v", got)
	}
}

func TestBadInputIsAnError(t *testing.T) {
	good := testTrajectory()
	bad := map[string]func() (Trajectory, Options){
		"no steps":      func() (Trajectory, Options) { t := good; t.Steps = nil; return t, Options{} },
		"no input":      func() (Trajectory, Options) { t := good; t.Input = nil; return t, Options{} },
		"short map":     func() (Trajectory, Options) { t := good; t.Steps = []Step{{Map: []float32{1}}}; return t, Options{} },
		"unknown panel": func() (Trajectory, Options) { return good, Options{Panels: []string{"noise"}} },
		"huge panels":   func() (Trajectory, Options) { return good, Options{Side: 5000} },
		"step past end": func() (Trajectory, Options) { return good, Options{Steps: []int{4}} },
		"negative step": func() (Trajectory, Options) { return good, Options{Steps: []int{-1}} },
	}
	for name, mk := range bad {
		tr, o := mk()
		var buf bytes.Buffer
		if err := Strip(&buf, tr, o); err == nil {
			t.Errorf("%s: strip accepted", name)
		}
		if name == "step past end" || name == "negative step" {
			continue // a GIF plays every step
		}
		if err := GIF(&buf, tr, o); err == nil {
			t.Errorf("%s: GIF accepted", name)
		}
	}
}

func TestParsePanelsAndSteps(t *testing.T) {
	p, err := ParsePanels(" latent, map ")
	if err != nil || !slices.Equal(p, []string{PanelLatent, PanelMap}) {
		t.Fatalf("panels %v %v", p, err)
	}
	if p, err := ParsePanels(""); err != nil || !slices.Equal(p, DefaultPanels) {
		t.Fatalf("default panels %v %v", p, err)
	}
	for _, s := range []string{"map,map", "noise", "image,"} {
		if _, err := ParsePanels(s); err == nil {
			t.Errorf("panels %q accepted", s)
		}
	}
	st, err := ParseSteps("1, 5,10")
	if err != nil || !slices.Equal(st, []int{0, 4, 9}) {
		t.Fatalf("steps %v %v", st, err)
	}
	if err := CheckSize(Options{Side: 512, Panels: Panels}, FormatGIF, 1000); err == nil {
		t.Error("a GIF of 1000 frames of four 512-pixel panels accepted")
	}
	if err := CheckSize(Options{}, FormatGIF, 50); err != nil {
		t.Errorf("a default GIF of 50 steps refused: %v", err)
	}
	if err := CheckSize(Options{Side: 1024, Panels: Panels}, FormatStrip, 100); err == nil {
		t.Error("a strip of 100 rows of four 1024-pixel panels accepted")
	}
	for _, s := range []string{"0", "-2", "x", "1,,2", strings.Repeat("1,", maxStripSteps+1) + "1"} {
		if _, err := ParseSteps(s); err == nil {
			t.Errorf("steps %q accepted", s)
		}
	}
}

// The panel and step lists come from query strings and flags: any input is
// either refused or gives valid choices.
func FuzzParseOptions(f *testing.F) {
	f.Fuzz(func(t *testing.T, panels, steps string) {
		p, err := ParsePanels(panels)
		if err == nil {
			if len(p) == 0 || len(p) > maxPanels {
				t.Fatalf("%q: %d panels", panels, len(p))
			}
			for _, x := range p {
				if !slices.Contains(Panels, x) {
					t.Fatalf("%q: panel %q", panels, x)
				}
			}
		}
		s, err := ParseSteps(steps)
		if err == nil {
			if len(s) > maxStripSteps {
				t.Fatalf("%q: %d steps", steps, len(s))
			}
			for _, x := range s {
				if x < 0 {
					t.Fatalf("%q: step %d", steps, x)
				}
			}
		}
	})
}

func TestTitlesFitTheirPanels(t *testing.T) {
	if got := fit("predicted image", 96); got != "predicted ima" || len(got)*glyphW > 96 {
		t.Fatalf("fit to 96 px: %q", got)
	}
	if got := fit("z_t", 96); got != "z_t" {
		t.Fatalf("a short title changed: %q", got)
	}
	if got := fit("input", 3); got != "" {
		t.Fatalf("fit to 3 px: %q", got)
	}
}
