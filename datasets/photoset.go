package datasets

import (
	"encoding/json"
	"fmt"
	"image"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// PhotoSource is one photograph that a category of the photo set is cut from:
// where it comes from (a file inside a Debian package) and under which licence.
type PhotoSource struct {
	Category string `json:"category"`
	// Object categories show the whole photograph (a part seen the same way
	// each time, slightly shifted); texture categories are crops of a surface.
	Object   bool   `json:"object"`
	Material string `json:"material"`
	Package  string `json:"package"`
	Version  string `json:"version"`
	// Path is the file inside the package's data (as dpkg-deb -x lays it out).
	Path      string `json:"path"`
	License   string `json:"license"`
	Copyright string `json:"copyright"`
	// Crop is a texture crop's side as a fraction of the photograph's
	// shorter side (the crop is then resized to the set's image size).
	Crop float64 `json:"crop,omitempty"`
}

// PhotoPackage is the Debian package the photo set's photographs come from
// (pinned: the file names and the pixels must not change under the set).
var PhotoPackage = struct{ Name, Version, Filename, SHA256 string }{
	Name:     "cube2-data",
	Version:  "1.3-1",
	Filename: "pool/main/c/cube2-data/cube2-data_1.3-1_all.deb",
	SHA256:   "73c8781495578c1540c483a2e8351fd1fbc6ab67c71dd7d0928af48097b9ecb7",
}

const (
	cube2Dir       = "usr/share/games/cube2/packages/"
	cube2Copyright = "Mozilla Foundation (BananaBread), per the package's debian/copyright"
	frankieCopy    = "The Apricot project (Yo Frankie!), per the package's debian/copyright"
)

// PhotoPackageCopyright is the package's licence file, kept beside the photographs.
const PhotoPackageCopyright = "usr/share/doc/cube2-data/copyright"

// PhotoPackageFiles are the files the photo set needs from the package.
func PhotoPackageFiles() []string {
	files := []string{PhotoPackageCopyright}
	for _, s := range PhotoSources {
		files = append(files, s.Path)
	}
	return files
}

// PhotoSources are the photo set's categories: five surfaces and two parts.
var PhotoSources = []PhotoSource{
	{Category: "bark", Material: "wood", Path: cube2Dir + "yo_frankie/trees_bark_001_col.jpg", License: "CC-BY-3.0", Copyright: frankieCopy, Crop: 0.5},
	{Category: "rock", Material: "stone", Path: cube2Dir + "gk/fantasy/rock_formation_gk_v01/rock_formation_gk_v01_cc.jpg", License: "CC-BY-3.0", Copyright: cube2Copyright, Crop: 0.25},
	{Category: "iron", Material: "metal", Path: cube2Dir + "gk/fantasy/iron_plates_gk_v01/iron_plates_gk_v01_cc.jpg", License: "CC-BY-3.0", Copyright: cube2Copyright, Crop: 0.5},
	{Category: "tiles", Material: "floor", Path: cube2Dir + "gk/fantasy/stone_ground_tiles_gk_v01/stone_ground_tiles_gk_v01_cc.jpg", License: "CC-BY-3.0", Copyright: cube2Copyright, Crop: 0.3},
	{Category: "grass", Material: "fibre", Path: cube2Dir + "gor/cr_env_tex_004_cc.jpg", License: "CC-BY-3.0", Copyright: cube2Copyright, Crop: 0.3},
	{Category: "door", Object: true, Material: "painted metal part", Path: cube2Dir + "gor/cr_env_tex_001_cc.jpg", License: "CC-BY-3.0", Copyright: cube2Copyright},
	{Category: "vent", Object: true, Material: "metal panel part", Path: cube2Dir + "gk/future/wall_plate_05_gk/wall_plate_05_gk_cc.png", License: "CC-BY-3.0", Copyright: cube2Copyright},
}

// Defect kinds painted on photographs: on surfaces, and on parts.
var (
	PhotoTextureDefects = []string{"color", "contamination", "crack", "hole", "scratch", "stain"}
	PhotoObjectDefects  = []string{"color", "crack", "misplaced", "missing", "scratch", "stain"}
)

// PhotoSetConfig controls the photo set.
type PhotoSetConfig struct {
	Seed uint64 `yaml:"seed"`
	Size int    `yaml:"size"`
	// Train, TestGood and PerDefect are per category, as in SynthConfig.
	Train      int      `yaml:"train"`
	TestGood   int      `yaml:"test_good"`
	PerDefect  int      `yaml:"per_defect"`
	Categories []string `yaml:"categories"`
}

// DefaultPhotoSet is MVTec-sized: 256 px, 60 training, 20 good and 30
// defective test images per category.
var DefaultPhotoSet = PhotoSetConfig{Seed: 1, Size: 256, Train: 60, TestGood: 20, PerDefect: 5}

// PhotoSourcesFile lists, in a built set, where each category's photograph
// came from and its licence.
const PhotoSourcesFile = "SOURCES.json"

// BuildPhotoSet writes the photo set under root in MVTec-AD layout: good
// images are crops (surfaces) or shifted views (parts) of photographs found
// under pkgRoot (the package's files as dpkg-deb -x lays them out), defects
// are painted on other crops with exact masks. The same config and package
// always give the same files.
func BuildPhotoSet(root, pkgRoot string, cfg PhotoSetConfig) (Index, error) {
	if cfg.Size < 32 || cfg.Train < 1 || cfg.TestGood < 1 || cfg.PerDefect < 1 {
		return Index{}, fmt.Errorf("photo set: need size >= 32 and at least one image of each kind, got %+v", cfg)
	}
	srcs, err := selectPhotoSources(cfg.Categories)
	if err != nil {
		return Index{}, err
	}
	var names []string
	var used []PhotoSource
	for ci, src := range srcs {
		path := filepath.Join(pkgRoot, src.Path)
		photo, err := DecodeFile(path)
		if err != nil {
			return Index{}, fmt.Errorf("photo set %s: %w (fetch the photographs with `make photos`)", src.Category, err)
		}
		b := photo.Bounds()
		if min(b.Dx(), b.Dy()) < cfg.Size/2 {
			return Index{}, fmt.Errorf("photo set %s: %s is %dx%d, too small for %d px images", src.Category, path, b.Dx(), b.Dy(), cfg.Size)
		}
		r := rand.New(rand.NewPCG(cfg.Seed, uint64(ci)+101))
		if err := writePhotoCategory(root, photo, src, cfg, r); err != nil {
			return Index{}, err
		}
		src.Package, src.Version = PhotoPackage.Name, PhotoPackage.Version
		used = append(used, src)
		names = append(names, src.Category)
	}
	b, err := json.MarshalIndent(used, "", "  ")
	if err != nil {
		return Index{}, fmt.Errorf("photo set: %w", err)
	}
	if err := os.WriteFile(filepath.Join(root, PhotoSourcesFile), append(b, '\n'), 0o644); err != nil {
		return Index{}, fmt.Errorf("photo set: %w", err)
	}
	return Open("mvtec", root, Options{Categories: names})
}

func selectPhotoSources(want []string) ([]PhotoSource, error) {
	if len(want) == 0 {
		return PhotoSources, nil
	}
	var out []PhotoSource
	for _, name := range want {
		found := false
		for _, s := range PhotoSources {
			if s.Category == name {
				out = append(out, s)
				found = true
			}
		}
		if !found {
			return nil, fmt.Errorf("photo set: unknown category %q (have %s)", name, strings.Join(PhotoCategories(), ", "))
		}
	}
	return out, nil
}

// PhotoCategories lists the photo set's category names.
func PhotoCategories() []string {
	var n []string
	for _, s := range PhotoSources {
		n = append(n, s.Category)
	}
	return n
}

func writePhotoCategory(root string, photo image.Image, src PhotoSource, cfg PhotoSetConfig, r *rand.Rand) error {
	write := func(split, defect string, i int, c *canvas, mask []bool) error {
		name := fmt.Sprintf("%03d.png", i)
		if err := writePNG(filepath.Join(root, src.Category, split, defect, name), c.rgba()); err != nil {
			return err
		}
		if mask == nil {
			return nil
		}
		m := image.NewGray(image.Rect(0, 0, c.n, c.n))
		for k, on := range mask {
			if on {
				m.Pix[k] = 255
			}
		}
		return writePNG(filepath.Join(root, src.Category, "ground_truth", defect, fmt.Sprintf("%03d_mask.png", i)), m)
	}
	for i := 0; i < cfg.Train; i++ {
		if err := write(Train, Good, i, photoView(photo, src, cfg.Size, r), nil); err != nil {
			return err
		}
	}
	for i := 0; i < cfg.TestGood; i++ {
		if err := write(Test, Good, i, photoView(photo, src, cfg.Size, r), nil); err != nil {
			return err
		}
	}
	defects := PhotoTextureDefects
	if src.Object {
		defects = PhotoObjectDefects
	}
	defects = append([]string(nil), defects...)
	sort.Strings(defects)
	for _, d := range defects {
		for i := 0; i < cfg.PerDefect; i++ {
			c := photoView(photo, src, cfg.Size, r)
			mask := paintPhotoDefect(c, d, src.Object, r)
			if !anyTrue(mask) {
				return fmt.Errorf("photo set %s: defect %s painted nothing", src.Category, d)
			}
			if err := write(Test, d, i, c, mask); err != nil {
				return err
			}
		}
	}
	return nil
}

func anyTrue(m []bool) bool {
	for _, v := range m {
		if v {
			return true
		}
	}
	return false
}

// photoView is one good image: a random crop of a surface, or the whole part
// slightly shifted and scaled; with a small change of exposure and sensor noise.
func photoView(photo image.Image, src PhotoSource, size int, r *rand.Rand) *canvas {
	b := photo.Bounds()
	short := min(b.Dx(), b.Dy())
	side := int(math.Round(src.Crop * float64(short)))
	if src.Object {
		side = int(float64(short) * (0.9 + 0.06*r.Float64()))
	}
	side = max(1, min(side, short))
	x0 := b.Min.X + r.IntN(b.Dx()-side+1)
	y0 := b.Min.Y + r.IntN(b.Dy()-side+1)
	crop := ResizeRGB(subImage(photo, image.Rect(x0, y0, x0+side, y0+side)), size)
	c := newCanvas(size)
	gain := 0.94 + 0.12*r.Float64()
	noise := 0.004 + 0.004*r.Float64()
	for i := 0; i < size*size; i++ {
		for k := 0; k < 3; k++ {
			c.pix[3*i+k] = float64(crop.Pix[4*i+k])/255*gain + r.NormFloat64()*noise
		}
	}
	return c
}

func subImage(img image.Image, rect image.Rectangle) image.Image {
	if s, ok := img.(interface {
		SubImage(image.Rectangle) image.Image
	}); ok {
		return s.SubImage(rect)
	}
	return img
}
