//go:build js && wasm

package ui

import (
	"fmt"
	"image"
	"image/color"

	"github.com/hajimehoshi/ebiten/v2"

	"github.com/diad-project/diad/backend/visual"
	"github.com/diad-project/diad/shared"
)

// Overlay modes of the gallery's thumbnails and review picture (o cycles):
// the stored anomaly map blended over the image, the ground-truth mask's
// outline, or both.
const (
	overlayOff = iota
	overlayHeatmap
	overlayMask
	overlayBoth
)

var overlayNames = []string{"off", "heatmap", "mask", "both"}

// maskColour outlines ground-truth defects: a colour the heatmap never uses.
var maskColour = color.RGBA{0x00, 0xe5, 0xff, 0xff}

// overlaySource is what one image's overlays are drawn from, at the stored
// map's size: the image, its map and its mask (nil: none).
type overlaySource struct {
	img  *image.RGBA
	vals []float32
	mask []bool
}

// overlayCache keeps overlay sources and the textures drawn from them,
// dropping the oldest beyond a limit (as the thumbnails do).
type overlayCache struct {
	limit   int
	src     map[int64]*overlaySource
	order   []int64
	loading map[int64]bool
	tex     map[string]*ebiten.Image // id|mode|scale
	texKeys []string
	masks   int // images whose mask was found
}

func newOverlayCache(limit int) *overlayCache {
	c := &overlayCache{limit: limit}
	c.reset()
	return c
}

func (c *overlayCache) reset() {
	for _, t := range c.tex {
		t.Deallocate()
	}
	c.src, c.order, c.loading, c.tex, c.texKeys, c.masks = map[int64]*overlaySource{}, nil, map[int64]bool{}, map[string]*ebiten.Image{}, nil, 0
}

func (c *overlayCache) putSource(id int64, s *overlaySource) {
	delete(c.loading, id)
	if _, ok := c.src[id]; !ok {
		c.order = append(c.order, id)
	}
	c.src[id] = s
	if s.mask != nil {
		c.masks++
	}
	for len(c.order) > c.limit {
		delete(c.src, c.order[0])
		c.order = c.order[1:]
	}
}

func (c *overlayCache) putTexture(key string, img *image.RGBA) *ebiten.Image {
	t := ebiten.NewImageFromImage(img)
	c.tex[key] = t
	c.texKeys = append(c.texKeys, key)
	for len(c.texKeys) > c.limit {
		if old, ok := c.tex[c.texKeys[0]]; ok {
			old.Deallocate()
			delete(c.tex, c.texKeys[0])
		}
		c.texKeys = c.texKeys[1:]
	}
	return t
}

// overlayThumb is an image's picture with the gallery's overlay (nil while
// it loads, or with overlays off); fetching and drawing happen in the layout
// pass, as for thumbnails.
func (a *App) overlayThumb(im shared.ImageInfo) *ebiten.Image {
	c := a.galleryView.overlays
	if a.galleryView.overlay == overlayOff {
		return nil
	}
	src, ok := c.src[im.ImageID]
	if !ok {
		a.fetchOverlay(im)
		return nil
	}
	s := a.scaleFor(src.vals, im.Category)
	key := fmt.Sprintf("%d|%d|%g|%g", im.ImageID, a.galleryView.overlay, s.Lo, s.Hi)
	if t, ok := c.tex[key]; ok || a.painting {
		return t
	}
	var out *image.RGBA
	if a.galleryView.overlay == overlayHeatmap || a.galleryView.overlay == overlayBoth {
		out = visual.Overlay(src.img, src.vals, s, overlayAlpha)
	} else {
		out = image.NewRGBA(src.img.Bounds())
		copy(out.Pix, src.img.Pix)
	}
	if a.galleryView.overlay == overlayMask || a.galleryView.overlay == overlayBoth {
		visual.MaskOutline(out, src.mask, maskColour)
	}
	return c.putTexture(key, out)
}

// fetchOverlay loads an image's map, mask and file in the background.
func (a *App) fetchOverlay(im shared.ImageInfo) {
	c := a.galleryView.overlays
	if a.painting || c.loading[im.ImageID] || a.decodes >= a.cfg.MaxDecodes || !a.galleryView.lastScroll.IsZero() {
		return
	}
	c.loading[im.ImageID] = true
	a.decodes++
	run, id := a.runID, im.ImageID
	go func() {
		src, err := a.loadOverlay(run, id)
		a.post(func() {
			a.decodes--
			if run != a.runID {
				return
			}
			if err != nil {
				delete(c.loading, id)
				a.fail(fmt.Errorf("overlay of image %d: %w", id, err))
				return
			}
			c.putSource(id, src)
		})
	}()
}

// loadOverlay fetches and decodes what an image's overlays are drawn from.
func (a *App) loadOverlay(run string, id int64) (*overlaySource, error) {
	m, err := a.client.Map(a.ctx, run, id)
	if err != nil {
		return nil, err
	}
	mapImg, err := decodeImage(m.PNG, 0)
	if err != nil {
		return nil, err
	}
	b := mapImg.Bounds()
	w, h := b.Dx(), b.Dy()
	s := &overlaySource{vals: make([]float32, w*h)}
	for i := range s.vals {
		s.vals[i] = m.Offset + float32(mapImg.Pix[4*i])/255*m.Scale
	}
	file, err := a.client.Source(a.ctx, run, id)
	if err != nil {
		return nil, err
	}
	if s.img, err = decodeImageTo(file, w, h); err != nil {
		return nil, err
	}
	maskFile, found, err := a.client.Mask(a.ctx, run, id)
	if err != nil {
		return nil, err
	}
	if found {
		maskImg, err := decodeImageTo(maskFile, w, h)
		if err != nil {
			return nil, fmt.Errorf("mask: %w", err)
		}
		s.mask = make([]bool, w*h)
		for i := range s.mask {
			s.mask[i] = maskImg.Pix[4*i] > 127
		}
	}
	return s, nil
}
