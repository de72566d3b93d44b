// Package kernelcheck checks, once per process and before any model work,
// that libtorch's CPU kernels compute right on this machine.
//
// A math library can be wrong on a CPU it was not tested on: oneDNN 3.7.2
// (Debian 13's) returns NaN or values off by 0.2-0.4 for the input gradient
// of convolutions with few output channels on AMD Zen 5, so every training
// step is NaN there, while inference looks fine. The check runs a few small
// operations the model is made of - convolutions forward and backward at
// such shapes, a transposed convolution, group norm, attention and a matrix
// product - on inputs drawn from a fixed Go generator (libtorch's own
// generator is left untouched, so seeded results do not change), and
// compares every value with a float64 reference computed in Go, within
// bounds derived from float32 rounding (reference.go). When a result is
// wrong while oneDNN is on, oneDNN is switched off for the process (ATen's
// own kernels: slower, correct) with one warning naming the operation and
// the library; when it is still wrong without oneDNN, Ensure returns an
// error and nothing trains or scores.
//
// The check covers the CPU; CUDA kernels are not compared (their TF32
// convolutions round differently by design).
package kernelcheck

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/diad-project/diad/backend/torchrt"
)

// Result is one case's comparison: its worst output.
type Result struct {
	Op, Shape string
	Output    string  // the output with the largest error (e.g. "input gradient")
	Worst     float64 // largest |got - want| / tolerance over its values (+Inf for NaN)
	NonFinite int     // NaN or infinite values among all outputs
	Err       error   // libtorch failed to compute the case
}

// OK reports whether every value of the case is finite and within tolerance.
func (r Result) OK() bool { return r.Err == nil && r.NonFinite == 0 && r.Worst <= 1 }

// MarshalJSON writes the result with its verdict; a non-finite worst error
// (a NaN result) is null.
func (r Result) MarshalJSON() ([]byte, error) {
	v := struct {
		Op        string   `json:"op"`
		Shape     string   `json:"shape"`
		Output    string   `json:"output"`
		Worst     *float64 `json:"worst_error_of_tolerance"`
		NonFinite int      `json:"non_finite"`
		Error     string   `json:"error,omitempty"`
		OK        bool     `json:"ok"`
	}{Op: r.Op, Shape: r.Shape, Output: r.Output, NonFinite: r.NonFinite, OK: r.OK()}
	if !math.IsInf(r.Worst, 0) && !math.IsNaN(r.Worst) {
		v.Worst = &r.Worst
	}
	if r.Err != nil {
		v.Error = r.Err.Error()
	}
	return json.Marshal(v)
}

// String describes the result in one line.
func (r Result) String() string {
	switch {
	case r.Err != nil:
		return fmt.Sprintf("%s (%s): %v", r.Op, r.Shape, r.Err)
	case r.NonFinite > 0:
		return fmt.Sprintf("%s (%s): %s has %d NaN or infinite values", r.Op, r.Shape, r.Output, r.NonFinite)
	default:
		return fmt.Sprintf("%s (%s): %s error %.3g of tolerance", r.Op, r.Shape, r.Output, r.Worst)
	}
}

// Report is one run of every case.
type Report struct {
	OneDNN  bool          `json:"onednn"`  // oneDNN's kernels were enabled
	Threads int           `json:"threads"` // libtorch's intra-op threads
	Results []Result      `json:"results"`
	Elapsed time.Duration `json:"elapsed_ns"`
}

// Failed lists the cases that computed wrong.
func (r Report) Failed() []Result {
	var out []Result
	for _, res := range r.Results {
		if !res.OK() {
			out = append(out, res)
		}
	}
	return out
}

// OK reports whether every case computed right.
func (r Report) OK() bool { return len(r.Failed()) == 0 }

// tamper stands for a broken kernel in tests: it may change what libtorch
// computed for op before the comparison.
type tamper func(op string, oneDNN bool, got []float32)

// seed fixes the inputs, so that a failure repeats.
const seed = 20240229

// Run computes every case with the kernels libtorch uses now and compares
// them with the reference.
func Run() Report { return run(nil) }

func run(tp tamper) Report {
	rep := Report{OneDNN: torchrt.OneDNNEnabled()}
	start := time.Now()
	rnd := rand.New(rand.NewPCG(seed, seed))
	torchrt.WithGrad(func() {
		// Kernels can be wrong at one thread count and right at another:
		// check at the count the model will run at.
		torchrt.FitThreads()
		rep.Threads = torchrt.Threads()
		for _, c := range cases {
			rep.Results = append(rep.Results, runCase(c, rnd, rep.OneDNN, tp))
		}
	})
	rep.Elapsed = time.Since(start)
	return rep
}

func runCase(c kernelCase, rnd *rand.Rand, oneDNN bool, tp tamper) (res Result) {
	res = Result{Op: c.op, Shape: c.shape}
	tc := &tensors{}
	var outs []output
	err := torchrt.Do(func() error {
		defer tc.free()
		var err error
		outs, err = c.run(tc, rnd)
		return err
	})
	if err != nil {
		res.Err = err
		return res
	}
	for _, o := range outs {
		if tp != nil {
			tp(c.op, oneDNN, o.got)
		}
		worst, bad := compare(o)
		res.NonFinite += bad
		if worst > res.Worst || res.Output == "" {
			res.Worst, res.Output = worst, o.name
		}
	}
	return res
}

// compare returns the largest error of o relative to its tolerance, and how
// many of its values are not finite.
func compare(o output) (worst float64, nonFinite int) {
	if len(o.got) != len(o.want) {
		return math.Inf(1), 0
	}
	for i, g := range o.got {
		v := float64(g)
		if math.IsNaN(v) || math.IsInf(v, 0) {
			nonFinite++
			worst = math.Inf(1)
			continue
		}
		// The tiny floor keeps an exact zero from dividing by zero.
		r := math.Abs(v-o.want[i]) / (o.bound[i] + 1e-30)
		worst = max(worst, r)
	}
	return worst, nonFinite
}

// Outcome is what the check decided for this process.
type Outcome struct {
	First    Report  // with the kernels libtorch chose
	Fallback *Report // the same cases after switching oneDNN off, when First failed with it on
	Disabled bool    // oneDNN was off before the check (DIAD_ONEDNN=off)
	Forced   bool    // oneDNN failed the check and was kept on (DIAD_ONEDNN=on)
	Err      error   // not nil when the process cannot compute right
}

// OneDNNOff reports whether oneDNN is off for this process.
func (o Outcome) OneDNNOff() bool { return o.Disabled || o.Fallback != nil }

// Debian13OneDNN is where the build root keeps Debian 13's oneDNN 3.7.2
// unpacked (backend/buildenv/torchenv.sh), the library that computes wrong
// on AMD Zen 5: tests and `diad-dev bench kernels --onednn-lib` load it on purpose.
const Debian13OneDNN = "/opt/diad/onednn-trixie/usr/lib/x86_64-linux-gnu"

// Env chooses what the check may do with oneDNN: "auto" (the default)
// switches it off where it computes wrong; "off" switches it off before the
// check; "on" keeps it on even where the check fails, with a warning that
// results may be wrong (to measure its speed, or to get past a check that
// is itself wrong on some CPU).
const Env = "DIAD_ONEDNN"

// Env's values.
const (
	OneDNNAuto = "auto"
	OneDNNOff  = "off"
	OneDNNOn   = "on"
)

// mode reads Env.
func mode() (string, error) {
	switch v := strings.ToLower(strings.TrimSpace(os.Getenv(Env))); v {
	case "", OneDNNAuto:
		return OneDNNAuto, nil
	case OneDNNOff, OneDNNOn:
		return v, nil
	default:
		return "", fmt.Errorf("%s=%q: want auto, on or off", Env, v)
	}
}

var (
	once    sync.Once
	outcome Outcome
)

// Ensure runs the check the first time it is called in a process and
// returns its outcome every time: an error when libtorch computes wrong even
// without oneDNN. Call it before the first tensor work that trains or
// scores (model.New does).
func Ensure() (Outcome, error) {
	once.Do(func() {
		m, err := mode()
		if err != nil {
			outcome.Err = err
			return
		}
		if m == OneDNNOff {
			torchrt.SetOneDNNEnabled(false)
		}
		outcome = decide(nil, slog.Warn, m == OneDNNOn)
	})
	return outcome, outcome.Err
}

// decide runs the check and, when it fails with oneDNN on, switches oneDNN
// off and runs it again (unless keepOneDNN: then it only warns).
func decide(tp tamper, warn func(msg string, args ...any), keepOneDNN bool) Outcome {
	o := Outcome{Disabled: torchrt.OneDNNAvailable() && !torchrt.OneDNNEnabled()}
	o.First = run(tp)
	if o.First.OK() {
		return o
	}
	failed := o.First.Failed()
	if !o.First.OneDNN {
		o.Err = brokenError(failed, false)
		return o
	}
	if keepOneDNN {
		o.Forced = true
		warn("libtorch's oneDNN computes wrong on this CPU and is kept on ("+Env+"=on): results may be wrong",
			"op", failed[0].String(), "wrong_ops", len(failed), "library", OneDNNLibrary())
		return o
	}
	torchrt.SetOneDNNEnabled(false)
	fb := run(tp)
	o.Fallback = &fb
	if !fb.OK() {
		o.Err = brokenError(fb.Failed(), true)
		return o
	}
	warn("libtorch's oneDNN computes wrong on this CPU; oneDNN is switched off for this process (slower, correct)",
		"op", failed[0].String(), "wrong_ops", len(failed), "library", OneDNNLibrary(),
		"fix", "use oneDNN >= 3.12 ('make setup' installs it into the build root); 'diad doctor' shows the details")
	return o
}

func brokenError(failed []Result, afterFallback bool) error {
	var b strings.Builder
	b.WriteString("kernel self-check: libtorch computes wrong on this CPU")
	if afterFallback {
		b.WriteString(" with and without oneDNN")
	}
	b.WriteString(": ")
	for i, r := range failed {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(r.String())
	}
	b.WriteString(" (run 'diad doctor' and report its output)")
	return fmt.Errorf("%s", b.String())
}

// buildOneDNN finds oneDNN's version in libtorch's build report.
var buildOneDNN = regexp.MustCompile(`MKL-DNN v(\d+\.\d+(?:\.\d+)?)`)

// OneDNNLibrary names the oneDNN library this process loaded: version and file.
func OneDNNLibrary() string {
	v := torchrt.OneDNNVersion()
	if v == "" {
		// A libtorch with oneDNN linked in statically (pytorch.org's)
		// exports no dnnl_version; its build report names the version.
		if m := buildOneDNN.FindStringSubmatch(torchrt.BuildConfig()); m != nil {
			return "oneDNN " + m[1] + " (built into libtorch)"
		}
		return "oneDNN (not loaded)"
	}
	if p := torchrt.LoadedLibrary("libdnnl"); p != "" {
		return "oneDNN " + v + " (" + p + ")"
	}
	return "oneDNN " + v
}
