package torchrt

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"
)

// A libtorch error inside a gotch Must* call panics (upstream gotch would
// log.Fatal); inside Do it is an *Error carrying libtorch's message, and the
// process goes on.
func TestDoTurnsLibtorchFailuresIntoErrors(t *testing.T) {
	var te *Error
	err := Do(func() error {
		a := ts.MustOnes([]int64{2, 3}, gotch.Float, gotch.CPU)
		defer a.MustDrop()
		p := a.MustMatmul(a, false) // 2x3 @ 2x3
		p.MustDrop()
		return nil
	})
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "cannot be multiplied") {
		t.Fatalf("shape error: %v", err)
	}
	// An allocation libtorch refuses: 2^60 floats.
	err = Do(func() error {
		z := ts.MustZeros([]int64{1 << 30, 1 << 30}, gotch.Float, gotch.CPU)
		z.MustDrop()
		return nil
	})
	if !errors.As(err, &te) || !strings.Contains(strings.ToLower(err.Error()), "allocat") {
		t.Fatalf("impossible allocation: %v", err)
	}
	// Only libtorch's message: no C++ frames, no Go stack, no log date.
	for _, noise := range []string{"frame #", "goroutine", "\n", "2026/", "debug.Stack"} {
		if strings.Contains(err.Error(), noise) {
			t.Fatalf("error carries %q: %v", noise, err)
		}
	}
	// Still alive, and tensors still work.
	if err := Do(func() error {
		a := ts.MustOnes([]int64{2, 2}, gotch.Float, gotch.CPU)
		defer a.MustDrop()
		if s := a.MustSum(gotch.Float, false); s.Float64Values()[0] != 4 {
			t.Errorf("sum %v", s.Float64Values())
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestDoReturnsErrorsAndRecoversPanics(t *testing.T) {
	var buf bytes.Buffer
	saved := logOut
	logOut = &buf
	defer func() { logOut = saved }()
	var te *Error
	want := errors.New("plain")
	if err := Do(func() error { return want }); err != want {
		t.Fatalf("returned error: %v", err)
	}
	err := Do(func() error { panic("a bug") })
	if err == nil || !strings.Contains(err.Error(), "internal error: a bug") || strings.Contains(err.Error(), "goroutine") {
		t.Fatalf("panic: %v", err)
	}
	if !strings.Contains(buf.String(), "goroutine") {
		t.Fatalf("the stack was not logged: %q", buf.String())
	}
	// A gotch failure outside libtorch (a panic with *gotch.FatalError) is an *Error too.
	if err := Do(func() error { panic(gotch.Fatal(errors.New("no such device"))) }); !errors.As(err, &te) || te.Message != "no such device" {
		t.Fatalf("gotch failure: %v", err)
	}
	// A Check inside Do is an *Error.
	if err := Do(func() error { Check(errors.New("bad shape")); return nil }); !errors.As(err, &te) || te.Message != "bad shape" {
		t.Fatalf("check: %v", err)
	}
}
