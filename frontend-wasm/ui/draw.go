//go:build js && wasm

package ui

import (
	"bytes"
	"image"
	"image/color"
	"math"

	"github.com/hajimehoshi/ebiten/v2"
	"github.com/hajimehoshi/ebiten/v2/text/v2"
	"github.com/hajimehoshi/ebiten/v2/vector"
	"golang.org/x/image/font/gofont/gobold"
	"golang.org/x/image/font/gofont/goregular"

	"github.com/diad-project/diad/frontend-wasm/gallery"
	"github.com/diad-project/diad/frontend-wasm/hook"
)

// rect is an area of the canvas in logical (CSS) pixels.
type rect struct{ X, Y, W, H float32 }

// uiScale is device pixels per CSS pixel: the screen is rendered at the
// device's resolution (crisp text on HiDPI displays) while layout, input and
// the test hook stay in CSS pixels. Only the primitives below apply it.
var uiScale float32 = 1

// presentZoom is how much larger presenter mode draws everything (1
// otherwise): layout runs in a viewport that much smaller, and uiScale
// includes it. Widget rectangles are reported to the hook in CSS pixels.
var presentZoom float32 = 1

func (r rect) contains(x, y int) bool {
	fx, fy := float32(x), float32(y)
	return fx >= r.X && fy >= r.Y && fx < r.X+r.W && fy < r.Y+r.H
}

func (r rect) inset(d float32) rect { return rect{r.X + d, r.Y + d, r.W - 2*d, r.H - 2*d} }

// cutTop splits off the top h pixels (and a gap) and returns both parts.
func (r rect) cutTop(h, gap float32) (top, rest rect) {
	return rect{r.X, r.Y, r.W, h}, rect{r.X, r.Y + h + gap, r.W, r.H - h - gap}
}

func (r rect) cutLeft(w, gap float32) (left, rest rect) {
	return rect{r.X, r.Y, w, r.H}, rect{r.X + w + gap, r.Y, r.W - w - gap, r.H}
}

// columns splits r into n equal columns with gaps.
func (r rect) columns(n int, gap float32) []rect {
	out := make([]rect, n)
	w := (r.W - gap*float32(n-1)) / float32(n)
	for i := range out {
		out[i] = rect{r.X + float32(i)*(w+gap), r.Y, w, r.H}
	}
	return out
}

// image is r in device pixels, for clipping with SubImage.
func (r rect) image() image.Rectangle {
	s := uiScale
	return image.Rect(int(r.X*s), int(r.Y*s), int(math.Ceil(float64((r.X+r.W)*s))), int(math.Ceil(float64((r.Y+r.H)*s))))
}

func (r rect) hook() hook.Rect {
	z := float64(presentZoom)
	return hook.Rect{float64(r.X) * z, float64(r.Y) * z, float64(r.W) * z, float64(r.H) * z}
}

// Palette: a dark theme; the outcome colours are the gallery's borders.
var (
	colBG      = color.RGBA{0x0f, 0x11, 0x17, 0xff}
	colPanel   = color.RGBA{0x18, 0x1b, 0x24, 0xff}
	colRaised  = color.RGBA{0x23, 0x27, 0x33, 0xff}
	colBorder  = color.RGBA{0x2e, 0x33, 0x40, 0xff}
	colText    = color.RGBA{0xe6, 0xe8, 0xee, 0xff}
	colDim     = color.RGBA{0x8a, 0x91, 0xa0, 0xff}
	colAccent  = color.RGBA{0x4f, 0x8c, 0xff, 0xff}
	colError   = color.RGBA{0xff, 0x6b, 0x6b, 0xff}
	colOK      = color.RGBA{0x3d, 0xd6, 0x8c, 0xff}
	colNormal  = color.RGBA{0x4f, 0x8c, 0xff, 0xff} // normal class in charts
	colAnomaly = color.RGBA{0xff, 0x8a, 0x3d, 0xff} // anomalous class in charts
)

var outcomeColor = map[gallery.Outcome]color.RGBA{
	gallery.TP: {0xef, 0x44, 0x44, 0xff},
	gallery.FP: {0xf5, 0x9e, 0x0b, 0xff},
	gallery.FN: {0xa8, 0x55, 0xf7, 0xff},
	gallery.TN: {0x22, 0xc5, 0x5e, 0xff},
}

var verdictColor = map[string]color.RGBA{
	"anomalous": {0xef, 0x44, 0x44, 0xff},
	"normal":    {0x22, 0xc5, 0x5e, 0xff},
	"unsure":    {0xf5, 0x9e, 0x0b, 0xff},
}

var (
	fontRegular = mustFace(goregular.TTF)
	fontBold    = mustFace(gobold.TTF)
	faces       = map[[2]int]*text.GoTextFace{}
)

func mustFace(ttf []byte) *text.GoTextFaceSource {
	s, err := text.NewGoTextFaceSource(bytes.NewReader(ttf))
	if err != nil {
		panic(err) // the embedded Go fonts always parse
	}
	return s
}

func face(size float64, bold bool) *text.GoTextFace {
	k := [2]int{int(size * 10), 0}
	src := fontRegular
	if bold {
		k[1], src = 1, fontBold
	}
	f, ok := faces[k]
	if !ok {
		f = &text.GoTextFace{Source: src, Size: size}
		faces[k] = f
	}
	return f
}

// Text sizes.
const (
	sizeSmall = 11
	sizeBody  = 13
	sizeTitle = 15
)

func drawText(dst *ebiten.Image, s string, x, y float32, size float64, c color.Color) {
	drawFace(dst, s, x, y, size, false, c)
}

func drawBold(dst *ebiten.Image, s string, x, y float32, size float64, c color.Color) {
	drawFace(dst, s, x, y, size, true, c)
}

// The primitives below draw nothing on a nil dst: the layout pass in Update
// runs the same view code as Draw, to place widgets, without painting. Nor
// do they draw what falls outside dst: a partial repaint runs the page's
// drawing code for each changed region, on a sub-image of the screen, and
// what it would clip away costs no text layout or draw command.

// misses reports whether the CSS-pixel box x, y, w, h lies wholly outside
// dst (nil: everything misses).
func misses(dst *ebiten.Image, x, y, w, h float32) bool {
	if dst == nil {
		return true
	}
	b, s := dst.Bounds(), uiScale
	return (x+w)*s < float32(b.Min.X) || x*s > float32(b.Max.X) || (y+h)*s < float32(b.Min.Y) || y*s > float32(b.Max.Y)
}

func drawFace(dst *ebiten.Image, s string, x, y float32, size float64, bold bool, c color.Color) {
	// A line of text is at most size*1.5 tall; its width is measured only
	// when its line crosses dst and it starts left of it.
	h := float32(size) * 1.5
	if misses(dst, x, y, float32(1<<20), h) {
		return
	}
	if x*uiScale < float32(dst.Bounds().Min.X) && misses(dst, x, y, textWidth(s, size), h) {
		return
	}
	op := &text.DrawOptions{}
	op.GeoM.Translate(float64(x*uiScale), float64(y*uiScale))
	op.ColorScale.ScaleWithColor(c)
	text.Draw(dst, s, face(size*float64(uiScale), bold), op)
}

// textWidth is in CSS pixels.
func textWidth(s string, size float64) float32 {
	w, _ := text.Measure(s, face(size, false), 0)
	return float32(w)
}

// drawTextIn draws s centred in r.
func drawTextIn(dst *ebiten.Image, s string, r rect, size float64, c color.Color) {
	w := textWidth(s, size)
	drawText(dst, s, r.X+(r.W-w)/2, r.Y+(r.H-float32(size)*1.25)/2, size, c)
}

// clip shortens s with an ellipsis to fit w pixels.
func clip(s string, w float32, size float64) string {
	if textWidth(s, size) <= w {
		return s
	}
	r := []rune(s)
	for len(r) > 1 && textWidth(string(r)+"…", size) > w {
		r = r[:len(r)-1]
	}
	return string(r) + "…"
}

func fill(dst *ebiten.Image, r rect, c color.Color) {
	if misses(dst, r.X, r.Y, r.W, r.H) {
		return
	}
	s := uiScale
	vector.DrawFilledRect(dst, r.X*s, r.Y*s, r.W*s, r.H*s, c, false)
}

// fillAround fills outer except inner, which lies within it: the frame a
// picture drawn at inner leaves. A fill under the picture would only be
// painted over, and every pixel painted is CPU work in a software-rendered
// browser (the gallery repaints its grid on every scroll).
func fillAround(dst *ebiten.Image, outer, inner rect, c color.Color) {
	for _, r := range []rect{
		{outer.X, outer.Y, outer.W, inner.Y - outer.Y},                               // above
		{outer.X, inner.Y + inner.H, outer.W, outer.Y + outer.H - inner.Y - inner.H}, // below
		{outer.X, inner.Y, inner.X - outer.X, inner.H},                               // left
		{inner.X + inner.W, inner.Y, outer.X + outer.W - inner.X - inner.W, inner.H}, // right
	} {
		if r.W > 0 && r.H > 0 {
			fill(dst, r, c)
		}
	}
}

func stroke(dst *ebiten.Image, r rect, w float32, c color.Color) {
	if misses(dst, r.X, r.Y, r.W, r.H) {
		return
	}
	s := uiScale
	vector.StrokeRect(dst, (r.X+w/2)*s, (r.Y+w/2)*s, (r.W-w)*s, (r.H-w)*s, w*s, c, false)
}

// line draws without antialiasing: ebiten antialiases through a
// double-size offscreen buffer that is composited whenever antialiased and
// plain draws alternate, which costs a full-screen pass each time (measured:
// the explorer drew at a tenth of an empty game's frame rate with it).
func line(dst *ebiten.Image, x0, y0, x1, y1, w float32, c color.Color) {
	if misses(dst, min(x0, x1)-w, min(y0, y1)-w, abs32(x1-x0)+2*w, abs32(y1-y0)+2*w) {
		return
	}
	s := uiScale
	vector.StrokeLine(dst, x0*s, y0*s, x1*s, y1*s, w*s, c, false)
}

func panel(dst *ebiten.Image, r rect, title string) rect {
	fill(dst, r, colPanel)
	stroke(dst, r, 1, colBorder)
	if title == "" {
		return r.inset(8)
	}
	drawBold(dst, title, r.X+10, r.Y+7, sizeBody, colDim)
	_, body := r.cutTop(26, 0)
	return rect{body.X + 8, body.Y, body.W - 16, body.H - 8}
}

// drawImageFit draws img centred in r, scaled to fit, and returns where
// (r itself for a missing image).
func drawImageFit(dst, img *ebiten.Image, r rect, filter ebiten.Filter) rect {
	if img == nil {
		return r
	}
	b := img.Bounds()
	iw, ih := float32(b.Dx()), float32(b.Dy())
	s := float32(math.Min(float64(r.W/iw), float64(r.H/ih)))
	out := rect{r.X + (r.W-iw*s)/2, r.Y + (r.H-ih*s)/2, iw * s, ih * s}
	op := &ebiten.DrawImageOptions{Filter: filter}
	op.GeoM.Scale(float64(s*uiScale), float64(s*uiScale))
	op.GeoM.Translate(float64(out.X*uiScale), float64(out.Y*uiScale))
	if !misses(dst, out.X, out.Y, out.W, out.H) {
		dst.DrawImage(img, op)
	}
	return out
}

func abs32(v float32) float32 {
	if v < 0 {
		return -v
	}
	return v
}

// fitRect is where drawImageFit would put a w x h image in r.
func fitRect(w, h float32, r rect) rect {
	s := float32(math.Min(float64(r.W/w), float64(r.H/h)))
	return rect{r.X + (r.W-w*s)/2, r.Y + (r.H-h*s)/2, w * s, h * s}
}

// placeholder marks an image area whose content has not arrived.
func placeholder(dst *ebiten.Image, r rect, msg string) {
	fill(dst, r, colRaised)
	drawTextIn(dst, msg, r, sizeSmall, colDim)
}

func fmtScore(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "–"
	}
	a := math.Abs(v)
	switch {
	case a == 0:
		return "0"
	case a >= 100:
		return trimFloat(v, 1)
	case a >= 1:
		return trimFloat(v, 3)
	case a >= 0.001:
		return trimFloat(v, 4)
	default:
		return trimFloat(v, -1)
	}
}
