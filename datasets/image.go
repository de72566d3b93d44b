// Package datasets loads anomaly-detection datasets (MVTec-AD, VisA, MVTec-3D
// RGB, generic folders) into normalised batches for the model, prefetching on
// goroutines, and generates the synthetic MVTec-layout dataset that tests,
// `make run` and the docs use (see Synthesize).
package datasets

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/draw"
	"image/jpeg"
	"image/png"
	"io"
	"os"

	xdraw "golang.org/x/image/draw"
)

// ImageNet normalisation, which the reference applies before the autoencoder.
var (
	ImageNetMean = [3]float32{0.485, 0.456, 0.406}
	ImageNetStd  = [3]float32{0.229, 0.224, 0.225}
)

// MaxPixels bounds the decoded size of one image (checked from the header,
// before decoding), so that a decompression bomb cannot exhaust memory.
const MaxPixels = 64 << 20

// ErrFormat is wrapped by decode errors for files that are not PNG or JPEG.
var ErrFormat = errors.New("not a PNG or JPEG image")

// DecodeConfig reads an image's header: format and dimensions.
func DecodeConfig(r io.Reader) (image.Config, string, error) {
	br := bufio.NewReader(r)
	// A short read leaves a short head, which matches no format below.
	head, err := br.Peek(8)
	if err != nil && !errors.Is(err, io.EOF) {
		return image.Config{}, "", fmt.Errorf("read image header: %w", err)
	}
	switch {
	case bytes.HasPrefix(head, []byte("\x89PNG\r\n\x1a\n")):
		c, err := png.DecodeConfig(br)
		return c, "png", err
	case bytes.HasPrefix(head, []byte{0xff, 0xd8}):
		c, err := jpeg.DecodeConfig(br)
		return c, "jpeg", err
	}
	return image.Config{}, "", ErrFormat
}

// DecodeBytes decodes a PNG or JPEG (format sniffed from the content, not the
// name), refusing images over MaxPixels before decoding them.
func DecodeBytes(b []byte) (image.Image, error) {
	cfg, format, err := DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > MaxPixels {
		return nil, fmt.Errorf("%dx%d pixels is outside 1..%d", cfg.Width, cfg.Height, MaxPixels)
	}
	if format == "png" {
		return png.Decode(bytes.NewReader(b))
	}
	return jpeg.Decode(bytes.NewReader(b))
}

// DecodeFile decodes an image file; errors name the file.
func DecodeFile(path string) (image.Image, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read image: %w", err)
	}
	img, err := DecodeBytes(b)
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", path, err)
	}
	return img, nil
}

// opaqueRGB converts any image (8/16-bit, gray, paletted, CMYK, with alpha) to
// non-premultiplied 8-bit RGB with the alpha channel dropped, as PIL's
// convert("RGB") does.
func opaqueRGB(src image.Image) *image.NRGBA {
	b := src.Bounds()
	dst := image.NewNRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(dst, dst.Bounds(), src, b.Min, draw.Src)
	for i := 3; i < len(dst.Pix); i += 4 {
		dst.Pix[i] = 0xff
	}
	return dst
}

// ResizeRGB converts img to RGB and resizes it to size x size (aspect not
// kept, as the reference) with bilinear filtering that widens its kernel when
// shrinking, i.e. antialiased like PIL's BILINEAR.
func ResizeRGB(img image.Image, size int) *image.RGBA {
	src := opaqueRGB(img)
	dst := image.NewRGBA(image.Rect(0, 0, size, size))
	xdraw.BiLinear.Scale(dst, dst.Bounds(), src, src.Bounds(), xdraw.Src, nil)
	return dst
}

// NormalizeCHW writes an RGB image into dst (3*H*W floats, channel-major) as
// ImageNet-normalised values.
func NormalizeCHW(img *image.RGBA, dst []float32) {
	b := img.Bounds()
	n := b.Dx() * b.Dy()
	for c := 0; c < 3; c++ {
		mean, std := ImageNetMean[c], ImageNetStd[c]
		out := dst[c*n : (c+1)*n]
		for i := 0; i < n; i++ {
			out[i] = (float32(img.Pix[4*i+c])/255 - mean) / std
		}
	}
}

// Denormalize is NormalizeCHW's inverse into 8-bit RGB (values clamped).
func Denormalize(chw []float32, size int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, size, size))
	n := size * size
	for i := 0; i < n; i++ {
		for c := 0; c < 3; c++ {
			v := (chw[c*n+i]*ImageNetStd[c] + ImageNetMean[c]) * 255
			img.Pix[4*i+c] = uint8(min(max(v+0.5, 0), 255))
		}
		img.Pix[4*i+3] = 0xff
	}
	return img
}

// ResizeMask converts a mask image to gray, resizes it bilinearly to
// size x size, and binarises it at half intensity.
func ResizeMask(img image.Image, size int) []bool {
	b := img.Bounds()
	gray := image.NewGray(image.Rect(0, 0, b.Dx(), b.Dy()))
	draw.Draw(gray, gray.Bounds(), img, b.Min, draw.Src)
	dst := image.NewGray(image.Rect(0, 0, size, size))
	xdraw.BiLinear.Scale(dst, dst.Bounds(), gray, gray.Bounds(), xdraw.Src, nil)
	out := make([]bool, size*size)
	for i, v := range dst.Pix {
		out[i] = v > 127
	}
	return out
}
