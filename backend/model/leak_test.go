package model

import (
	"context"
	"testing"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/diffusion"
	"github.com/diad-project/diad/backend/internal/torchtest"
	"github.com/diad-project/diad/backend/optim"
	"github.com/diad-project/diad/backend/torchrt"
)

// TestLongLoopDoesNotGrowMemory runs 200 iterations of a training step and a
// full reconstruction and checks that neither the number of live tensor
// handles nor the process's RSS grows.
func TestLongLoopDoesNotGrowMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("long loop")
	}
	defer torchrt.Pin()()
	m := newTiny(t)
	opt, err := optim.NewAdamW(m.Store.Trainable(), optim.ReferenceAdamW)
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Free()
	images, _ := tinyInputs(m, 1, 1)
	defer images.MustDrop()
	noise := diffusion.NewNoise(1)
	iteration := func() {
		opt.ZeroGrad()
		loss, err := m.TrainLoss(images, noise)
		if err != nil {
			t.Fatal(err)
		}
		loss.MustBackward()
		loss.MustDrop()
		opt.Update()
		rec, err := m.Reconstruct(context.Background(), images, diffusion.ReferenceSampler, noise, nil)
		if err != nil {
			t.Fatal(err)
		}
		rec.Free()
	}
	for i := 0; i < 20; i++ { // warm-up: allocator pools, lazily created grads
		iteration()
	}
	torchtest.Settle()
	tensors0, rss0, ops0 := torchtest.LiveTensors(), torchtest.RSSMiB(), ts.TensorCount
	for i := 0; i < 200; i++ {
		iteration()
	}
	torchtest.Settle()
	tensors1, rss1, ops1 := torchtest.LiveTensors(), torchtest.RSSMiB(), ts.TensorCount
	// gotch's generated wrappers malloc(0) an out-pointer per operation and
	// never free it (a 32-byte glibc chunk); that known, linear cost is
	// subtracted so the test sees everything else.
	known := float64(ops1-ops0) * torchtest.GotchBytesLeakedPerOp / (1 << 20)
	growth := rss1 - rss0 - known
	t.Logf("live tensors %d -> %d; RSS %.1f -> %.1f MiB over 200 iterations; %d ops (%.1f MiB known gotch out-pointer leak); unexplained growth %.1f MiB",
		tensors0, tensors1, rss0, rss1, ops1-ops0, known, growth)
	if tensors1 != tensors0 {
		t.Errorf("live tensor handles grew from %d to %d", tensors0, tensors1)
	}
	// One leaked 64x64x16 activation per iteration would add 50 MiB.
	if growth > 25 {
		t.Errorf("RSS grew by %.1f MiB beyond the known per-op leak", growth)
	}
}
