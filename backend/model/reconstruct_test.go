package model

import (
	"context"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/internal/torchtest"
	"github.com/diad-project/diad/backend/torchrt"
)

func TestReconstructVisitsReferenceTimesteps(t *testing.T) {
	m := newTiny(t)
	images, _ := tinyInputs(m, 3, 11)
	defer images.MustDrop()
	var seen []int
	rec, err := m.Reconstruct(context.Background(), images, diffusion.ReferenceSampler, diffusion.NewNoise(1), func(s diffusion.Step) error {
		seen = append(seen, s.T)
		if got := s.X0.MustSize(); got[0] != 3 || got[1] != 4 {
			t.Errorf("step %d x0 shape %v", s.Index, got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Free()
	want := []int{901, 801, 701, 601, 501, 401, 301, 201, 101, 1}
	if len(seen) != len(want) {
		t.Fatalf("visited %v, want %v", seen, want)
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Fatalf("visited %v, want %v", seen, want)
		}
	}
	if s := rec.Image.MustSize(); s[0] != 3 || s[1] != 3 || s[2] != 64 || s[3] != 64 {
		t.Fatalf("reconstruction shape %v", s)
	}
	// Bad input is an error, not a crash.
	bad := ts.MustZeros([]int64{1, 3, 32, 32}, gotch.Float, gotch.CPU)
	defer bad.MustDrop()
	if _, err := m.Reconstruct(context.Background(), bad, diffusion.ReferenceSampler, diffusion.NewNoise(1), nil); err == nil {
		t.Fatal("wrong image size accepted")
	}
	// Cancellation stops between steps.
	ctx, cancel := context.WithCancel(context.Background())
	steps := 0
	_, err = m.Reconstruct(ctx, images, diffusion.ReferenceSampler, diffusion.NewNoise(1), func(diffusion.Step) error {
		steps++
		if steps == 2 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || steps != 2 {
		t.Fatalf("cancel: err %v after %d steps", err, steps)
	}
}

// Explicit timesteps set the noise level too: the input is noised to the
// first of them, whatever StartT says; and every sampler kind runs leak-free.
func TestReconstructNoisesToTheFirstExplicitTimestep(t *testing.T) {
	m := newTiny(t)
	randomise(m, PrefixUNet)
	images, _ := tinyInputs(m, 1, 13)
	defer images.MustDrop()
	run := func(c diffusion.SamplerConfig) Reconstruction {
		rec, err := m.Reconstruct(context.Background(), images, c, diffusion.NewNoise(5), nil)
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	steps := []int{300, 200, 100, 1}
	a := run(diffusion.SamplerConfig{StartT: 999, Steps: 10, Timesteps: steps})
	defer a.Free()
	b := run(diffusion.SamplerConfig{StartT: 300, Steps: 4, Timesteps: steps})
	defer b.Free()
	if !equalBits(a.Latent, b.Latent) {
		t.Fatal("explicit timesteps from 300 gave another result when StartT said 999")
	}
	for _, kind := range diffusion.Kinds {
		c := diffusion.SamplerConfig{Kind: kind, StartT: 400, Steps: 5}
		first := run(c)
		first.Free()
		torchtest.RequireNoLeak(t, "Reconstruct "+kind, 0, func() { run(c).Free() })
	}
}

func TestReconstructIsDeterministicAndLeakFree(t *testing.T) {
	m := newTiny(t)
	randomise(m, PrefixUNet)
	images, _ := tinyInputs(m, 2, 12)
	defer images.MustDrop()
	run := func() Reconstruction {
		rec, err := m.Reconstruct(context.Background(), images, diffusion.ReferenceSampler, diffusion.NewNoise(5), nil)
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	a := run()
	defer a.Free()
	var b Reconstruction
	torchtest.RequireNoLeak(t, "Reconstruct", 2, func() { b = run() })
	defer b.Free()
	if !equalBits(a.Image, b.Image) {
		t.Fatal("same seed, different reconstructions")
	}
	torchtest.RequireNoLeak(t, "TrainLoss+backward", 0, func() {
		loss, err := m.TrainLoss(images, diffusion.NewNoise(1))
		if err != nil {
			t.Fatal(err)
		}
		loss.MustBackward()
		loss.MustDrop()
	})
}

// TestVPredictionModel: a v-prediction model hands the samplers the noise its
// output implies, its training loss compares v (not eps), and a checkpoint
// keeps the parameterisation.
func TestVPredictionModel(t *testing.T) {
	defer torchrt.Pin()()
	cfg := TinyConfig()
	cfg.Schedule.Prediction = diffusion.PredictV
	torchrt.ManualSeed(1)
	m, err := New(cfg, gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	randomise(m, "")
	images, zt := tinyInputs(m, 2, 5)
	defer images.MustDrop()
	defer zt.MustDrop()
	steps := []int{10, 900}
	var eps, raw *ts.Tensor
	torchrt.NoGrad(func() {
		eps = m.PredictEps(zt, steps, images)
		raw = m.predict(zt, steps, images)
	})
	defer eps.MustDrop()
	defer raw.MustDrop()
	e, v, z := eps.Float64Values(), raw.Float64Values(), zt.Float64Values()
	per := len(e) / len(steps)
	for i := range e {
		ab := m.Schedule.AlphasCumprod[steps[i/per]]
		if want := math.Sqrt(ab)*v[i] + math.Sqrt(1-ab)*z[i]; math.Abs(e[i]-want) > 1e-4*(1+math.Abs(want)) {
			t.Fatalf("element %d: eps %v, want %v from v", i, e[i], want)
		}
	}
	// The v loss differs from the eps loss of the same model and draws.
	lossOf := func(m *DiAD) float64 {
		l, err := m.TrainLoss(images, diffusion.NewNoise(9))
		if err != nil {
			t.Fatal(err)
		}
		defer l.MustDrop()
		return l.Float64Values()[0]
	}
	vLoss := lossOf(m)
	m.Schedule.Prediction = diffusion.PredictEps
	epsLoss := lossOf(m)
	m.Schedule.Prediction = diffusion.PredictV
	if math.IsNaN(vLoss) || vLoss == epsLoss {
		t.Fatalf("v loss %v, eps loss %v: want a different finite value", vLoss, epsLoss)
	}
	path := filepath.Join(t.TempDir(), "v.safetensors")
	if err := m.Save(path, nil); err != nil {
		t.Fatal(err)
	}
	loaded, _, err := Open(path, gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer loaded.Free()
	if loaded.Schedule.Prediction != diffusion.PredictV || loaded.Config.Schedule.Prediction != diffusion.PredictV {
		t.Fatalf("loaded prediction %q (config %q), want v", loaded.Schedule.Prediction, loaded.Config.Schedule.Prediction)
	}
}

// TrainLossRemoving on images without defects is TrainLoss (the same noise
// draws, the same target); flagged as removing, each image's error is
// scaled by 1-abar_t, so the loss is smaller but not zero; and a condition
// that differs from the target changes the loss.
func TestTrainLossRemovingReducesToTrainLoss(t *testing.T) {
	defer torchrt.Pin()()
	m := newTiny(t)
	images, _ := tinyInputs(m, 2, 9)
	defer images.MustDrop()
	value := func(l *ts.Tensor, err error) float64 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer l.MustDrop()
		return l.Float64Values()[0]
	}
	// A copy of the images (another tensor) takes the removing path: its
	// target comes back through Schedule.NoiseOf.
	copied := images.MustShallowClone()
	defer copied.MustDrop()
	plain := value(m.TrainLoss(images, diffusion.NewNoise(7)))
	same := value(m.TrainLossRemoving(copied, images, []bool{false, false}, diffusion.NewNoise(7)))
	if math.Abs(plain-same) > 1e-4*plain {
		t.Fatalf("without defects: %v, TrainLoss %v", same, plain)
	}
	scaled := value(m.TrainLossRemoving(copied, images, []bool{true, true}, diffusion.NewNoise(7)))
	if !(scaled > 0 && scaled < plain) {
		t.Fatalf("removing-weighted loss %v, want in (0, %v)", scaled, plain)
	}
	other := images.MustFlip([]int64{3}, false)
	defer other.MustDrop()
	if moved := value(m.TrainLossRemoving(other, images, []bool{true, true}, diffusion.NewNoise(7))); moved == scaled {
		t.Fatal("the condition does not reach the loss")
	}
	if _, err := m.TrainLossRemoving(images, images, []bool{true}, diffusion.NewNoise(7)); err == nil {
		t.Fatal("one flag for two images accepted")
	}
}

// WithoutGuidance denoises as if the SG network's controls were zero: with a
// steering SG network the result changes, and it equals the guided result of
// the same model with the SG network's output zeroed.
func TestReconstructWithoutGuidance(t *testing.T) {
	m := newTiny(t)
	randomise(m, PrefixUNet)
	images, zt := tinyInputs(m, 1, 17)
	defer images.MustDrop()
	zt.MustDrop() // only the images are used
	c := diffusion.SamplerConfig{StartT: 400, Steps: 4}
	run := func(opts ...ReconstructOption) Reconstruction {
		rec, err := m.Reconstruct(context.Background(), images, c, diffusion.NewNoise(9), nil, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	zeroSG := run() // fresh SG network: zero convolutions
	defer zeroSG.Free()
	torchrt.NoGrad(func() { torchrt.Fill_(m.Store.Get(PrefixSG+"middle_block_out.0.bias").Tensor, 0.5) })
	guided := run()
	defer guided.Free()
	unguided := run(WithoutGuidance())
	defer unguided.Free()
	if equalBits(guided.Latent, unguided.Latent) {
		t.Fatal("switching a steering SG network off changed nothing")
	}
	if !equalBits(zeroSG.Latent, unguided.Latent) {
		t.Fatal("without guidance differs from the same model with zero SG controls")
	}
	torchtest.RequireNoLeak(t, "Reconstruct without guidance", 0, func() { run(WithoutGuidance()).Free() })
}

// TrainLossDropping trains the images it marks without the SG network: no
// flag set is TrainLoss itself; all set, the loss no longer depends on the
// SG network, so none of its parameters gets a gradient - while without the
// flags its zero convolutions do.
func TestTrainLossDroppingZeroesGuidance(t *testing.T) {
	defer torchrt.Pin()()
	m := newTiny(t)
	randomise(m, PrefixUNet) // a UNet whose output depends on its input and controls
	randomise(m, PrefixSG)   // controls that are not zero, so that dropping them shows
	images, _ := tinyInputs(m, 2, 9)
	defer images.MustDrop()
	sgGradient := func(unguided []bool) (loss float64, gradNorm float64) {
		t.Helper()
		for _, p := range m.Store.Params() {
			if g := p.Tensor.MustGrad(false); g.MustDefined() {
				g.MustZero_()
				g.MustDrop()
			} else {
				g.MustDrop()
			}
		}
		l, err := m.TrainLossDropping(images, unguided, diffusion.NewNoise(7))
		if err != nil {
			t.Fatal(err)
		}
		defer l.MustDrop()
		l.MustBackward()
		for _, p := range m.Store.Params() {
			if !strings.HasPrefix(p.Name, PrefixSG) || p.Buffer {
				continue
			}
			g := p.Tensor.MustGrad(false)
			if g.MustDefined() {
				n := g.MustAbs(false)
				gradNorm += n.MustSum(gotch.Double, true).Float64Values()[0]
				n.MustDrop()
			}
			g.MustDrop()
		}
		return l.Float64Values()[0], gradNorm
	}
	plainLoss, err := m.TrainLoss(images, diffusion.NewNoise(7))
	if err != nil {
		t.Fatal(err)
	}
	plain := plainLoss.Float64Values()[0]
	plainLoss.MustDrop()
	guided, guidedGrad := sgGradient([]bool{false, false})
	if math.Abs(guided-plain) > 1e-6*plain {
		t.Fatalf("no image dropped: loss %v, TrainLoss %v", guided, plain)
	}
	if guidedGrad == 0 {
		t.Fatal("guided: the SG network got no gradient")
	}
	dropped, droppedGrad := sgGradient([]bool{true, true})
	if dropped == guided {
		t.Fatal("dropping the guidance did not change the loss")
	}
	if droppedGrad != 0 {
		t.Fatalf("all images unguided: the SG network got a gradient (sum |g| %g)", droppedGrad)
	}
	if _, half := sgGradient([]bool{true, false}); half == 0 {
		t.Fatal("one image guided: the SG network got no gradient")
	}
	if _, err := m.TrainLossDropping(images, []bool{true}, diffusion.NewNoise(7)); err == nil {
		t.Fatal("one flag for two images accepted")
	}
}
