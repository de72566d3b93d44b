package datasets

import (
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Split names.
const (
	Train = "train"
	Test  = "test"
)

// Good is the defect name of normal samples.
const Good = "good"

// Sample is one image of a dataset.
type Sample struct {
	Path      string `json:"path"`
	MaskPath  string `json:"mask_path,omitempty"` // empty: all-normal mask
	Category  string `json:"category"`
	Split     string `json:"split"`
	Defect    string `json:"defect"` // "good" for normal samples
	Anomalous bool   `json:"anomalous"`
}

// Index is a dataset's sample list.
type Index struct {
	Root       string
	Layout     string
	Categories []string
	Samples    []Sample
}

// Select returns the samples of a split, restricted to categories (all if empty).
func (ix Index) Select(split string, categories ...string) []Sample {
	want := map[string]bool{}
	for _, c := range categories {
		want[c] = true
	}
	var out []Sample
	for _, s := range ix.Samples {
		if s.Split == split && (len(want) == 0 || want[s.Category]) {
			out = append(out, s)
		}
	}
	return out
}

// Layouts that Open understands.
var Layouts = []string{"mvtec", "visa", "mvtec3d", "folder"}

// Options restrict what Open reads.
type Options struct {
	// Categories to load (all found if empty); a missing one is an error.
	Categories []string
	// CSV is VisA's split file (default <root>/split_csv/1cls.csv).
	CSV string
}

// Open indexes a dataset. layout is one of Layouts, or "auto" to detect.
func Open(layout, root string, o Options) (Index, error) {
	if st, err := os.Stat(root); err != nil || !st.IsDir() {
		return Index{}, fmt.Errorf("dataset %s: not a directory", root)
	}
	if layout == "" || layout == "auto" {
		layout = detect(root, o)
	}
	var ix Index
	var err error
	switch layout {
	case "mvtec":
		ix, err = openMVTec(root, o, "", "")
	case "mvtec3d":
		ix, err = openMVTec(root, o, "rgb", "gt")
	case "visa":
		ix, err = openVisA(root, o)
	case "folder":
		ix, err = openFolder(root, o)
	default:
		return Index{}, fmt.Errorf("dataset %s: unknown layout %q (want one of %v or auto)", root, layout, Layouts)
	}
	if err != nil {
		return Index{}, err
	}
	ix.Root, ix.Layout = root, layout
	return ix, nil
}

func detect(root string, o Options) string {
	csvPath := o.CSV
	if csvPath == "" {
		csvPath = filepath.Join(root, "split_csv", "1cls.csv")
	}
	if _, err := os.Stat(csvPath); err == nil {
		return "visa"
	}
	if dirs(filepath.Join(root, Train)) != nil || dirs(filepath.Join(root, "normal")) != nil || exists(filepath.Join(root, "normal")) {
		return "folder"
	}
	for _, c := range dirs(root) {
		if exists(filepath.Join(root, c, Train, Good, "rgb")) {
			return "mvtec3d"
		}
	}
	return "mvtec"
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

// dirs lists the sub-directories of p (nil if p is not readable).
func dirs(p string) []string {
	entries, err := os.ReadDir(p)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

// images lists image files (png, jpg, jpeg, any case) in p, sorted.
func images(p string) []string {
	entries, err := os.ReadDir(p)
	if err != nil {
		return nil
	}
	var out []string
	for _, e := range entries {
		switch strings.ToLower(filepath.Ext(e.Name())) {
		case ".png", ".jpg", ".jpeg":
			if !e.IsDir() {
				out = append(out, filepath.Join(p, e.Name()))
			}
		}
	}
	sort.Strings(out)
	return out
}

// categories resolves the requested categories against those found.
func categories(root string, found []string, want []string) ([]string, error) {
	if len(found) == 0 {
		return nil, fmt.Errorf("dataset %s: no categories found", root)
	}
	if len(want) == 0 {
		return found, nil
	}
	have := map[string]bool{}
	for _, f := range found {
		have[f] = true
	}
	for _, w := range want {
		if !have[w] {
			return nil, fmt.Errorf("dataset %s: category %q not found (have %s)", root, w, strings.Join(found, ", "))
		}
	}
	return want, nil
}

// openMVTec reads <root>/<cat>/{train/good, test/<defect>, ground_truth/<defect>}.
// MVTec-3D keeps RGB images and masks one level deeper (sub "rgb", masks "gt").
func openMVTec(root string, o Options, sub, maskSub string) (Index, error) {
	var found []string
	for _, c := range dirs(root) {
		if exists(filepath.Join(root, c, Train)) || exists(filepath.Join(root, c, Test)) {
			found = append(found, c)
		}
	}
	cats, err := categories(root, found, o.Categories)
	if err != nil {
		return Index{}, err
	}
	ix := Index{Categories: cats}
	for _, c := range cats {
		trainDir := filepath.Join(root, c, Train, Good, sub)
		train := images(trainDir)
		if len(train) == 0 {
			return Index{}, fmt.Errorf("dataset %s: category %s has no training images (expected %s/*.png)", root, c, trainDir)
		}
		for _, p := range train {
			ix.Samples = append(ix.Samples, Sample{Path: p, Category: c, Split: Train, Defect: Good})
		}
		testDir := filepath.Join(root, c, Test)
		defects := dirs(testDir)
		if len(defects) == 0 {
			return Index{}, fmt.Errorf("dataset %s: category %s has no test split (expected %s/<defect>/)", root, c, testDir)
		}
		for _, d := range defects {
			for _, p := range images(filepath.Join(testDir, d, sub)) {
				s := Sample{Path: p, Category: c, Split: Test, Defect: d, Anomalous: d != Good}
				if s.Anomalous {
					s.MaskPath, err = findMask(root, c, d, p, maskSub)
					if err != nil {
						return Index{}, err
					}
				}
				ix.Samples = append(ix.Samples, s)
			}
		}
	}
	return ix, nil
}

func findMask(root, cat, defect, image, maskSub string) (string, error) {
	base := strings.TrimSuffix(filepath.Base(image), filepath.Ext(image))
	var candidates []string
	if maskSub != "" { // MVTec-3D: <cat>/test/<defect>/gt/<name>.png
		candidates = []string{filepath.Join(root, cat, Test, defect, maskSub, base+".png")}
	} else {
		gt := filepath.Join(root, cat, "ground_truth", defect)
		candidates = []string{filepath.Join(gt, base+"_mask.png"), filepath.Join(gt, base+".png")}
	}
	for _, c := range candidates {
		if exists(c) {
			return c, nil
		}
	}
	return "", fmt.Errorf("dataset %s: no mask for %s (expected %s)", root, image, candidates[0])
}

// openVisA reads VisA's split CSV (object, split, label, image, mask).
func openVisA(root string, o Options) (Index, error) {
	path := o.CSV
	if path == "" {
		path = filepath.Join(root, "split_csv", "1cls.csv")
	}
	f, err := os.Open(path)
	if err != nil {
		return Index{}, fmt.Errorf("dataset %s: VisA split file: %w", root, err)
	}
	defer f.Close()
	var ix Index
	var found []string
	ix.Samples, found, err = readVisASplit(root, path, f)
	if err != nil {
		return Index{}, err
	}
	cats, err := categories(root, found, o.Categories)
	if err != nil {
		return Index{}, err
	}
	ix.Categories = cats
	ix.Samples = filterCategories(ix.Samples, cats)
	for _, c := range cats {
		if len(ix.Select(Train, c)) == 0 || len(ix.Select(Test, c)) == 0 {
			return Index{}, fmt.Errorf("dataset %s: category %s needs both train and test rows in %s", root, c, path)
		}
	}
	return ix, nil
}

// readVisASplit parses a VisA split CSV read from r (named path in errors)
// into samples under root and the categories in order of appearance. Every
// image and mask path must stay inside root: the file may come from a
// client, and "../" or an absolute path would make diad read, score and
// serve files outside the dataset.
func readVisASplit(root, path string, r io.Reader) ([]Sample, []string, error) {
	cr := csv.NewReader(r)
	header, err := cr.Read()
	if err != nil {
		return nil, nil, fmt.Errorf("dataset %s: read %s: %w", root, path, err)
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.TrimSpace(strings.ToLower(h))] = i
	}
	for _, need := range []string{"object", "split", "label", "image", "mask"} {
		if _, ok := col[need]; !ok {
			// The file's own text stays out of the message: a path given
			// by a client must not become a way to read files.
			return nil, nil, fmt.Errorf("dataset %s: %s lacks column %q (its header has %d columns; want object, split, label, image, mask)", root, path, need, len(header))
		}
	}
	var samples []Sample
	seen := map[string]bool{}
	var found []string
	line := 1
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		line++
		if err != nil {
			return nil, nil, fmt.Errorf("dataset %s: %s line %d: %w", root, path, line, err)
		}
		cat, split, label := rec[col["object"]], rec[col["split"]], rec[col["label"]]
		if split != Train && split != Test {
			return nil, nil, fmt.Errorf("dataset %s: %s line %d: the split is neither train nor test", root, path, line)
		}
		if label != "normal" && label != "anomaly" {
			return nil, nil, fmt.Errorf("dataset %s: %s line %d: the label is neither normal nor anomaly", root, path, line)
		}
		image, mask := rec[col["image"]], ""
		if label == "anomaly" {
			mask = rec[col["mask"]]
		}
		for _, p := range []string{image, mask} {
			if p != "" && !filepath.IsLocal(p) {
				return nil, nil, fmt.Errorf("dataset %s: %s line %d: an image or mask path leaves the dataset folder", root, path, line)
			}
		}
		if image == "" {
			return nil, nil, fmt.Errorf("dataset %s: %s line %d: no image path", root, path, line)
		}
		s := Sample{Path: filepath.Join(root, image), Category: cat, Split: split, Defect: Good, Anomalous: label == "anomaly"}
		if s.Anomalous {
			s.Defect = "anomaly"
			if mask != "" {
				s.MaskPath = filepath.Join(root, mask)
			}
		}
		if !seen[cat] {
			seen[cat] = true
			found = append(found, cat)
		}
		samples = append(samples, s)
	}
	return samples, found, nil
}

func filterCategories(s []Sample, cats []string) []Sample {
	want := map[string]bool{}
	for _, c := range cats {
		want[c] = true
	}
	out := s[:0]
	for _, x := range s {
		if want[x.Category] {
			out = append(out, x)
		}
	}
	return out
}

// openFolder reads a single-category folder: either MVTec-style
// train/good, test/<defect>, ground_truth/<defect>, or normal/ and abnormal/
// directories (normal images split 80/20 into train and test). The category
// is the folder's name.
func openFolder(root string, o Options) (Index, error) {
	cat := filepath.Base(filepath.Clean(root))
	if _, err := categories(root, []string{cat}, o.Categories); err != nil {
		return Index{}, err
	}
	if exists(filepath.Join(root, Train)) {
		parent := filepath.Dir(filepath.Clean(root))
		ix, err := openMVTec(parent, Options{Categories: []string{cat}}, "", "")
		if err != nil {
			return Index{}, err
		}
		return ix, nil
	}
	normal, abnormal := images(filepath.Join(root, "normal")), images(filepath.Join(root, "abnormal"))
	if len(normal) < 2 {
		return Index{}, fmt.Errorf("dataset %s: folder layout needs train/good/ images, or at least 2 images in normal/", root)
	}
	ix := Index{Categories: []string{cat}}
	cut := len(normal) * 4 / 5
	if cut == len(normal) {
		cut = len(normal) - 1
	}
	for i, p := range normal {
		split := Train
		if i >= cut {
			split = Test
		}
		ix.Samples = append(ix.Samples, Sample{Path: p, Category: cat, Split: split, Defect: Good})
	}
	for _, p := range abnormal {
		ix.Samples = append(ix.Samples, Sample{Path: p, Category: cat, Split: Test, Defect: "abnormal", Anomalous: true})
	}
	return ix, nil
}

// Source says where a dataset is and which part of it to use (the data
// section of training and evaluation configs).
type Source struct {
	Root       string   `yaml:"root" json:"root"`
	Layout     string   `yaml:"layout" json:"layout"`         // mvtec, visa, mvtec3d, folder, auto
	Categories []string `yaml:"categories" json:"categories"` // all (multi-class, the DiAD setting) if empty
	CSV        string   `yaml:"csv" json:"csv,omitempty"`     // VisA split file
	Workers    int      `yaml:"workers" json:"workers"`       // decoding goroutines (0 = CPUs)
}

// Open indexes the source.
func (s Source) Open() (Index, error) {
	return Open(s.Layout, s.Root, Options{Categories: s.Categories, CSV: s.CSV})
}

// Input is one image to score from a command line: its path, and the path
// relative to the folder it was found in (the path itself when named
// directly), with / separators.
type Input struct {
	Path, Rel string
}

// ExpandInputs turns command-line arguments into images: a file stays as
// it is; a folder gives every image file (png, jpg, jpeg) below it, in
// sorted order. A folder with no image is an error, as is a missing path.
func ExpandInputs(args []string) ([]Input, error) {
	var out []Input
	for _, a := range args {
		st, err := os.Stat(a)
		if err != nil {
			return nil, fmt.Errorf("input %s: %w", a, err)
		}
		if !st.IsDir() {
			out = append(out, Input{Path: a, Rel: filepath.ToSlash(filepath.Clean(a))})
			continue
		}
		n := len(out)
		err = filepath.WalkDir(a, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			switch strings.ToLower(filepath.Ext(p)) {
			case ".png", ".jpg", ".jpeg":
				if !d.IsDir() {
					rel, rerr := filepath.Rel(a, p)
					if rerr != nil {
						return rerr
					}
					out = append(out, Input{Path: p, Rel: filepath.ToSlash(rel)})
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("input folder %s: %w", a, err)
		}
		if len(out) == n {
			return nil, fmt.Errorf("input folder %s has no png or jpg image", a)
		}
	}
	return out, nil
}
