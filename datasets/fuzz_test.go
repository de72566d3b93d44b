package datasets

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diad-project/diad/backend/filetest"
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
	f.Add([]byte("object,split,label,image,mask\nx,train,normal,a/0.png,\nx,test,anomaly,/etc/hostname,../../etc/hosts\n"))
	// The parser itself, on bytes (no file per input, so 10^5 inputs take
	// seconds); TestVisAPathsStayInTheRoot covers the file around it.
	const root = "/data/visa"
	f.Fuzz(func(t *testing.T, data []byte) {
		samples, _, err := readVisASplit(root, "1cls.csv", bytes.NewReader(data))
		if err != nil {
			return
		}
		for _, s := range samples {
			for _, p := range []string{s.Path, s.MaskPath} {
				if p == "" {
					continue
				}
				rel, err := filepath.Rel(root, p)
				if err != nil || !filepath.IsLocal(rel) {
					t.Fatalf("sample path %q outside the root %s", p, root)
				}
			}
		}
	})
}

// TestVisAPathsStayInTheRoot: a split file whose image or mask paths leave
// the dataset folder is refused (it was accepted when it had train and test
// rows, and /etc/passwd became a training image).
func TestVisAPathsStayInTheRoot(t *testing.T) {
	for name, rows := range map[string]string{
		"parent image":  "x,train,normal,../../../../etc/passwd,\nx,test,normal,x/1.png,\n",
		"absolute mask": "x,train,normal,x/0.png,\nx,test,anomaly,x/1.png,/etc/hosts\n",
		"parent inside": "x,train,normal,x/../../outside.png,\nx,test,normal,x/1.png,\n",
	} {
		root := t.TempDir()
		if err := os.MkdirAll(filepath.Join(root, "split_csv"), 0o755); err != nil {
			t.Fatal(err)
		}
		filetest.Write(t, filepath.Join(root, "split_csv", "1cls.csv"), []byte("object,split,label,image,mask\n"+rows))
		if _, err := Open("visa", root, Options{}); err == nil || !strings.Contains(err.Error(), "leaves the dataset folder") {
			t.Errorf("%s: %v, want a refusal", name, err)
		}
	}
}
