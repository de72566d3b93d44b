//go:build js && wasm

package ui

import (
	"image"

	"github.com/hajimehoshi/ebiten/v2"
)

// textureCache holds decoded images as GPU textures, dropping the oldest
// beyond a limit.
type textureCache struct {
	limit   int
	tex     map[int64]*ebiten.Image
	order   []int64
	loading map[int64]bool
}

func newTextureCache(limit int) *textureCache {
	return &textureCache{limit: limit, tex: map[int64]*ebiten.Image{}, loading: map[int64]bool{}}
}

func (c *textureCache) put(id int64, img *image.RGBA) {
	delete(c.loading, id)
	if old, ok := c.tex[id]; ok {
		old.Deallocate()
	} else {
		c.order = append(c.order, id)
	}
	c.tex[id] = ebiten.NewImageFromImage(img)
	for len(c.order) > c.limit {
		if t, ok := c.tex[c.order[0]]; ok {
			t.Deallocate()
			delete(c.tex, c.order[0])
		}
		c.order = c.order[1:]
	}
}

func (c *textureCache) reset() {
	for _, t := range c.tex {
		t.Deallocate()
	}
	c.tex, c.order, c.loading = map[int64]*ebiten.Image{}, nil, map[int64]bool{}
}
