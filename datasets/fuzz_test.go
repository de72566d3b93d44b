package datasets

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

func seedImages(f *testing.F) {
	f.Helper()
	g := image.NewGray16(image.Rect(0, 0, 3, 2))
	g.Set(1, 1, color.Gray16{Y: 40000})
	var b bytes.Buffer
	if err := png.Encode(&b, g); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	rgba := image.NewRGBA(image.Rect(0, 0, 4, 4))
	rgba.Set(2, 2, color.RGBA{200, 10, 10, 128})
	b.Reset()
	if err := jpeg.Encode(&b, rgba, nil); err != nil {
		f.Fatal(err)
	}
	f.Add(b.Bytes())
	f.Add([]byte("\x89PNG\r\n\x1a\n"))
	f.Add([]byte("GIF89a"))
	f.Add([]byte{})
}

// Image decoding takes any bytes a client uploads: an error, never a panic,
// and a decoded image is what its header said.
func FuzzDecodeBytes(f *testing.F) {
	seedImages(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, _, cerr := DecodeConfig(bytes.NewReader(data))
		img, err := DecodeBytes(data)
		if err != nil {
			return
		}
		if cerr != nil {
			t.Fatalf("decoded an image whose header did not parse: %v", cerr)
		}
		if b := img.Bounds(); b.Dx() != cfg.Width || b.Dy() != cfg.Height {
			t.Fatalf("decoded %v, header said %dx%d", b, cfg.Width, cfg.Height)
		}
	})
}

// The VisA split file is outside input: any content opens or fails with an
// error, and what opens only names images under the dataset root.
func FuzzVisASplitCSV(f *testing.F) {
	f.Add([]byte("object,split,label,image,mask\ncandle,train,normal,candle/Data/Images/Normal/0000.JPG,\ncandle,test,anomaly,candle/Data/Images/Anomaly/000.JPG,candle/Data/Masks/Anomaly/000.png\n"))
	f.Add([]byte("object,split,label,image,mask\n"))
	f.Add([]byte("a,b\n\"unterminated"))
	f.Add([]byte("object,split,label,image,mask\nx,test,anomaly,../../etc/passwd,\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		root := t.TempDir()
		if err := os.MkdirAll(filepath.Join(root, "split_csv"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "split_csv", "1cls.csv"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		ix, err := Open("visa", root, Options{})
		if err != nil {
			return
		}
		for _, s := range append(ix.Select(Train), ix.Select(Test)...) {
			rel, err := filepath.Rel(root, s.Path)
			if err != nil || rel == ".." || len(rel) >= 3 && rel[:3] == "../" {
				t.Fatalf("sample %q outside the root %s", s.Path, root)
			}
		}
	})
}
