//go:build js && wasm

// Package ui is the ebiten application of the browser client.
package ui

import (
	"bytes"
	"github.com/hajimehoshi/ebiten/v2"
	"github.com/hajimehoshi/ebiten/v2/text/v2"
	"golang.org/x/image/font/gofont/goregular"
	"nhooyr.io/websocket"
)

type game struct{}

func (g *game) Update() error              { return nil }
func (g *game) Draw(s *ebiten.Image)       {}
func (g *game) Layout(w, h int) (int, int) { return w, h }

func Run() error {
	_, _ = text.NewGoTextFaceSource(bytes.NewReader(goregular.TTF))
	_ = websocket.StatusNormalClosure
	return ebiten.RunGame(&game{})
}
