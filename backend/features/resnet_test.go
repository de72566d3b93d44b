package features

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/checkpoint"
	"github.com/diad-project/diad/backend/internal/pytorch"
	"github.com/diad-project/diad/backend/internal/torchtest"
	"github.com/diad-project/diad/backend/torchrt"
)

// TestMatchesTorchvision builds torchvision ResNets with random weights and
// random BatchNorm statistics, saves their state dicts in torchvision's own
// .pth layout, and checks that diad's extractor loaded from those files gives
// the same layer1..layer4 features.
func TestMatchesTorchvision(t *testing.T) {
	defer torchrt.Pin()()
	dir := t.TempDir()
	archs := []string{"resnet18", "resnet50", "wide_resnet50_2"}
	script := `
import sys, torch, torchvision
out = sys.argv[1]
torch.manual_seed(0)
x = torch.randn(2, 3, 64, 64)
for arch in sys.argv[2:]:
    m = getattr(torchvision.models, arch)(weights=None).eval()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5); mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5); mod.bias.uniform_(-0.2, 0.2)
        torch.save(m.state_dict(), f"{out}/{arch}.pth")
        h = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        feats = {"x": x}
        for i in range(1, 5):
            h = getattr(m, f"layer{i}")(h); feats[f"layer{i}"] = h.clone()
        torch.save(feats, f"{out}/{arch}-features.pth")
`
	pytorch.Run(t, script, append([]string{dir}, archs...)...)
	for _, arch := range archs {
		t.Run(arch, func(t *testing.T) {
			defer torchrt.Pin()()
			e, err := New(Config{Arch: arch, Weights: filepath.Join(dir, arch+".pth"), Layers: []int{1, 2, 3, 4}}, gotch.CPU)
			if err != nil {
				t.Fatal(err)
			}
			defer e.Free()
			if !e.Pretrained() {
				t.Fatal("weights loaded but Pretrained() is false")
			}
			ref, err := checkpoint.Open(filepath.Join(dir, arch+"-features.pth"))
			if err != nil {
				t.Fatal(err)
			}
			defer ref.Close()
			x, err := ref.Load("x", gotch.CPU)
			if err != nil {
				t.Fatal(err)
			}
			defer x.MustDrop()
			var got []*ts.Tensor
			torchtest.RequireNoLeak(t, "Forward", 4, func() { got = e.Forward(x) })
			for i, f := range got {
				want, err := ref.Load("layer"+string(rune('1'+i)), gotch.CPU)
				if err != nil {
					t.Fatal(err)
				}
				if s := f.MustSize(); s[1] != Architectures[arch].Channels(i+1) {
					t.Fatalf("layer%d has %d channels", i+1, s[1])
				}
				d := maxDiff(f, want)
				scale := maxAbs(want)
				if d > 1e-4*math.Max(1, scale) {
					t.Fatalf("layer%d differs from torchvision by %g (scale %g)", i+1, d, scale)
				}
				want.MustDrop()
				f.MustDrop()
			}
			// The same weights re-saved as safetensors (timm's format, same keys) load too.
			st := filepath.Join(t.TempDir(), arch+".safetensors")
			if err := checkpoint.Save(st, checkpoint.StoreTensors(e.Store()), nil); err != nil {
				t.Fatal(err)
			}
			e2, err := New(Config{Arch: arch, Weights: st, Layers: []int{2}}, gotch.CPU)
			if err != nil {
				t.Fatal(err)
			}
			defer e2.Free()
		})
	}
}

func maxDiff(a, b *ts.Tensor) float64 {
	x, y := a.Float64Values(), b.Float64Values()
	d := 0.0
	for i := range x {
		d = math.Max(d, math.Abs(x[i]-y[i]))
	}
	return d
}

func maxAbs(a *ts.Tensor) float64 {
	m := 0.0
	for _, v := range a.Float64Values() {
		m = math.Max(m, math.Abs(v))
	}
	return m
}

func TestRandomInitAndErrors(t *testing.T) {
	defer torchrt.Pin()()
	e, err := New(Config{Arch: "resnet18", Layers: []int{1, 3}}, gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Free()
	if e.Pretrained() {
		t.Fatal("random extractor claims to be pretrained")
	}
	x := ts.MustRandn([]int64{1, 3, 32, 32}, gotch.Float, gotch.CPU)
	defer x.MustDrop()
	out := e.Forward(x)
	if len(out) != 2 || out[0].MustSize()[1] != 64 || out[1].MustSize()[1] != 256 {
		t.Fatalf("features %v %v", out[0].MustSize(), out[1].MustSize())
	}
	for _, o := range out {
		o.MustDrop()
	}
	for _, bad := range []Config{{Arch: "vgg16", Layers: []int{1}}, {Arch: "resnet18", Layers: []int{5}}, {Arch: "resnet18"}} {
		if _, err := New(bad, gotch.CPU); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	// Weights of another architecture are refused by name.
	spec, err := Spec("resnet18")
	if err != nil {
		t.Fatal(err)
	}
	tensors := map[string]*ts.Tensor{}
	for _, p := range spec.Params() {
		shape := p.Shape
		if p.Name == "layer1.0.conv1.weight" {
			shape = []int64{64, 64, 1, 1}
		}
		tensors[p.Name] = ts.MustZeros(shape, gotch.Float, gotch.CPU)
	}
	path := filepath.Join(t.TempDir(), "bad.safetensors")
	if err := checkpoint.Save(path, tensors, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Arch: "resnet18", Weights: path, Layers: []int{1}}, gotch.CPU); err == nil || !strings.Contains(err.Error(), "layer1.0.conv1.weight") {
		t.Fatalf("mis-shaped weights: %v", err)
	}
	if _, err := New(Config{Arch: "resnet18", Weights: filepath.Join(t.TempDir(), "none.pth"), Layers: []int{1}}, gotch.CPU); err == nil {
		t.Fatal("absent weights accepted")
	}
}

func TestRandomInitIsReproducible(t *testing.T) {
	defer torchrt.Pin()()
	a, err := New(Config{Arch: "resnet18", Layers: []int{1}}, gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Free()
	torchrt.ManualSeed(999) // whatever the global generator did before
	b, err := New(Config{Arch: "resnet18", Layers: []int{1}}, gotch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	if maxDiff(a.Store().Get("conv1.weight").Tensor, b.Store().Get("conv1.weight").Tensor) != 0 {
		t.Fatal("two random extractors differ")
	}
}
