package datasets

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diad-project/diad/backend/filetest"
)

// fakePhotos writes a stand-in for every photograph the set needs under a
// package root: textured pictures of the right kind of file.
func fakePhotos(t *testing.T, side int) string {
	t.Helper()
	root := t.TempDir()
	for i, s := range PhotoSources {
		img := image.NewRGBA(image.Rect(0, 0, side, side))
		for y := 0; y < side; y++ {
			for x := 0; x < side; x++ {
				v := 0.5 + 0.3*math.Sin(float64(x)*0.3+float64(i))*math.Cos(float64(y)*0.2)
				img.Set(x, y, color.RGBA{uint8(255 * v), uint8(200 * v), uint8(150 * v), 255})
			}
		}
		var b bytes.Buffer
		var err error
		if strings.HasSuffix(s.Path, ".png") {
			err = png.Encode(&b, img)
		} else {
			err = jpeg.Encode(&b, img, &jpeg.Options{Quality: 95})
		}
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(root, s.Path)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		filetest.Write(t, path, b.Bytes())
	}
	return root
}

func TestBuildPhotoSet(t *testing.T) {
	pkg := fakePhotos(t, 160)
	cfg := PhotoSetConfig{Seed: 3, Size: 64, Train: 3, TestGood: 2, PerDefect: 2}
	out := filepath.Join(t.TempDir(), "set")
	ix, err := BuildPhotoSet(out, pkg, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(ix.Categories, ",") != strings.Join(PhotoCategories(), ",") {
		t.Fatalf("categories %v, want %v", ix.Categories, PhotoCategories())
	}
	for _, src := range PhotoSources {
		defects := PhotoTextureDefects
		if src.Object {
			defects = PhotoObjectDefects
		}
		var train, good, bad int
		for _, s := range ix.Samples {
			if s.Category != src.Category {
				continue
			}
			switch {
			case s.Split == Train:
				train++
			case s.Defect == Good:
				good++
				if s.MaskPath != "" {
					t.Errorf("%s: good image %s has a mask", src.Category, s.Path)
				}
			default:
				bad++
				if !contains(defects, s.Defect) {
					t.Errorf("%s: defect %q is not one of %v", src.Category, s.Defect, defects)
				}
				mask, err := DecodeFile(s.MaskPath)
				if err != nil {
					t.Fatal(err)
				}
				if on := countOn(mask); on == 0 || on > 64*64/2 {
					t.Errorf("%s: mask %s marks %d of %d pixels", src.Category, s.MaskPath, on, 64*64)
				}
			}
		}
		if train != cfg.Train || good != cfg.TestGood || bad != cfg.PerDefect*len(defects) {
			t.Errorf("%s: %d train, %d good, %d defective; want %d, %d, %d", src.Category, train, good, bad, cfg.Train, cfg.TestGood, cfg.PerDefect*len(defects))
		}
	}
	var listed []PhotoSource
	if err := json.Unmarshal(filetest.Read(t, filepath.Join(out, PhotoSourcesFile)), &listed); err != nil {
		t.Fatal(err)
	}
	if len(listed) != len(PhotoSources) || listed[0].Package != PhotoPackage.Name || listed[0].License == "" || listed[0].Version != PhotoPackage.Version {
		t.Fatalf("sources file: %+v", listed)
	}

	// the same config and photographs give the same files
	again := filepath.Join(t.TempDir(), "set")
	if _, err := BuildPhotoSet(again, pkg, cfg); err != nil {
		t.Fatal(err)
	}
	for _, rel := range []string{"rock/test/crack/001.png", "door/ground_truth/misplaced/000_mask.png", "bark/train/good/002.png"} {
		if !bytes.Equal(filetest.Read(t, filepath.Join(out, rel)), filetest.Read(t, filepath.Join(again, rel))) {
			t.Errorf("%s differs between two builds", rel)
		}
	}
}

func TestBuildPhotoSetRefuses(t *testing.T) {
	cfg := PhotoSetConfig{Seed: 1, Size: 64, Train: 1, TestGood: 1, PerDefect: 1}
	if _, err := BuildPhotoSet(t.TempDir(), t.TempDir(), cfg); err == nil || !strings.Contains(err.Error(), "make photos") {
		t.Errorf("no photographs: %v", err)
	}
	bad := cfg
	bad.Categories = []string{"velvet"}
	if _, err := BuildPhotoSet(t.TempDir(), fakePhotos(t, 160), bad); err == nil || !strings.Contains(err.Error(), "velvet") {
		t.Errorf("unknown category: %v", err)
	}
	if _, err := BuildPhotoSet(t.TempDir(), fakePhotos(t, 20), cfg); err == nil || !strings.Contains(err.Error(), "too small") {
		t.Errorf("tiny photographs: %v", err)
	}
	bad = cfg
	bad.PerDefect = 0
	if _, err := BuildPhotoSet(t.TempDir(), fakePhotos(t, 160), bad); err == nil {
		t.Error("no defective images asked: no error")
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func countOn(img image.Image) int {
	b := img.Bounds()
	n := 0
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			if r, _, _, _ := img.At(x, y).RGBA(); r > 0x7fff {
				n++
			}
		}
	}
	return n
}

func TestPhotoPackageFilesListsEverySource(t *testing.T) {
	files := PhotoPackageFiles()
	if files[0] != PhotoPackageCopyright || len(files) != len(PhotoSources)+1 {
		t.Fatalf("files %v", files)
	}
}
