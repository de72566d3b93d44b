package kernelcheck

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/diad-project/diad/backend/internal/torchtest"
	"github.com/diad-project/diad/backend/torchrt"
)

// The process computes right after the check, with oneDNN or without it.
func TestEnsureLeavesKernelsThatComputeRight(t *testing.T) {
	o, err := Ensure()
	if err != nil {
		t.Fatal(err)
	}
	if len(o.First.Results) != len(cases) {
		t.Fatalf("%d results for %d cases", len(o.First.Results), len(cases))
	}
	final := o.First
	if o.Fallback != nil {
		final = *o.Fallback
		t.Logf("oneDNN failed here and was switched off: %v", o.First.Failed())
	}
	for _, r := range final.Results {
		if !r.OK() {
			t.Errorf("%s", r)
		}
		t.Logf("%s", r)
	}
	// A second call reports the same outcome without running again.
	o2, err := Ensure()
	if err != nil || o2.First.Elapsed != o.First.Elapsed {
		t.Fatalf("second Ensure ran again or failed: %v", err)
	}
	t.Logf("check took %v at %d threads (oneDNN %v)", o.First.Elapsed, o.First.Threads, o.First.OneDNN)
}

// restoreOneDNN puts oneDNN back on after a test that switches it off.
func restoreOneDNN(t *testing.T) {
	on := torchrt.OneDNNEnabled()
	t.Cleanup(func() { torchrt.SetOneDNNEnabled(on) })
}

// A kernel that returns NaN while oneDNN is on (as oneDNN 3.7.2 does on Zen
// 5): the check names it, switches oneDNN off with one warning, and the
// same cases then compute right.
func TestWrongOneDNNKernelFallsBack(t *testing.T) {
	if !torchrt.OneDNNAvailable() {
		t.Skip("this libtorch has no oneDNN")
	}
	restoreOneDNN(t)
	torchrt.SetOneDNNEnabled(true)
	broken := func(op string, oneDNN bool, got []float32) {
		if oneDNN && op == "conv2d 64->4 3x3" {
			got[len(got)/2] = float32(math.NaN())
		}
	}
	var warnings []string
	warn := func(msg string, args ...any) { warnings = append(warnings, fmt.Sprint(append([]any{msg}, args...)...)) }
	o := decide(broken, warn, false)
	if o.Err != nil {
		t.Fatal(o.Err)
	}
	if o.First.OK() || o.Fallback == nil || !o.Fallback.OK() || !o.OneDNNOff() {
		t.Fatalf("first run ok %v, fallback %+v", o.First.OK(), o.Fallback)
	}
	if o.Fallback.OneDNN || torchrt.OneDNNEnabled() {
		t.Fatal("the fallback ran with oneDNN on")
	}
	failed := o.First.Failed()
	if len(failed) != 1 || failed[0].Op != "conv2d 64->4 3x3" || failed[0].NonFinite == 0 {
		t.Fatalf("failed cases %v, want the 64->4 convolution with a NaN", failed)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "conv2d 64->4 3x3") || !strings.Contains(warnings[0], "oneDNN") {
		t.Fatalf("warnings %q, want one naming the convolution and oneDNN", warnings)
	}
}

// A value slightly wrong (not NaN) is caught too: a wrong score must not
// pass silently.
func TestSlightlyWrongValueIsCaught(t *testing.T) {
	restoreOneDNN(t)
	off := func(op string, oneDNN bool, got []float32) {
		if op == "linear 64->96" {
			got[7] += 1e-3
		}
	}
	o := decide(off, func(string, ...any) {}, false)
	if o.Err == nil || !strings.Contains(o.Err.Error(), "linear 64->96") {
		t.Fatalf("a matrix product off by 0.001 on one value: error %v", o.Err)
	}
	if torchrt.OneDNNAvailable() && o.Fallback == nil {
		t.Fatal("the check did not try without oneDNN first")
	}
}

func TestCompareBounds(t *testing.T) {
	o := output{got: []float32{1, 2, 3}, want: []float64{1, 2, 3}, bound: []float64{0.1, 0.1, 0}}
	if w, bad := compare(o); w != 0 || bad != 0 {
		t.Fatalf("exact values: worst %v, %d non-finite", w, bad)
	}
	o.got = []float32{1.09, 2, 3}
	if w, _ := compare(o); w > 1 || w < 0.8 {
		t.Fatalf("an error within its bound scores %v", w)
	}
	o.got = []float32{1.2, 2, 3}
	if w, _ := compare(o); w <= 1 {
		t.Fatalf("an error over its bound scores %v", w)
	}
	o.got = []float32{1, float32(math.Inf(1)), float32(math.NaN())}
	if w, bad := compare(o); !math.IsInf(w, 1) || bad != 2 {
		t.Fatalf("NaN and Inf: worst %v, %d non-finite", w, bad)
	}
	o.got = []float32{1, 2, 3.0000002}
	if w, _ := compare(o); w <= 1 {
		t.Fatalf("a value off where the bound is zero scores %v", w)
	}
}

// The reference itself: a 1x1 convolution is a matrix product computed by
// hand, and the bound grows with the number of terms.
func TestConvReference(t *testing.T) {
	c := convShape{N: 1, C: 2, H: 1, W: 1, O: 1, K: 1, Stride: 1}
	r := convRef(c, []float64{3, -4}, []float64{0.5, 2}, []float64{1}, []float64{2})
	y, gx, gw, gb := r.y, r.gx, r.gw, r.gb
	if y.val[0] != 1+1.5-8 || y.abs[0] != 1+1.5+8 || y.terms[0] != 3 {
		t.Fatalf("y %+v", y)
	}
	if gx.val[0] != 1 || gx.val[1] != 4 || gw.val[0] != 6 || gw.val[1] != -8 || gb.val[0] != 2 {
		t.Fatalf("gradients %v %v %v", gx.val, gw.val, gb.val)
	}
	if b := y.bound()[0]; b <= 0 || b > 1e-5 {
		t.Fatalf("bound %v", b)
	}
	// Padding: a 3x3 kernel on a 2x2 image sees 4 taps at each output.
	c = convShape{N: 1, C: 1, H: 2, W: 2, O: 1, K: 3, Stride: 1, Pad: 1}
	y = convRef(c, []float64{1, 2, 3, 4}, []float64{1, 1, 1, 1, 1, 1, 1, 1, 1}, []float64{0}, make([]float64, 4)).y
	for i, v := range y.val {
		if v != 10 || y.terms[i] != 5 {
			t.Fatalf("padded output %d: %v with %d terms", i, v, y.terms[i])
		}
	}
}

// DIAD_ONEDNN=on keeps a failing oneDNN on, with a warning, and runs no
// fallback.
func TestKeptOnWhenAsked(t *testing.T) {
	if !torchrt.OneDNNAvailable() {
		t.Skip("this libtorch has no oneDNN")
	}
	restoreOneDNN(t)
	torchrt.SetOneDNNEnabled(true)
	broken := func(op string, oneDNN bool, got []float32) {
		if oneDNN && op == "conv2d 32->4 3x3" {
			got[0] += 1
		}
	}
	var warnings int
	o := decide(broken, func(string, ...any) { warnings++ }, true)
	if o.Err != nil || !o.Forced || o.Fallback != nil || !torchrt.OneDNNEnabled() || warnings != 1 {
		t.Fatalf("outcome %+v, oneDNN on %v, %d warnings", o, torchrt.OneDNNEnabled(), warnings)
	}
}

func TestMode(t *testing.T) {
	for v, want := range map[string]string{"": OneDNNAuto, "auto": OneDNNAuto, " OFF": OneDNNOff, "on": OneDNNOn} {
		t.Setenv(Env, v)
		if got, err := mode(); err != nil || got != want {
			t.Errorf("%s=%q: %q %v, want %q", Env, v, got, err, want)
		}
	}
	t.Setenv(Env, "sometimes")
	if _, err := mode(); err == nil || !strings.Contains(err.Error(), "want auto, on or off") {
		t.Fatalf("a bad value: %v", err)
	}
}

// BenchmarkRun is the check's cost: what every process that trains or
// scores pays once.
func BenchmarkRun(b *testing.B) {
	for b.Loop() {
		if rep := Run(); !rep.OK() && !rep.OneDNN {
			b.Fatalf("%v", rep.Failed())
		}
	}
}

// The check frees every tensor it makes (it runs in every process, before
// the model): no handle is left alive, and repeating it does not grow RSS.
func TestCheckFreesItsTensors(t *testing.T) {
	torchtest.RequireNoLeak(t, "the kernel check", 0, func() { Run() })
	Run()
	torchtest.Settle()
	before := torchtest.RSSMiB()
	const rounds = 20
	for range rounds {
		Run()
	}
	torchtest.Settle()
	if grew := torchtest.RSSMiB() - before; grew > 4 {
		t.Fatalf("%d checks grew RSS by %.1f MiB", rounds, grew)
	}
}
