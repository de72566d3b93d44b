package quality

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/datasets"
)

func TestPSNR(t *testing.T) {
	const hw = 4
	img := make([]float32, 3*hw)
	rec := make([]float32, 3*hw)
	if v := psnr(img, rec, hw); !math.IsInf(v, 1) {
		t.Fatalf("identical images: %g dB", v)
	}
	// An error of 0.1 in [0, 1] units on every value: MSE 0.01, 20 dB.
	for i := range rec {
		ch := i / hw
		rec[i] = float32(0.1 / std3[ch])
	}
	if v := psnr(img, rec, hw); math.Abs(v-20) > 1e-4 {
		t.Fatalf("uniform 0.1 error: %g dB, want 20", v)
	}
}

// tinyModels saves a tiny model with random weights in its UNet's head, and
// the same model with the SG network's middle output switched on.
func tinyModels(t *testing.T, dir string) (ckpt, guided string) {
	ckpt = filepath.Join(dir, "model.safetensors")
	guided = filepath.Join(dir, "guided.safetensors")
	defer torchrt.Pin()()
	torchrt.ManualSeed(5)
	m, err := model.New(model.TinyConfig(), gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	// The UNet's zero-initialised head would predict eps = 0 whatever
	// the guidance: give it weights.
	torchrt.NoGrad(func() {
		torchrt.Uniform_(m.Store.Get(model.PrefixUNet+"out.2.weight").Tensor, -0.2, 0.2)
	})
	if err := m.Save(ckpt, nil); err != nil {
		t.Fatal(err)
	}
	// The same model with the SG network's middle output switched on.
	torchrt.NoGrad(func() {
		torchrt.Uniform_(m.Store.Get(model.PrefixSG+"middle_block_out.0.weight").Tensor, -0.5, 0.5)
	})
	if err := m.Save(guided, nil); err != nil {
		t.Fatal(err)
	}
	return ckpt, guided
}

func TestMeasureReportsEveryCategoryAndTheMean(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if _, err := datasets.Synthesize(data, datasets.SynthConfig{Seed: 3, Size: 64, Train: 2, TestGood: 2, PerDefect: 1, Categories: []string{"woven", "disc"}}); err != nil {
		t.Fatal(err)
	}
	ckpt, guided := tinyModels(t, dir)
	cfg := evaluate.DefaultConfig()
	cfg.Checkpoint, cfg.Data = ckpt, datasets.Source{Root: data}
	cfg.Scorer = "pixel"
	st := 300
	cfg.Sampler.StartT = &st
	rep, err := Measure(context.Background(), cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Scorer != "pixel" || rep.StartT != 300 || rep.Images != 2*2+3+4 || rep.PixelSize != 64 {
		t.Fatalf("report %+v", rep)
	}
	if len(rep.Rows) != 3 || rep.Rows[0].Category != "disc" || rep.Rows[1].Category != "woven" || rep.Mean().Category != "mean" {
		t.Fatalf("rows %+v", rep.Rows)
	}
	for _, r := range rep.Rows {
		for name, v := range map[string]float64{"I-AUROC": r.ImageAUROC, "P-AUROC": r.PixelAUROC, "PRO": r.PRO, "SSIM": r.SSIM} {
			if !(v >= 0 && v <= 1) {
				t.Fatalf("%s %s = %g", r.Category, name, v)
			}
		}
		if !(r.PSNR > 0) || math.IsInf(r.PSNR, 0) || !(r.Removal > 0) {
			t.Fatalf("%s: PSNR %g, removal %g", r.Category, r.PSNR, r.Removal)
		}
	}
	// One row per defect type of each category (disc: misplaced, missing,
	// scratch, stain; woven: color, hole, scratch), each with a pixel
	// AUROC; together the rows cover every anomalous image.
	if len(rep.Defects) != 7 || rep.Defects[0].Category != "disc" || rep.Defects[0].Defect != "misplaced" {
		t.Fatalf("defect rows %+v", rep.Defects)
	}
	imgs := 0
	for _, d := range rep.Defects {
		imgs += d.Images
		if !(d.PixelAUROC >= 0 && d.PixelAUROC <= 1) || !(d.ImageAUROC >= 0 && d.ImageAUROC <= 1) {
			t.Fatalf("%s/%s: I-AUROC %g, P-AUROC %g", d.Category, d.Defect, d.ImageAUROC, d.PixelAUROC)
		}
	}
	if imgs != 3+4 {
		t.Fatalf("defect rows cover %d anomalous images, want 7", imgs)
	}
	// A random denoiser moves the predicted image between steps.
	if !(rep.StepChange > 0) {
		t.Fatalf("step change %g", rep.StepChange)
	}
	if out := Format(rep); !strings.Contains(out, "mean") || !strings.Contains(out, "/255") || !strings.Contains(out, "SG guidance") || !strings.Contains(out, "misplaced") {
		t.Fatalf("format:\n%s", out)
	}
	// At initialisation the SG network's zero convolutions make it change
	// nothing; switched on, it does, and the report says so.
	if rep.Guidance != 0 || rep.GuidanceT == 0 {
		t.Fatalf("guidance of a fresh model: %g at t = %d", rep.Guidance, rep.GuidanceT)
	}
	cfg.Checkpoint = guided
	g := measureAtPixelSize(t, cfg, 128)
	if !(g.Guidance > 0) {
		t.Fatalf("guidance with the SG output switched on: %g", g.Guidance)
	}
}

// measureAtPixelSize measures cfg with the pixel figures at px (twice the
// model's size): every one still a fraction, and the report says at what
// size; sizes out of bounds are refused.
func measureAtPixelSize(t *testing.T, cfg evaluate.Config, px int) Report {
	t.Helper()
	g, err := Measure(context.Background(), cfg, Options{PixelSize: px})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range g.Rows {
		if !(r.PixelAUROC >= 0 && r.PixelAUROC <= 1) || !(r.PRO >= 0 && r.PRO <= 1) || !(r.Removal > 0) {
			t.Fatalf("%s at %d px: P-AUROC %g, PRO %g, removal %g", r.Category, px, r.PixelAUROC, r.PRO, r.Removal)
		}
	}
	if want := fmt.Sprintf("pixel figures at %dx%d", px, px); g.PixelSize != px || !strings.Contains(Format(g), want) {
		t.Fatalf("pixel size %d, format:\n%s", g.PixelSize, Format(g))
	}
	for _, bad := range []int{-1, maxPixelSize + 1} {
		if _, err := Measure(context.Background(), cfg, Options{PixelSize: bad}); err == nil || !strings.Contains(err.Error(), "pixel size") {
			t.Fatalf("pixel size %d: %v", bad, err)
		}
	}
	return g
}
