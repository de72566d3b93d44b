package datasets

import (
	"context"
	"encoding/binary"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/diad-project/diad/backend/filetest"
)

func writeImage(t *testing.T, path string, img image.Image) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if strings.HasSuffix(strings.ToLower(path), ".jpg") {
		err = jpeg.Encode(f, img, &jpeg.Options{Quality: 95})
	} else {
		err = png.Encode(f, img)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func solid(n int, c color.Color) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, n, n))
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			img.Set(x, y, c)
		}
	}
	return img
}

// mvtecTree makes a two-category MVTec-layout dataset.
func mvtecTree(t *testing.T) string {
	root := t.TempDir()
	for _, c := range []string{"bottle", "cable"} {
		for i := 0; i < 3; i++ {
			writeImage(t, filepath.Join(root, c, "train", "good", string(rune('a'+i))+".png"), solid(20, color.NRGBA{100, 100, 100, 255}))
		}
		writeImage(t, filepath.Join(root, c, "test", "good", "g.png"), solid(20, color.NRGBA{100, 100, 100, 255}))
		writeImage(t, filepath.Join(root, c, "test", "broken", "b.png"), solid(20, color.NRGBA{200, 0, 0, 255}))
		mask := image.NewGray(image.Rect(0, 0, 20, 20))
		for i := 0; i < 100; i++ {
			mask.Pix[i] = 255
		}
		writeImage(t, filepath.Join(root, c, "ground_truth", "broken", "b_mask.png"), mask)
	}
	return root
}

func TestMVTecLayout(t *testing.T) {
	root := mvtecTree(t)
	ix, err := Open("auto", root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if ix.Layout != "mvtec" || !reflect.DeepEqual(ix.Categories, []string{"bottle", "cable"}) {
		t.Fatalf("layout %s categories %v", ix.Layout, ix.Categories)
	}
	if n := len(ix.Select(Train)); n != 6 {
		t.Fatalf("%d train samples", n)
	}
	test := ix.Select(Test, "cable")
	if len(test) != 2 {
		t.Fatalf("cable test: %+v", test)
	}
	for _, s := range test {
		if s.Anomalous != (s.Defect == "broken") || (s.Anomalous && !strings.HasSuffix(s.MaskPath, "b_mask.png")) {
			t.Fatalf("sample %+v", s)
		}
	}
	it, err := LoadItem(test[0], 16)
	if err != nil {
		t.Fatal(err)
	}
	count := 0
	for _, m := range it.Mask {
		if m {
			count++
		}
	}
	if it.Sample.Anomalous && (count < 40 || count > 100) {
		t.Fatalf("mask has %d of 256 pixels on (top quarter expected)", count)
	}
	// Single-category mode and errors that say what was expected.
	if ix, err := Open("mvtec", root, Options{Categories: []string{"cable"}}); err != nil || len(ix.Samples) != 5 {
		t.Fatalf("single category: %v %d", err, len(ix.Samples))
	}
	if _, err := Open("mvtec", root, Options{Categories: []string{"screw"}}); err == nil || !strings.Contains(err.Error(), "bottle, cable") {
		t.Fatalf("missing category: %v", err)
	}
	os.RemoveAll(filepath.Join(root, "cable", "test"))
	if _, err := Open("mvtec", root, Options{}); err == nil || !strings.Contains(err.Error(), "cable/test") {
		t.Fatalf("missing split: %v", err)
	}
	os.Remove(filepath.Join(root, "bottle", "ground_truth", "broken", "b_mask.png"))
	if _, err := Open("mvtec", root, Options{Categories: []string{"bottle"}}); err == nil || !strings.Contains(err.Error(), "b_mask.png") {
		t.Fatalf("missing mask: %v", err)
	}
	if _, err := Open("mvtec", filepath.Join(root, "nope"), Options{}); err == nil {
		t.Fatal("absent root accepted")
	}
	if _, err := Open("coco", root, Options{}); err == nil {
		t.Fatal("unknown layout accepted")
	}
}

func TestVisAMVTec3DAndFolderLayouts(t *testing.T) {
	img := solid(12, color.NRGBA{10, 20, 30, 255})
	mask := image.NewGray(image.Rect(0, 0, 12, 12))
	mask.Pix[0] = 255

	visa := t.TempDir()
	for _, p := range []string{"candle/Data/Images/Normal/0001.JPG", "candle/Data/Images/Normal/0002.JPG", "candle/Data/Images/Anomaly/0003.JPG"} {
		writeImage(t, filepath.Join(visa, p), img)
	}
	writeImage(t, filepath.Join(visa, "candle/Data/Masks/Anomaly/0003.png"), mask)
	csv := "object,split,label,image,mask\n" +
		"candle,train,normal,candle/Data/Images/Normal/0001.JPG,\n" +
		"candle,test,normal,candle/Data/Images/Normal/0002.JPG,\n" +
		"candle,test,anomaly,candle/Data/Images/Anomaly/0003.JPG,candle/Data/Masks/Anomaly/0003.png\n"
	if err := os.MkdirAll(filepath.Join(visa, "split_csv"), 0o755); err != nil {
		t.Fatal(err)
	}
	filetest.Write(t, filepath.Join(visa, "split_csv", "1cls.csv"), []byte(csv))
	ix, err := Open("auto", visa, Options{})
	if err != nil || ix.Layout != "visa" || len(ix.Samples) != 3 {
		t.Fatalf("visa: %v %+v", err, ix)
	}
	an := ix.Select(Test)[1]
	if !an.Anomalous || !strings.HasSuffix(an.MaskPath, "0003.png") {
		t.Fatalf("visa anomaly %+v", an)
	}
	if _, err := LoadItem(an, 8); err != nil {
		t.Fatal(err)
	}
	filetest.Write(t, filepath.Join(visa, "split_csv", "1cls.csv"), []byte("object,split,image\ncandle,train,x.JPG\n"))
	if _, err := Open("visa", visa, Options{}); err == nil || !strings.Contains(err.Error(), "label") {
		t.Fatalf("bad csv: %v", err)
	}

	m3d := t.TempDir()
	writeImage(t, filepath.Join(m3d, "bagel/train/good/rgb/000.png"), img)
	writeImage(t, filepath.Join(m3d, "bagel/test/good/rgb/000.png"), img)
	writeImage(t, filepath.Join(m3d, "bagel/test/crack/rgb/000.png"), img)
	writeImage(t, filepath.Join(m3d, "bagel/test/crack/gt/000.png"), mask)
	ix, err = Open("auto", m3d, Options{})
	if err != nil || ix.Layout != "mvtec3d" || len(ix.Samples) != 3 || !strings.HasSuffix(ix.Select(Test)[0].MaskPath, "gt/000.png") {
		t.Fatalf("mvtec3d: %v %+v", err, ix)
	}

	folder := filepath.Join(t.TempDir(), "widgets")
	for i := 0; i < 5; i++ {
		writeImage(t, filepath.Join(folder, "normal", string(rune('a'+i))+".png"), img)
	}
	writeImage(t, filepath.Join(folder, "abnormal", "z.png"), img)
	ix, err = Open("auto", folder, Options{})
	if err != nil || ix.Layout != "folder" || ix.Categories[0] != "widgets" || len(ix.Select(Train)) != 4 || len(ix.Select(Test)) != 2 {
		t.Fatalf("folder: %v %+v", err, ix)
	}
}

func TestImageFormatsAndBadFiles(t *testing.T) {
	dir := t.TempDir()
	// 16-bit, grayscale and RGBA PNGs load as RGB.
	g16 := image.NewGray16(image.Rect(0, 0, 4, 4))
	for i := range g16.Pix {
		g16.Pix[i] = 0x80
	}
	writeImage(t, filepath.Join(dir, "g16.png"), g16)
	rgba := solid(4, color.NRGBA{200, 100, 50, 128})
	writeImage(t, filepath.Join(dir, "rgba.png"), rgba)
	gray := image.NewGray(image.Rect(0, 0, 4, 4))
	for i := range gray.Pix {
		gray.Pix[i] = 77
	}
	writeImage(t, filepath.Join(dir, "gray.jpg"), gray)
	for name, want := range map[string][3]uint8{"g16.png": {128, 128, 128}, "rgba.png": {200, 100, 50}, "gray.jpg": {77, 77, 77}} {
		img, err := DecodeFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		px := ResizeRGB(img, 2).Pix
		for c := 0; c < 3; c++ {
			if d := int(px[c]) - int(want[c]); d < -2 || d > 2 {
				t.Errorf("%s: pixel %v, want %v", name, px[:3], want)
			}
		}
	}
	// A CMYK JPEG, written by PIL, loads as RGB.
	if _, err := exec.LookPath("python3"); err == nil {
		cmyk := filepath.Join(dir, "cmyk.jpg")
		out, err := exec.Command("python3", "-c", "import sys; from PIL import Image; Image.new('RGB', (8, 8), (200, 40, 40)).convert('CMYK').save(sys.argv[1], quality=95)", cmyk).CombinedOutput()
		if err != nil {
			if os.Getenv("DIAD_TORCH_MODE") == "root" {
				t.Fatalf("python3 PIL: %v %s", err, out)
			}
			t.Logf("no PIL to write a CMYK JPEG: %v", err)
		} else {
			img, err := DecodeFile(cmyk)
			if err != nil {
				t.Fatal(err)
			}
			px := ResizeRGB(img, 2).Pix
			if px[0] < 180 || px[1] > 70 || px[2] > 70 {
				t.Fatalf("CMYK JPEG decoded to %v, want about (200, 40, 40)", px[:3])
			}
		}
	}
	// Corrupt, truncated and non-image files are errors naming the file.
	good := filetest.Read(t, filepath.Join(dir, "rgba.png"))
	filetest.Write(t, filepath.Join(dir, "trunc.png"), good[:len(good)/2])
	filetest.Write(t, filepath.Join(dir, "text.png"), []byte("hello"))
	bad := append([]byte(nil), good...)
	for i := 40; i < len(bad)-12; i++ {
		bad[i] ^= 0x5a
	}
	filetest.Write(t, filepath.Join(dir, "corrupt.png"), bad)
	for _, name := range []string{"trunc.png", "text.png", "corrupt.png", "absent.png"} {
		p := filepath.Join(dir, name)
		if _, err := DecodeFile(p); err == nil {
			t.Errorf("%s decoded", name)
		} else if name != "absent.png" && !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error does not name the file: %v", name, err)
		}
	}
	// A huge declared size is refused before decoding.
	ihdr := []byte("IHDR\x00\x01\x00\x00\x00\x01\x00\x00\x08\x02\x00\x00\x00")
	hdr := append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0d"), ihdr...)
	hdr = binary.BigEndian.AppendUint32(hdr, crc32.ChecksumIEEE(ihdr))
	if _, err := DecodeBytes(append(hdr, make([]byte, 16)...)); err == nil || !strings.Contains(err.Error(), "65536x65536") {
		t.Errorf("bomb header: %v", err)
	}
}

func TestResizeIsAntialiased(t *testing.T) {
	// A 1-pixel checkerboard shrunk 8x must become flat gray, not aliased.
	n := 64
	img := image.NewGray(image.Rect(0, 0, n, n))
	for y := 0; y < n; y++ {
		for x := 0; x < n; x++ {
			if (x+y)%2 == 0 {
				img.Pix[y*n+x] = 255
			}
		}
	}
	out := ResizeRGB(img, 8)
	for i := 0; i < 64; i++ {
		if v := out.Pix[4*i]; v < 110 || v > 145 {
			t.Fatalf("pixel %d = %d, want about 128", i, v)
		}
	}
	// Normalisation round trip.
	chw := make([]float32, 3*8*8)
	NormalizeCHW(out, chw)
	if math.Abs(float64(chw[0])-float64((float32(out.Pix[0])/255-ImageNetMean[0])/ImageNetStd[0])) > 1e-6 {
		t.Fatal("normalisation")
	}
	back := Denormalize(chw, 8)
	if back.Pix[0] != out.Pix[0] || back.Pix[5] != out.Pix[5] {
		t.Fatal("denormalise does not invert normalise")
	}
}

func TestLoaderPrefetchOrderAndResume(t *testing.T) {
	root := t.TempDir()
	ix, err := Synthesize(root, SynthConfig{Seed: 3, Size: 32, Train: 6, TestGood: 1, PerDefect: 1, Categories: []string{"woven", "disc"}})
	if err != nil {
		t.Fatal(err)
	}
	train := ix.Select(Train)
	l, err := NewLoader(train, LoaderConfig{Size: 16, BatchSize: 5, Shuffle: true, Seed: 9, Workers: 3})
	if err != nil {
		t.Fatal(err)
	}
	if l.BatchesPerEpoch() != 3 {
		t.Fatalf("%d batches", l.BatchesPerEpoch())
	}
	collect := func(epoch, from int) []string {
		var paths []string
		next := from
		for r := range l.Epoch(context.Background(), epoch, from) {
			if r.Err != nil {
				t.Fatal(r.Err)
			}
			if r.Batch.Index != next {
				t.Fatalf("batch %d out of order (want %d)", r.Batch.Index, next)
			}
			next++
			for _, it := range r.Batch.Items {
				paths = append(paths, it.Sample.Path)
			}
		}
		return paths
	}
	e0 := collect(0, 0)
	if len(e0) != 12 || reflect.DeepEqual(e0, collect(1, 0)) {
		t.Fatal("epochs should cover all samples in different orders")
	}
	if !reflect.DeepEqual(e0, collect(0, 0)) {
		t.Fatal("same epoch, different order")
	}
	if !reflect.DeepEqual(e0[10:], collect(0, 2)) {
		t.Fatal("resuming at batch 2 does not continue the epoch")
	}
	// A corrupt file ends the epoch with an error naming it.
	filetest.Write(t, train[4].Path, []byte("broken"))
	var gotErr error
	for r := range l.Epoch(context.Background(), 0, 0) {
		if r.Err != nil {
			gotErr = r.Err
		}
	}
	if gotErr == nil || !strings.Contains(gotErr.Error(), train[4].Path) {
		t.Fatalf("corrupt file: %v", gotErr)
	}
	// Cancelling stops the producer.
	ctx, cancel := context.WithCancel(context.Background())
	ch := l.Epoch(ctx, 1, 0)
	cancel()
	for range ch {
	}
}

func TestSynthesizeIsDeterministic(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	cfg := SynthConfig{Seed: 5, Size: 32, Train: 2, TestGood: 1, PerDefect: 2}
	ia, err := Synthesize(a, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Synthesize(b, cfg); err != nil {
		t.Fatal(err)
	}
	if len(ia.Categories) != 6 {
		t.Fatalf("categories %v", ia.Categories)
	}
	anomalous := 0
	for _, s := range ia.Samples {
		x := filetest.Read(t, s.Path)
		y := filetest.Read(t, strings.Replace(s.Path, a, b, 1))
		if string(x) != string(y) {
			t.Fatalf("%s differs between runs", s.Path)
		}
		if s.Anomalous {
			anomalous++
			it, err := LoadItem(s, 32)
			if err != nil {
				t.Fatal(err)
			}
			on := 0
			for _, m := range it.Mask {
				if m {
					on++
				}
			}
			if on == 0 {
				t.Errorf("%s: empty defect mask", s.Path)
			}
		}
	}
	if anomalous != 2*(3+3+3+2+4+3) {
		t.Fatalf("%d anomalous samples", anomalous)
	}
	if _, err := Synthesize(t.TempDir(), SynthConfig{Size: 8}); err == nil {
		t.Fatal("bad config accepted")
	}
}
