package torchrt

import (
	"os"
	"regexp"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/nn"
	"github.com/sugarme/gotch/ts"
)

func TestLibtorchVersionIsCompiledIn(t *testing.T) {
	v := LibtorchVersion()
	if !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(v) {
		t.Fatalf("libtorch version %q does not look like x.y.z", v)
	}
	if want := os.Getenv("DIAD_TORCH_VERSION"); want != "" && want != v {
		t.Fatalf("compiled against libtorch %s, but setup chose %s", v, want)
	}
}

func TestTensorArithmetic(t *testing.T) {
	a := ts.MustOfSlice([]float32{1, 2, 3, 4}).MustView([]int64{2, 2}, true)
	defer a.MustDrop()
	b := ts.MustOfSlice([]float32{5, 6, 7, 8}).MustView([]int64{2, 2}, true)
	defer b.MustDrop()
	prod := a.MustMatmul(b, false)
	defer prod.MustDrop()
	got := prod.Float64Values()
	want := []float64{19, 22, 43, 50}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("matmul = %v, want %v", got, want)
		}
	}
	sum := a.MustAdd(b, false)
	defer sum.MustDrop()
	if s := sum.MustSum(gotch.Float, false); s.Float64Values()[0] != 36 {
		t.Fatalf("sum of a+b = %v, want 36", s.Float64Values())
	} else {
		s.MustDrop()
	}
}

func TestAutogradThroughConvNet(t *testing.T) {
	ManualSeed(1)
	vs := nn.NewVarStore(gotch.CPU)
	defer vs.Destroy()
	root := vs.Root()
	cfg := nn.DefaultConv2DConfig()
	cfg.Padding = []int64{1, 1}
	conv1 := nn.NewConv2D(root.Sub("c1"), 3, 8, 3, cfg)
	conv2 := nn.NewConv2D(root.Sub("c2"), 8, 1, 3, cfg)
	forward := func(x *ts.Tensor) *ts.Tensor {
		h := conv1.Forward(x)
		r := h.MustRelu(true)
		y := conv2.Forward(r)
		r.MustDrop()
		return y
	}

	x := ts.MustRandn([]int64{4, 3, 16, 16}, gotch.Float, gotch.CPU)
	defer x.MustDrop()
	target := ts.MustZeros([]int64{4, 1, 16, 16}, gotch.Float, gotch.CPU)
	defer target.MustDrop()
	loss := func() *ts.Tensor {
		y := forward(x)
		l := y.MustMseLoss(target, 1, false) // reduction 1 = mean
		y.MustDrop()
		return l
	}

	// Gradients reach the first layer.
	l0 := loss()
	l0.MustBackward()
	grad := conv1.Ws.MustGrad(false)
	gnorm := grad.MustNorm(false).Float64Values()[0]
	grad.MustDrop()
	if !(gnorm > 0) {
		t.Fatalf("gradient of conv1.weight has norm %v, want > 0", gnorm)
	}
	before := l0.Float64Values()[0]
	l0.MustDrop()

	opt, err := nn.DefaultAdamConfig().Build(vs, 1e-2)
	if err != nil {
		t.Fatal(err)
	}
	l1 := loss()
	if err := opt.BackwardStep(l1); err != nil {
		t.Fatal(err)
	}
	l1.MustDrop()
	l2 := loss()
	after := l2.Float64Values()[0]
	l2.MustDrop()
	if !(after < before) {
		t.Fatalf("one Adam step did not lower the loss: %v -> %v", before, after)
	}
}

func TestCUDAAvailabilityMatchesBuild(t *testing.T) {
	cudaBuild := os.Getenv("DIAD_CUDA") == "1"
	_, gpuNode := os.Stat("/dev/nvidiactl")
	switch {
	case !cudaBuild && CUDAAvailable():
		t.Fatal("CPU build (stubbed CUDA libraries) reports CUDA available")
	case cudaBuild && gpuNode == nil && !CUDAAvailable():
		t.Fatal("CUDA build on a machine with /dev/nvidiactl reports no CUDA")
	}
	if got := Devices(); (len(got) > 1) != CUDAAvailable() || got[0] != "cpu" {
		t.Fatalf("Devices() = %v inconsistent with CUDAAvailable() = %v", got, CUDAAvailable())
	}
	if !CUDAAvailable() {
		if _, err := ParseDevice("cuda"); err == nil {
			t.Fatal("ParseDevice(cuda) succeeded without CUDA")
		}
	}
}

func TestParseDevice(t *testing.T) {
	if d, err := ParseDevice("CPU"); err != nil || d != gotch.CPU {
		t.Fatalf("ParseDevice(CPU) = %v, %v", d, err)
	}
	for _, bad := range []string{"tpu", "cuda:x", "cuda:-1"} {
		if _, err := ParseDevice(bad); err == nil {
			t.Errorf("ParseDevice(%q) accepted", bad)
		}
	}
}

func TestSeedAndThreads(t *testing.T) {
	SetThreads(1)
	if Threads() != 1 {
		t.Fatalf("Threads() = %d after SetThreads(1)", Threads())
	}
	SetThreads(2)
	draw := func() []float64 {
		ManualSeed(42)
		x := ts.MustRandn([]int64{5}, gotch.Float, gotch.CPU)
		defer x.MustDrop()
		return x.Float64Values()
	}
	a, b := draw(), draw()
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, different draws: %v vs %v", a, b)
		}
	}
}

func TestNoGradRestoresMode(t *testing.T) {
	defer Pin()()
	if !GradEnabled() {
		t.Fatal("grad mode off at start")
	}
	w := ts.MustOnes([]int64{2}, gotch.Float, gotch.CPU).MustSetRequiresGrad(true, true)
	defer w.MustDrop()
	NoGrad(func() {
		if GradEnabled() {
			t.Error("grad mode on inside NoGrad")
		}
		NoGrad(func() {}) // nesting keeps it off
		y := w.MustMulScalar(ts.FloatScalar(2), false)
		if y.MustRequiresGrad() {
			t.Error("op inside NoGrad recorded a graph")
		}
		y.MustDrop()
	})
	if !GradEnabled() {
		t.Fatal("NoGrad did not restore grad mode")
	}
	y := w.MustMulScalar(ts.FloatScalar(2), false)
	defer y.MustDrop()
	if !y.MustRequiresGrad() {
		t.Fatal("op after NoGrad recorded no graph")
	}
}
