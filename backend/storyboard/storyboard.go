// Package storyboard renders a denoising trajectory for slides: an animated
// GIF that plays the chosen panels step by step, and a PNG strip with one
// row per chosen step. Panels are the input, the noisy latent z_t, the
// predicted image and its anomaly map; every frame and row says its step
// and timestep. Plain Go (image/gif, image/png), so the server and the CLI
// render the same pictures from the engine's values.
package storyboard

import (
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/gif"
	"image/png"
	"io"
	"slices"
	"strconv"
	"strings"

	xdraw "golang.org/x/image/draw"
	"golang.org/x/image/font"
	"golang.org/x/image/font/basicfont"
	"golang.org/x/image/math/fixed"

	"github.com/diad-project/diad/backend/visual"
)

// Panel names, in the order they are offered.
const (
	PanelInput  = "input"  // the image under test
	PanelLatent = "latent" // z_t: the input's latent with noise of level t
	PanelImage  = "image"  // the step's predicted clean image
	PanelMap    = "map"    // its anomaly map over the input
)

// Panels lists every panel; DefaultPanels are drawn when none are chosen.
var (
	Panels        = []string{PanelInput, PanelLatent, PanelImage, PanelMap}
	DefaultPanels = []string{PanelInput, PanelImage, PanelMap}
)

var panelTitles = map[string]string{PanelInput: "input", PanelLatent: "z_t", PanelImage: "predicted image", PanelMap: "anomaly map"}

// Step is one denoising step's pictures.
type Step struct {
	T      int
	Latent image.Image // z_t preview
	Image  image.Image // predicted image
	Map    []float32   // anomaly map of the predicted image, Size*Size
}

// Trajectory is what a storyboard draws.
type Trajectory struct {
	Title string // e.g. the image and the sampler
	Size  int    // side of the input, the images and the maps
	Input image.Image
	Steps []Step
	// Scale colours every map alike (the run's threshold at mid-scale, or
	// the trajectory's range).
	Scale visual.Scale
}

// Options choose what to draw and how large.
type Options struct {
	Panels []string // default DefaultPanels
	// Side is the drawn side of each panel in pixels (default 160).
	Side int
	// DelayMS is how long a GIF frame shows; the last one holds 4 times as
	// long (defaults 400).
	DelayMS int
	// Steps are the 0-based steps a strip shows (default: about six, evenly
	// from the first to the last).
	Steps []int
}

const (
	defaultSide    = 160
	defaultDelayMS = 400
	maxSide        = 1024
	stripRows      = 6
	margin         = 6
	captionH       = 16
	overlayAlpha   = 0.65
	maxPanels      = 4
	maxStripSteps  = 100
	// A GIF holds a byte per pixel per frame, a strip four per pixel:
	// bounds on what one export may allocate.
	maxGIFPixels   = 48 << 20
	maxStripPixels = 16 << 20
)

// CheckSize refuses a picture too large to make: a GIF of frames steps, or
// a strip of frames rows (0: the default rows), with o's panels.
func CheckSize(o Options, format string, frames int) error {
	o = o.withDefaults()
	if o.Side > maxSide || len(o.Panels) > maxPanels {
		return fmt.Errorf("storyboard: at most %d panels of at most %d pixels", maxPanels, maxSide)
	}
	fw, fh := frameSize(o)
	limit := maxGIFPixels
	if format == FormatStrip {
		limit = maxStripPixels
		if frames == 0 {
			frames = stripRows
		}
	}
	if px := frames * fw * (fh + captionH + margin); px > limit {
		return fmt.Errorf("storyboard: %d frames of %dx%d pixels is too large (at most %d Mpx): choose fewer steps or panels, or a smaller side", frames, fw, fh, limit>>20)
	}
	return nil
}

// Formats CheckSize knows.
const (
	FormatGIF   = "gif"
	FormatStrip = "strip"
)

func (o Options) withDefaults() Options {
	if len(o.Panels) == 0 {
		o.Panels = DefaultPanels
	}
	if o.Side <= 0 {
		o.Side = defaultSide
	}
	if o.DelayMS <= 0 {
		o.DelayMS = defaultDelayMS
	}
	return o
}

// ParsePanels reads a comma-separated panel list ("input,image,map");
// empty means the default panels.
func ParsePanels(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return slices.Clone(DefaultPanels), nil
	}
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if !slices.Contains(Panels, p) {
			return nil, fmt.Errorf("unknown panel %q (want some of %s)", p, strings.Join(Panels, ", "))
		}
		if slices.Contains(out, p) {
			return nil, fmt.Errorf("panel %q twice", p)
		}
		out = append(out, p)
	}
	return out, nil
}

// ParseSteps reads the 1-based steps a strip shows ("1,4,10"); empty
// means the default spread. The result is 0-based.
func ParseSteps(s string) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("step %q: want a step number from 1", f)
		}
		out = append(out, n-1)
		if len(out) > maxStripSteps {
			return nil, fmt.Errorf("more than %d steps", maxStripSteps)
		}
	}
	return out, nil
}

// spread is n steps evenly from the first to the last of total.
func spread(total, n int) []int {
	if total <= n {
		out := make([]int, total)
		for i := range out {
			out[i] = i
		}
		return out
	}
	out := make([]int, n)
	for i := range out {
		out[i] = i * (total - 1) / (n - 1)
	}
	return out
}

// check refuses a trajectory it cannot draw (sizes: CheckSize).
func (t Trajectory) check(o Options) error {
	if len(t.Steps) == 0 {
		return errors.New("storyboard: a trajectory without steps")
	}
	if t.Size <= 0 || t.Input == nil {
		return errors.New("storyboard: no input image")
	}
	for _, p := range o.Panels {
		if !slices.Contains(Panels, p) {
			return fmt.Errorf("storyboard: unknown panel %q", p)
		}
	}
	for i, s := range t.Steps {
		if len(s.Map) != 0 && len(s.Map) != t.Size*t.Size {
			return fmt.Errorf("storyboard: step %d has a map of %d values for side %d", i+1, len(s.Map), t.Size)
		}
	}
	return nil
}

// frameSize is the size of one row of panels with its captions.
func frameSize(o Options) (w, h int) {
	n := len(o.Panels)
	return n*o.Side + (n+1)*margin, captionH + o.Side + 2*margin + captionH
}

var (
	background = color.RGBA{0x18, 0x1b, 0x24, 0xff}
	textColour = color.RGBA{0xe6, 0xe8, 0xee, 0xff}
)

// panelRect is where panel k of a row starting at y is drawn.
func panelRect(o Options, k, y int) image.Rectangle {
	x := margin + k*(o.Side+margin)
	return image.Rect(x, y+captionH, x+o.Side, y+captionH+o.Side)
}

// PanelAt is where a picture shows panel k (0-based, in o.Panels order) of
// row (a strip's row; 0 for a GIF's frames): for checking pictures.
func (t Trajectory) PanelAt(o Options, row, k int) image.Rectangle {
	o = o.withDefaults()
	_, fh := frameSize(o)
	top := 0
	if t.Title != "" {
		top = captionH + margin
	}
	return panelRect(o, k, top+row*fh)
}

// drawRow draws step i's panels at y into dst, with their titles above and
// the step's caption below.
func (t Trajectory) drawRow(dst *image.RGBA, y, i int, o Options) {
	s := t.Steps[i]
	for k, p := range o.Panels {
		r := panelRect(o, k, y)
		label(dst, r.Min.X, y+12, fit(panelTitles[p], o.Side))
		if pic := t.panel(s, p); pic != nil {
			// Nearest neighbour keeps the latent's cells and the map's
			// pixels visible when enlarged.
			xdraw.NearestNeighbor.Scale(dst, r, pic, pic.Bounds(), draw.Src, nil)
		} else {
			label(dst, r.Min.X+4, r.Min.Y+o.Side/2, "(not sent)")
		}
	}
	label(dst, margin, y+captionH+o.Side+margin+12, fmt.Sprintf("step %d / %d   t = %d", i+1, len(t.Steps), s.T))
}

// panel is step s's picture of panel p (nil when the step has none).
func (t Trajectory) panel(s Step, p string) image.Image {
	switch p {
	case PanelInput:
		return t.Input
	case PanelLatent:
		return s.Latent
	case PanelImage:
		return s.Image
	case PanelMap:
		if len(s.Map) == 0 {
			return nil
		}
		base := image.NewRGBA(image.Rect(0, 0, t.Size, t.Size))
		xdraw.CatmullRom.Scale(base, base.Bounds(), t.Input, t.Input.Bounds(), draw.Src, nil)
		return visual.Overlay(base, s.Map, t.Scale, overlayAlpha)
	}
	return nil
}

// glyphW is basicfont.Face7x13's advance.
const glyphW = 7

// fit shortens s to the characters that fit in width pixels.
func fit(s string, width int) string {
	if n := width / glyphW; len(s) > n {
		return s[:max(n, 0)]
	}
	return s
}

func label(dst *image.RGBA, x, y int, s string) {
	d := font.Drawer{Dst: dst, Src: image.NewUniform(textColour), Face: basicfont.Face7x13, Dot: fixed.P(x, y)}
	d.DrawString(s)
}

// canvas is a background of w x h below the trajectory's title, and the
// title's height.
func (t Trajectory) canvas(w, h int) (*image.RGBA, int) {
	top := 0
	if t.Title != "" {
		top = captionH + margin
	}
	img := image.NewRGBA(image.Rect(0, 0, w, h+top))
	draw.Draw(img, img.Bounds(), image.NewUniform(background), image.Point{}, draw.Src)
	if t.Title != "" {
		label(img, margin, 14, t.Title)
	}
	return img, top
}

// GIF writes an animated GIF with a frame per step; it loops, and the last
// frame holds longer.
func GIF(w io.Writer, t Trajectory, o Options) error {
	o = o.withDefaults()
	if err := t.check(o); err != nil {
		return err
	}
	if err := CheckSize(o, FormatGIF, len(t.Steps)); err != nil {
		return err
	}
	fw, fh := frameSize(o)
	anim := &gif.GIF{}
	for i := range t.Steps {
		img, top := t.canvas(fw, fh)
		t.drawRow(img, top, i, o)
		pal := image.NewPaletted(img.Bounds(), palette)
		draw.FloydSteinberg.Draw(pal, img.Bounds(), img, image.Point{})
		delay := o.DelayMS / 10
		if i == len(t.Steps)-1 {
			delay *= 4
		}
		anim.Image = append(anim.Image, pal)
		anim.Delay = append(anim.Delay, max(delay, 1))
	}
	if err := gif.EncodeAll(w, anim); err != nil {
		return fmt.Errorf("storyboard: encode GIF: %w", err)
	}
	return nil
}

// Strip writes a PNG with one row of panels per chosen step.
func Strip(w io.Writer, t Trajectory, o Options) error {
	o = o.withDefaults()
	if err := t.check(o); err != nil {
		return err
	}
	rows := o.Steps
	if len(rows) == 0 {
		rows = spread(len(t.Steps), stripRows)
	}
	for _, r := range rows {
		if r < 0 || r >= len(t.Steps) {
			return fmt.Errorf("storyboard: step %d of a %d-step trajectory", r+1, len(t.Steps))
		}
	}
	if err := CheckSize(o, FormatStrip, len(rows)); err != nil {
		return err
	}
	fw, fh := frameSize(o)
	img, top := t.canvas(fw, fh*len(rows))
	for k, r := range rows {
		t.drawRow(img, top+k*fh, r, o)
	}
	if err := png.Encode(w, img); err != nil {
		return fmt.Errorf("storyboard: encode PNG: %w", err)
	}
	return nil
}

// palette is a 256-colour palette for the GIF: a 6x6x6 colour cube for the
// pictures, 24 colours of the heatmap's scale, the background and text
// colours and 14 greys.
var palette = func() color.Palette {
	var p color.Palette
	for r := 0; r < 6; r++ {
		for g := 0; g < 6; g++ {
			for b := 0; b < 6; b++ {
				p = append(p, color.RGBA{uint8(r * 51), uint8(g * 51), uint8(b * 51), 0xff})
			}
		}
	}
	for i := 0; len(p) < 240; i++ {
		p = append(p, visual.Colormap(float64(i)/23))
	}
	p = append(p, background, textColour)
	for len(p) < 256 {
		v := uint8((len(p) - 242) * 255 / 13)
		p = append(p, color.RGBA{v, v, v, 0xff})
	}
	return p
}()

// MapRange is a colour scale over the range of every step's map, for a
// trajectory without a threshold.
func (t Trajectory) MapRange() visual.Scale {
	var all []float32
	for _, s := range t.Steps {
		all = append(all, s.Map...)
	}
	return visual.MinMaxScale(all)
}
