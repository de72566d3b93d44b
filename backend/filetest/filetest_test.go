package filetest

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"path/filepath"
	"testing"
)

// fakeT records a failure instead of ending the goroutine, so that the
// helpers' failure path can be checked.
type fakeT struct {
	testing.TB
	failed bool
}

func (f *fakeT) Helper()           {}
func (f *fakeT) Fatal(args ...any) { f.failed = true }

func TestReadWriteAndTheirFailures(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	Write(t, p, []byte("one"))
	if got := string(Read(t, p)); got != "one" {
		t.Fatalf("read %q", got)
	}
	ft := &fakeT{}
	Read(ft, filepath.Join(t.TempDir(), "absent"))
	if !ft.failed {
		t.Fatal("reading an absent file did not fail the test")
	}
	ft = &fakeT{}
	Write(ft, filepath.Join(t.TempDir(), "no", "such", "dir", "f"), nil)
	if !ft.failed {
		t.Fatal("writing into an absent folder did not fail the test")
	}
}

func TestWritePNGWritesTheImage(t *testing.T) {
	img := image.NewGray(image.Rect(0, 0, 3, 2))
	img.SetGray(2, 1, color.Gray{Y: 200})
	p := filepath.Join(t.TempDir(), "a.png")
	WritePNG(t, p, img)
	got, err := png.Decode(bytes.NewReader(Read(t, p)))
	if err != nil {
		t.Fatal(err)
	}
	if b := got.Bounds(); b.Dx() != 3 || b.Dy() != 2 || color.GrayModel.Convert(got.At(2, 1)).(color.Gray).Y != 200 {
		t.Fatalf("read back %v, pixel %v", got.Bounds(), got.At(2, 1))
	}
	ft := &fakeT{}
	WritePNG(ft, filepath.Join(t.TempDir(), "no", "dir", "a.png"), img)
	if !ft.failed {
		t.Fatal("writing into an absent folder did not fail the test")
	}
}
