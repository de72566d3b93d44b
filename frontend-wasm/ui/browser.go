//go:build js && wasm

package ui

import (
	"errors"
	"fmt"
	"image"
	"syscall/js"
)

// await waits (in the calling goroutine, never in a JS callback) for a JS
// promise.
func await(p js.Value) (js.Value, error) {
	type result struct {
		v   js.Value
		err error
	}
	ch := make(chan result, 1)
	then := js.FuncOf(func(_ js.Value, args []js.Value) any {
		v := js.Undefined()
		if len(args) > 0 {
			v = args[0]
		}
		ch <- result{v: v}
		return nil
	})
	catch := js.FuncOf(func(_ js.Value, args []js.Value) any {
		msg := "promise rejected"
		if len(args) > 0 {
			msg = args[0].Call("toString").String()
		}
		ch <- result{err: errors.New(msg)}
		return nil
	})
	defer then.Release()
	defer catch.Release()
	p.Call("then", then, catch)
	r := <-ch
	return r.v, r.err
}

// decodeImage decodes an encoded image (PNG, JPEG...) with the browser's own
// decoder (createImageBitmap runs off the main thread), scaled so that its
// longer side is at most maxSide (0: native size). The Go side only copies
// the pixels, so a large image never stalls the frame loop.
func decodeImage(data []byte, maxSide int) (*image.RGBA, error) {
	return decode(data, func(w, h int) (int, int) {
		if maxSide > 0 && max(w, h) > maxSide {
			if w >= h {
				return maxSide, max(1, h*maxSide/w)
			}
			return max(1, w*maxSide/h), maxSide
		}
		return w, h
	})
}

// decodeImageTo decodes an image resampled to exactly w x h (an input
// image at the size of its anomaly map, to blend the two).
func decodeImageTo(data []byte, w, h int) (*image.RGBA, error) {
	return decode(data, func(int, int) (int, int) { return w, h })
}

func decode(data []byte, size func(w, h int) (int, int)) (*image.RGBA, error) {
	u8 := js.Global().Get("Uint8Array").New(len(data))
	js.CopyBytesToJS(u8, data)
	blob := js.Global().Get("Blob").New([]any{u8})
	bmp, err := await(js.Global().Call("createImageBitmap", blob))
	if err != nil {
		return nil, fmt.Errorf("decode image: %w", err)
	}
	defer bmp.Call("close")
	w, h := bmp.Get("width").Int(), bmp.Get("height").Int()
	if w <= 0 || h <= 0 {
		return nil, errors.New("decode image: empty image")
	}
	w, h = size(w, h)
	var canvas js.Value
	if oc := js.Global().Get("OffscreenCanvas"); oc.Truthy() {
		canvas = oc.New(w, h)
	} else {
		canvas = js.Global().Get("document").Call("createElement", "canvas")
		canvas.Set("width", w)
		canvas.Set("height", h)
	}
	ctx := canvas.Call("getContext", "2d")
	ctx.Call("drawImage", bmp, 0, 0, w, h)
	pix := ctx.Call("getImageData", 0, 0, w, h).Get("data")
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	js.CopyBytesToGo(img.Pix, js.Global().Get("Uint8Array").New(pix.Get("buffer")))
	return img, nil
}

// download makes the browser fetch url as a file.
func download(url, name string) {
	doc := js.Global().Get("document")
	a := doc.Call("createElement", "a")
	a.Set("href", url)
	a.Set("download", name)
	doc.Get("body").Call("appendChild", a)
	a.Call("click")
	a.Call("remove")
}

// pageParam is a query parameter of the page's URL.
func pageParam(name string) string {
	loc := js.Global().Get("location")
	p := js.Global().Get("URLSearchParams").New(loc.Get("search"))
	v := p.Call("get", name)
	if v.IsNull() {
		return ""
	}
	return v.String()
}

// origin is the page's origin: the server the client talks to.
func origin() string { return js.Global().Get("location").Get("origin").String() }

// exposeState installs window.diadState(), returning the client's state as
// JSON (see package hook).
func exposeState(state func() string) {
	js.Global().Set("diadState", js.FuncOf(func(js.Value, []js.Value) any { return state() }))
}

// onInput calls fn on every input event the page receives (and on resize,
// focus and visibility changes), before ebiten handles it.
func onInput(fn func()) {
	cb := js.FuncOf(func(js.Value, []js.Value) any { fn(); return nil })
	opts := map[string]any{"capture": true, "passive": true}
	for _, ev := range []string{"pointermove", "pointerdown", "pointerup", "mousemove", "mousedown", "mouseup",
		"wheel", "keydown", "keyup", "touchstart", "touchmove", "touchend", "dragover", "drop", "focus", "blur"} {
		js.Global().Get("document").Call("addEventListener", ev, cb, opts)
	}
	for _, ev := range []string{"resize", "focus", "visibilitychange"} {
		js.Global().Call("addEventListener", ev, cb, opts)
	}
}

// storage reads and writes localStorage (absent storage is not an error).
func storageGet(key string) string {
	ls := js.Global().Get("localStorage")
	if !ls.Truthy() {
		return ""
	}
	v := ls.Call("getItem", key)
	if v.IsNull() {
		return ""
	}
	return v.String()
}

func storageSet(key, value string) {
	if ls := js.Global().Get("localStorage"); ls.Truthy() {
		ls.Call("setItem", key, value)
	}
}
