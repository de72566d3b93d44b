// Package visual turns model tensors into pictures people can read: anomaly
// heatmaps on a colour scale anchored to the decision threshold, overlays of a
// heatmap on its image, RGB previews of 4-channel latents, and each latent
// channel on its own signed colour scale.
package visual

import (
	"image"
	"image/color"
	"math"
	"sort"
)

// Colormap maps t in [0, 1] to a perceptually ordered blue-cyan-yellow-red
// scale (black below 0 is never produced: t is clamped).
func Colormap(t float64) color.RGBA {
	t = math.Min(math.Max(t, 0), 1)
	// control points of a turbo-like scale
	stops := [][3]float64{{0.19, 0.07, 0.23}, {0.16, 0.47, 0.92}, {0.10, 0.85, 0.70}, {0.64, 0.98, 0.23}, {0.98, 0.73, 0.17}, {0.89, 0.27, 0.05}, {0.48, 0.02, 0.01}}
	x := t * float64(len(stops)-1)
	i := int(math.Min(x, float64(len(stops)-2)))
	f := x - float64(i)
	var c [3]uint8
	for k := 0; k < 3; k++ {
		c[k] = uint8(math.Round(255 * (stops[i][k]*(1-f) + stops[i+1][k]*f)))
	}
	return color.RGBA{c[0], c[1], c[2], 255}
}

// Scale maps anomaly-map values to [0, 1] for colouring.
type Scale struct {
	Lo, Hi float64
}

// ThresholdScale anchors colours to the decision threshold: 0 maps to the
// bottom, the threshold to the middle, twice the threshold to the top, so the
// same colour means the same evidence in every image.
func ThresholdScale(threshold float64) Scale { return Scale{Lo: 0, Hi: 2 * threshold} }

// MinMaxScale spreads one map's own range over the whole scale (per-image
// contrast; colours are not comparable between images).
func MinMaxScale(values []float32) Scale {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range values {
		lo, hi = math.Min(lo, float64(v)), math.Max(hi, float64(v))
	}
	if !(hi > lo) {
		hi = lo + 1
	}
	return Scale{Lo: lo, Hi: hi}
}

func (s Scale) unit(v float64) float64 {
	if !(s.Hi > s.Lo) {
		return 0
	}
	return (v - s.Lo) / (s.Hi - s.Lo)
}

// Heatmap colours a w x h map.
func Heatmap(values []float32, w, h int, s Scale) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i, v := range values {
		c := Colormap(s.unit(float64(v)))
		img.Pix[4*i], img.Pix[4*i+1], img.Pix[4*i+2], img.Pix[4*i+3] = c.R, c.G, c.B, 255
	}
	return img
}

// Overlay blends a heatmap over an image of the same size; alpha grows with
// the evidence so that normal regions stay visible.
func Overlay(base *image.RGBA, values []float32, s Scale, maxAlpha float64) *image.RGBA {
	b := base.Bounds()
	out := image.NewRGBA(b)
	for i := 0; i < b.Dx()*b.Dy(); i++ {
		u := math.Min(math.Max(s.unit(float64(values[i])), 0), 1)
		c := Colormap(u)
		a := maxAlpha * u
		for k, hv := range []uint8{c.R, c.G, c.B} {
			out.Pix[4*i+k] = uint8(math.Round(float64(base.Pix[4*i+k])*(1-a) + float64(hv)*a))
		}
		out.Pix[4*i+3] = 255
	}
	return out
}

// LatentPreview shows a [4, h, w] latent (C order) as RGB through a fixed
// linear projection of its channels, the one commonly used to preview Stable
// Diffusion latents, then maps [-1, 1] to [0, 255].
func LatentPreview(latent []float32, w, h int) *image.RGBA {
	proj := [4][3]float64{{0.298, 0.207, 0.208}, {0.187, 0.286, 0.173}, {-0.158, 0.189, 0.264}, {-0.184, -0.271, -0.473}}
	n := w * h
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := 0; i < n; i++ {
		for k := 0; k < 3; k++ {
			v := 0.0
			for c := 0; c < 4; c++ {
				v += float64(latent[c*n+i]) * proj[c][k]
			}
			img.Pix[4*i+k] = uint8(math.Round(math.Min(math.Max((v+1)/2, 0), 1) * 255))
		}
		img.Pix[4*i+3] = 255
	}
	return img
}

// LatentLimits are the ranges latent channel pictures use: the smallest
// that holds a trajectory's values. A few round steps keep the scale fixed
// while frames arrive (a colour means the same value at every step) and
// readable in a caption; SD-scaled latents take ±3 or ±5, a briefly trained
// tiny autoencoder's far less.
var LatentLimits = []float64{0.25, 0.5, 1, 2, 3, 5, 10, 20}

// LatentQuantile is the share of a latent's values its picture's range must
// hold: the rest (outliers) are clamped, so that one extreme value does not
// dim every other.
const LatentQuantile = 0.99

// AbsQuantile is the q-quantile of |v| over values (0 for none).
func AbsQuantile(values []float32, q float64) float64 {
	if len(values) == 0 {
		return 0
	}
	abs := make([]float64, len(values))
	for i, v := range values {
		abs[i] = math.Abs(float64(v))
	}
	sort.Float64s(abs)
	return abs[min(int(q*float64(len(abs))), len(abs)-1)]
}

// LatentLimit is the first of LatentLimits that holds maxAbs, or maxAbs
// itself beyond them.
func LatentLimit(maxAbs float64) float64 {
	for _, l := range LatentLimits {
		if maxAbs <= l {
			return l
		}
	}
	return maxAbs
}

// Diverging colours a signed value: dark at 0, blue towards -limit, orange
// towards +limit (clamped), readable on a dark background.
func Diverging(v, limit float64) color.RGBA {
	neutral := [3]float64{0x1c, 0x1f, 0x27}
	negative := [3]float64{0x4f, 0xb0, 0xff}
	positive := [3]float64{0xff, 0x8a, 0x3d}
	t := math.Min(math.Abs(v)/limit, 1)
	end := positive
	if v < 0 {
		end = negative
	}
	var c [3]uint8
	for k := range c {
		c[k] = uint8(math.Round(neutral[k] + (end[k]-neutral[k])*t))
	}
	return color.RGBA{c[0], c[1], c[2], 255}
}

// LatentChannels lays out the channels of a [c, h, w] latent (C order) as a
// grid of tiles, ceil(sqrt(c)) per row, one pixel apart, each coloured by
// Diverging at limit. Gaps are transparent.
func LatentChannels(latent []float32, c, h, w int, limit float64) *image.RGBA {
	cols := int(math.Ceil(math.Sqrt(float64(c))))
	rows := (c + cols - 1) / cols
	img := image.NewRGBA(image.Rect(0, 0, cols*w+cols-1, rows*h+rows-1))
	for ch := 0; ch < c; ch++ {
		x0, y0 := (ch%cols)*(w+1), (ch/cols)*(h+1)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				img.SetRGBA(x0+x, y0+y, Diverging(float64(latent[(ch*h+y)*w+x]), limit))
			}
		}
	}
	return img
}

// MaskOutline draws the outline of a ground-truth mask (w*h, row-major,
// img's size) onto img in colour c: the mask pixels with a neighbour
// outside the mask or on the border, so the defect region stays visible
// inside the line.
func MaskOutline(img *image.RGBA, mask []bool, c color.RGBA) {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	if len(mask) != w*h {
		return
	}
	in := func(x, y int) bool { return x >= 0 && y >= 0 && x < w && y < h && mask[y*w+x] }
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if !mask[y*w+x] || (in(x-1, y) && in(x+1, y) && in(x, y-1) && in(x, y+1)) {
				continue
			}
			i := 4 * (y*w + x)
			img.Pix[i], img.Pix[i+1], img.Pix[i+2], img.Pix[i+3] = c.R, c.G, c.B, 255
		}
	}
}
