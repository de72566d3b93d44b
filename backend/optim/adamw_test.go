package optim

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/internal/pytorch"
	"github.com/diad-project/diad/backend/layers"
	"github.com/diad-project/diad/backend/torchrt"
)

// TestAdamWMatchesPyTorch runs three AdamW steps with fixed gradients in diad
// and in torch.optim.AdamW and compares the parameters.
func TestAdamWMatchesPyTorch(t *testing.T) {
	defer torchrt.Pin()()
	init := []float32{0.5, -1.0, 2.0, 0.0, 3.5, -0.25}
	grads := [][]float32{{0.1, -0.2, 0.3, 0.0, 1.0, -5.0}, {0.2, 0.2, -0.1, 0.5, 0.0, 1.0}, {-0.3, 0.1, 0.1, 0.1, -1.0, 0.5}}
	cfg := AdamWConfig{LR: 0.01, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, WeightDecay: 0.1}

	store := layers.NewStore(gotch.CPU)
	defer store.Free()
	w := store.Root().Param("w", []int64{6}, layers.Zeros)
	torchrt.NoGrad(func() {
		src := ts.MustOfSlice(init)
		w.Copy_(src)
		src.MustDrop()
	})
	opt, err := NewAdamW(store.Trainable(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer opt.Free()
	for _, g := range grads {
		opt.ZeroGrad()
		gt := ts.MustOfSlice(g)
		// loss = sum(w * g) has gradient g.
		loss := w.MustMul(gt, false).MustSum(gotch.Float, true)
		if err := loss.Backward(); err != nil {
			t.Fatal(err)
		}
		loss.MustDrop()
		gt.MustDrop()
		opt.Update()
	}
	got := w.Float64Values()

	in, err := json.Marshal(map[string]any{"init": init, "grads": grads, "cfg": cfg})
	if err != nil {
		t.Fatal(err)
	}
	script := `
import json, sys, torch
d = json.loads(sys.argv[1]); c = d["cfg"]
w = torch.nn.Parameter(torch.tensor(d["init"], dtype=torch.float32))
opt = torch.optim.AdamW([w], lr=c["LR"], betas=(c["Beta1"], c["Beta2"]), eps=c["Eps"], weight_decay=c["WeightDecay"])
for g in d["grads"]:
    opt.zero_grad(); w.grad = torch.tensor(g, dtype=torch.float32); opt.step()
print(json.dumps(w.detach().tolist()))
`
	var want []float64
	if err := json.Unmarshal(pytorch.Run(t, strings.TrimSpace(script), string(in)), &want); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-6 {
			t.Fatalf("diad %v, torch %v", got, want)
		}
	}
	if opt.Step != 3 {
		t.Fatalf("step %d", opt.Step)
	}
}

func TestAdamWStateRoundTrip(t *testing.T) {
	defer torchrt.Pin()()
	store := layers.NewStore(gotch.CPU)
	defer store.Free()
	store.Root().Param("w", []int64{3}, layers.Ones)
	a, err := NewAdamW(store.Trainable(), ReferenceAdamW)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Free()
	torchrt.Fill_(a.State()["w.exp_avg"], 0.25)
	b, err := NewAdamW(store.Trainable(), ReferenceAdamW)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	if err := b.LoadState(a.State(), 7); err != nil {
		t.Fatal(err)
	}
	if v := b.State()["w.exp_avg"].Float64Values(); v[0] != 0.25 || b.Step != 7 {
		t.Fatalf("restored %v step %d", v, b.Step)
	}
	if err := b.LoadState(map[string]*ts.Tensor{}, 1); err == nil {
		t.Fatal("empty state accepted")
	}
	if _, err := NewAdamW(nil, AdamWConfig{LR: -1}); err == nil {
		t.Fatal("negative lr accepted")
	}
}
