package model

import (
	"math"
	"testing"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/torchrt"
)

// Activation recomputation changes where the activations come from, not
// the gradients: a training step's gradients with it equal those without,
// for every trainable weight, with everything trained and with the
// reference freezing (frozen encoder blocks on the tape).
func TestGradientCheckpointingGivesTheSameGradients(t *testing.T) {
	defer torchrt.Pin()()
	m := newTiny(t)
	randomise(m, PrefixUNet) // no zero-initialised layer hides a gradient
	randomise(m, PrefixSG)
	images, zt := tinyInputs(m, 2, 5)
	defer images.MustDrop()
	zt.MustDrop()
	grads := func(recompute bool) map[string][]float32 {
		m.SetRecompute(recompute)
		defer m.SetRecompute(false)
		loss, err := m.TrainLoss(images, diffusion.NewNoise(3))
		if err != nil {
			t.Fatal(err)
		}
		if recompute != (m.tape != nil) || (recompute && m.tape.Blocks() == 0) {
			t.Fatalf("recompute %v: tape %v", recompute, m.tape)
		}
		if err := m.Backward(loss); err != nil {
			t.Fatal(err)
		}
		loss.MustDrop()
		out := map[string][]float32{}
		for _, p := range m.Store.Trainable() {
			g := p.Tensor.MustGrad(false)
			if g.MustDefined() {
				out[p.Name] = torchrt.Float32s(g)
				torchrt.Zero_(g)
			}
			g.MustDrop()
		}
		return out
	}
	for _, freeze := range []Freeze{FreezeNone, FreezeReference} {
		m.SetFreeze(freeze)
		plain := grads(false)
		again := grads(true)
		nonzero := 0
		for name, want := range plain {
			got, ok := again[name]
			if !ok || len(got) != len(want) {
				t.Fatalf("%s, %s: no gradient with recomputation", freeze, name)
			}
			scale := 0.0
			for _, v := range want {
				scale = math.Max(scale, math.Abs(float64(v)))
			}
			if scale > 0 {
				nonzero++
			}
			for i := range want {
				if d := math.Abs(float64(got[i] - want[i])); d > 1e-5*scale+1e-9 {
					t.Fatalf("%s, %s [%d]: %v recomputed, %v ordinary", freeze, name, i, got[i], want[i])
				}
			}
		}
		if len(again) != len(plain) || nonzero < len(plain)/2 {
			t.Fatalf("%s: %d gradients recomputed, %d ordinary, %d of them nonzero", freeze, len(again), len(plain), nonzero)
		}
		t.Logf("%s: %d weights' gradients equal (%d nonzero)", freeze, len(plain), nonzero)
	}
}
