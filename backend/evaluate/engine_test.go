package evaluate

import (
	"context"
	"errors"
	"image"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/backend/internal/torchtest"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

func writeTestPNG(t *testing.T, path string, shade uint8) {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 64, 64))
	for y := 0; y < 64; y++ {
		for x := 0; x < 64; x++ {
			img.Set(x, y, color.RGBA{shade, uint8(4 * x), uint8(4 * y), 255})
		}
	}
	filetest.WritePNG(t, path, img)
}

// The engine takes the compute lane per step: a second trajectory started
// while a first one runs gets its steps in before the first one ends.
// Each trajectory's final result is `diad predict`'s for the same image and
// seed, and emitting costs no tensors.
func TestEngineTrajectoriesInterleaveAndMatchPredict(t *testing.T) {
	ckpt := tinyCheckpoint(t)
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.png"), filepath.Join(dir, "b.png")
	writeTestPNG(t, a, 30)
	writeTestPNG(t, b, 200)
	cfg := DefaultConfig()
	cfg.Checkpoint, cfg.Device, cfg.Scorer = ckpt, "cpu", "pixel"
	e, err := Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Free()
	sampler, err := e.Sampler(nil, shared.SamplerOverride{Steps: ptr(12)})
	if err != nil {
		t.Fatal(err)
	}
	if sampler.Steps != 12 || sampler.StartT != e.det.Sampler.StartT {
		t.Fatalf("sampler %+v", sampler)
	}
	var mu sync.Mutex
	var order []string
	startB := make(chan struct{})
	var outA, outB Outcome
	var errA, errB error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		outA, errA = e.Trajectory(context.Background(), TrajectorySpec{Path: a, Sampler: sampler, Seed: results.ImageSeed(7, 0)}, Products{Latents: true, Map: true}, func(f StepFrame) error {
			mu.Lock()
			order = append(order, "a")
			mu.Unlock()
			if f.Index == 0 {
				close(startB)
			}
			if len(f.Zt) != f.LatentShape[0]*f.LatentShape[1]*f.LatentShape[2] || len(f.Map) != 64*64 {
				t.Errorf("frame %d: %d latent values for shape %v, map %d", f.Index, len(f.Zt), f.LatentShape, len(f.Map))
			}
			return nil
		})
	}()
	go func() {
		defer wg.Done()
		<-startB
		outB, errB = e.Trajectory(context.Background(), TrajectorySpec{Path: b, Sampler: sampler, Seed: results.ImageSeed(7, 0)}, Products{}, func(f StepFrame) error {
			mu.Lock()
			order = append(order, "b")
			mu.Unlock()
			return nil
		})
	}()
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	lastA, firstB := -1, -1
	for i, who := range order {
		if who == "a" {
			lastA = i
		} else if firstB < 0 {
			firstB = i
		}
	}
	if len(order) != 24 || firstB < 0 || firstB > lastA {
		t.Fatalf("steps ran as %v: the second trajectory waited for the whole first one", order)
	}
	samePredictions(t, cfg, map[string]Outcome{a: outA, b: outB})
	// A trajectory holds no tensors once it returns.
	torchtest.RequireNoLeak(t, "Trajectory", 0, func() {
		if _, err := e.Trajectory(context.Background(), TrajectorySpec{Path: a, Sampler: sampler, Seed: 1}, Products{Latents: true, Image: true, Map: true}, func(StepFrame) error { return nil }); err != nil {
			t.Fatal(err)
		}
	})
}

// samePredictions: Predict on the same images, seed (7) and steps (12)
// gives the trajectories' scores.
func samePredictions(t *testing.T, cfg Config, outcomes map[string]Outcome) {
	pcfg := PredictConfig{Config: cfg}
	pcfg.Threshold, pcfg.Seed = "0.5", 7
	st := 12
	pcfg.Sampler.Steps = &st
	for path, out := range outcomes {
		preds, _, err := Predict(context.Background(), pcfg, []string{path})
		if err != nil {
			t.Fatal(err)
		}
		if preds[0].Score != out.Score {
			t.Fatalf("%s: trajectory score %v, predict %v", path, out.Score, preds[0].Score)
		}
	}
}

func TestOverlayNamesAreDistinct(t *testing.T) {
	got := overlayNames([]string{"a/000.png", "b/000.png", "c/001.jpg", "x/a/000.png", "a/000.png"})
	want := []string{"a_000_heatmap.png", "b_000_heatmap.png", "001_heatmap.png", "x_a_000_heatmap.png", "a_000_2_heatmap.png"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("names %v, want %v", got, want)
		}
	}
}

// One unreadable image does not stop the others; overlays of inputs with the
// same base name do not overwrite each other; an image's score does not
// depend on its neighbours.
func TestPredictContinuesPastABadImage(t *testing.T) {
	ckpt := tinyCheckpoint(t)
	dir := t.TempDir()
	a := filepath.Join(dir, "a", "000.png")
	b := filepath.Join(dir, "b", "000.png")
	bad := filepath.Join(dir, "bad.png")
	for _, d := range []string{filepath.Dir(a), filepath.Dir(b)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeTestPNG(t, a, 30)
	writeTestPNG(t, b, 200)
	filetest.Write(t, bad, []byte("not a PNG"))
	cfg := PredictConfig{Config: DefaultConfig(), OverlayDir: filepath.Join(dir, "overlays"), Store: true}
	cfg.Checkpoint, cfg.Device, cfg.Scorer, cfg.Threshold = ckpt, "cpu", "pixel", "0.5"
	cfg.ResultsDir = filepath.Join(dir, "results")
	preds, runID, err := Predict(context.Background(), cfg, []string{a, bad, b})
	var partial *PartialError
	if !errors.As(err, &partial) || len(partial.Failed) != 1 || partial.Failed[0].Path != bad || !strings.Contains(err.Error(), "bad.png") {
		t.Fatalf("error %v", err)
	}
	if len(preds) != 3 || runID == "" {
		t.Fatalf("%d predictions, run %q", len(preds), runID)
	}
	overlays := map[string]bool{}
	for _, p := range preds {
		if p.Path == bad {
			if p.Error == "" {
				t.Fatal("the bad image has no error")
			}
			continue
		}
		if p.Error != "" || p.Overlay == "" {
			t.Fatalf("prediction %+v", p)
		}
		if _, err := os.Stat(p.Overlay); err != nil {
			t.Fatal(err)
		}
		overlays[p.Overlay] = true
	}
	if len(overlays) != 2 {
		t.Fatalf("overlays %v: one overwrote the other", overlays)
	}
	rows, err := results.Store{Root: cfg.ResultsDir}.Images(runID)
	if err != nil || len(rows) != 2 {
		t.Fatalf("stored rows %d, %v", len(rows), err)
	}
	// b scored alone at the same position (2) gives the same score.
	alone := cfg
	alone.OverlayDir, alone.Store = "", false
	p2, _, err := Predict(context.Background(), alone, []string{a, a, b})
	if err != nil {
		t.Fatal(err)
	}
	// (equal up to the float32 rounding of batched convolutions)
	if math.Abs(p2[2].Score-preds[2].Score) > 2e-6*math.Abs(preds[2].Score) {
		t.Fatalf("b's score depends on its neighbours: %v vs %v", p2[2].Score, preds[2].Score)
	}
}
