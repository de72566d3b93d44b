package torchref

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sugarme/gotch"

	"github.com/diad-project/diad/backend/filetest"
	"github.com/diad-project/diad/backend/internal/pytorch"
	"github.com/diad-project/diad/backend/model"
	"github.com/diad-project/diad/backend/optim"
)

// tinyWorker saves a tiny model with every layer random and starts a
// PyTorch worker on it.
func tinyWorker(t *testing.T, preset string) (*model.DiAD, *Worker, string) {
	t.Helper()
	pytorch.Require(t)
	cfg, err := model.Preset(preset)
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.New(cfg, gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Free)
	if err := FillZeroInit(m); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	if err := m.Save(path, nil); err != nil {
		t.Fatal(err)
	}
	w, err := Start(context.Background(), path, Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Error(err)
		}
	})
	return m, w, dir
}

// PyTorch's modules, built independently from the same checkpoint, compute
// what diad computes: the guided denoiser, the autoencoder both ways and a
// whole reconstruction, and the same training steps.
func TestDiadAndPyTorchComputeTheSame(t *testing.T) {
	m, w, dir := tinyWorker(t, "tiny")
	cases, free, err := InferenceCases(context.Background(), m, Ops, 2, dir, 7)
	if err != nil {
		t.Fatal(err)
	}
	defer free()
	if len(cases) != len(Ops) {
		t.Fatalf("%d cases for %d ops", len(cases), len(Ops))
	}
	for _, c := range cases {
		r, err := Compare(w, c, 1, dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Diad) != 1 || len(r.Torch) != 1 || !(r.Torch[0].Seconds > 0) || !(r.Diad[0].Seconds > 0) {
			t.Fatalf("%s: samples %+v / %+v", c.Name, r.Diad, r.Torch)
		}
		t.Logf("%s: relative difference %.2g, diad %.4fs, torch %.4fs", c.Name, r.RelDiff, r.Diad[0].Seconds, r.Torch[0].Seconds)
		if r.RelDiff > 1e-4 {
			t.Errorf("%s: diad and PyTorch differ by %.3g of the output's scale", c.Name, r.RelDiff)
		}
	}

	// The comparison sees a difference: the same request against other
	// weights on diad's side.
	m.AE.SetScaleFactor(2 * m.AE.Config().ScaleFactor)
	r, err := Compare(w, cases[1], 1, dir) // encode: the scale multiplies the latent
	if err != nil {
		t.Fatal(err)
	}
	if r.RelDiff < 0.1 {
		t.Fatalf("a doubled latent scale on one side went unseen: relative difference %.3g", r.RelDiff)
	}
}

// The variants measured as candidate speed-ups compute the same, and the
// FLOP count grows with the batch as it must (twice the images, twice the
// operations).
func TestVariantsAndFlops(t *testing.T) {
	m, _, dir := tinyWorker(t, "tiny")
	path := filepath.Join(dir, "model.safetensors")
	w, err := Start(context.Background(), path, Options{Threads: 1, Variants: []string{VariantChannelsLast}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := w.Close(); err != nil {
			t.Error(err)
		}
	}()
	var flops []float64
	for _, b := range []int{1, 2} {
		cases, free, err := InferenceCases(context.Background(), m, []string{OpDenoise}, b, dir, 5)
		if err != nil {
			t.Fatal(err)
		}
		defer free()
		r, err := Compare(w, cases[0], 1, dir)
		if err != nil {
			t.Fatal(err)
		}
		if r.RelDiff > 1e-4 {
			t.Errorf("channels-last PyTorch differs from diad by %.3g", r.RelDiff)
		}
		n, err := w.Flops(cases[0])
		if err != nil {
			t.Fatal(err)
		}
		flops = append(flops, n)
	}
	if flops[1] != 2*flops[0] {
		t.Fatalf("FLOPs at batch 1 and 2: %g, %g", flops[0], flops[1])
	}
}

func TestTrainStepsAgreeWithPyTorch(t *testing.T) {
	m, w, dir := tinyWorker(t, "tiny")
	m.SetFreeze(model.FreezeReference)
	c, free, err := TrainCase(m, 2, dir, 3, optim.AdamWConfig{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	defer free()
	// Three steps on each side (a warm-up and two rounds); the losses of
	// the later steps agree only if the updates did.
	r, err := Compare(w, c, 2, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("train: relative difference of the losses %.2g", r.RelDiff)
	if r.RelDiff > 1e-4 {
		t.Fatalf("diad's and PyTorch's training steps differ: losses %.3g apart (relative)", r.RelDiff)
	}
}

func TestWorkerErrors(t *testing.T) {
	pytorch.Require(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "x.safetensors")
	filetest.Write(t, bad, []byte("not a checkpoint"))
	if _, err := Start(context.Background(), bad, Options{}); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("a broken checkpoint: %v", err)
	}
	if _, err := Start(context.Background(), bad, Options{Attention: "flash"}); err == nil || !strings.Contains(err.Error(), "flash") {
		t.Fatalf("an unknown attention: %v", err)
	}
	if _, err := Start(context.Background(), bad, Options{Variants: []string{"fp8"}}); err == nil || !strings.Contains(err.Error(), "fp8") {
		t.Fatalf("an unknown variant: %v", err)
	}
	_, w, _ := tinyWorker(t, "tiny")
	if _, err := w.Run(Request{Op: "sharpen", Inputs: bad}); err == nil {
		t.Fatal("a request on a broken inputs file was answered")
	}
	// The worker stays up after a failed request.
	if _, err := w.Run(Request{Op: "sharpen", Inputs: bad}); err == nil || !strings.Contains(err.Error(), "PyTorch") {
		t.Fatalf("second failed request: %v", err)
	}
}
