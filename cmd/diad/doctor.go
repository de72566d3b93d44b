package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/diad-project/diad/backend/cpuinfo"
	"github.com/diad-project/diad/backend/kernelcheck"
	"github.com/diad-project/diad/backend/torchrt"
	"github.com/diad-project/diad/backend/version"
)

// doctorReport is what `diad doctor` finds: the machine, the libraries that
// compute, and the kernel self-check.
type doctorReport struct {
	Diad       string              `json:"diad"`
	CPU        string              `json:"cpu"`
	CPUFlags   []string            `json:"cpu_flags"`
	Libtorch   string              `json:"libtorch"`
	ATenCPU    string              `json:"aten_cpu_capability"`
	OneDNN     string              `json:"onednn"`
	OneDNNOn   bool                `json:"onednn_on"`
	BLAS       string              `json:"blas"`
	OpenMP     string              `json:"openmp"`
	Malloc     string              `json:"malloc"`
	Threads    int                 `json:"threads"`
	ThreadEnv  []string            `json:"thread_env"`
	Devices    []string            `json:"devices"`
	Check      kernelcheck.Report  `json:"check"`
	Fallback   *kernelcheck.Report `json:"fallback,omitempty"`
	CheckError string              `json:"check_error,omitempty"`
	Forced     bool                `json:"onednn_forced_on,omitempty"`
	OK         bool                `json:"ok"`
}

// errDoctor makes the exit status non-zero once the report is printed.
var errDoctor = errors.New("doctor: a check failed (see above)")

func newDoctorCmd() *cobra.Command {
	var asJSON, verbose bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Describe this machine's CPU, libtorch, oneDNN, BLAS and threads, and check that its kernels compute right",
		Long: `doctor prints what decides whether diad computes right and how fast on this
machine - the CPU (model, family, the instruction-set flags kernels dispatch
on), libtorch, oneDNN, the BLAS and OpenMP libraries as loaded, thread settings
and devices - and runs the numerical self-check that every training and
scoring process runs before its first model: small convolutions, a
transposed convolution, group norm, attention and a matrix product, forward
and backward, compared with a float64 reference.

It exits non-zero when a check fails: when oneDNN computes wrong here (diad
then switches it off per process and works, slower) or when the kernels are
wrong even without it (diad refuses to train or score).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			r := diagnose()
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(r); err != nil {
					return err
				}
			} else {
				printDoctor(out, r, verbose)
			}
			if !r.OK {
				return errDoctor
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "also print every self-check case and libtorch's build configuration")
	return cmd
}

func diagnose() doctorReport {
	info := version.Read()
	r := doctorReport{
		Diad:     info.Diad,
		Libtorch: torchrt.LibtorchVersion(),
		ATenCPU:  torchrt.CPUCapability(),
		OneDNN:   kernelcheck.OneDNNLibrary(),
		BLAS:     blasLibrary(),
		OpenMP:   torchrt.LoadedLibrary("libgomp"),
		Malloc:   torchrt.MallocSetting(),
		Devices:  torchrt.Devices(),
	}
	if cpu, err := cpuinfo.Read(); err != nil {
		r.CPU = err.Error()
	} else {
		r.CPU = cpu.String()
		r.CPUFlags = cpu.Present(cpuinfo.KernelFlags)
	}
	for _, v := range []string{"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", kernelcheck.Env, torchrt.MallocEnv, "GOMAXPROCS"} {
		if val, ok := os.LookupEnv(v); ok {
			r.ThreadEnv = append(r.ThreadEnv, v+"="+val)
		}
	}
	o, err := kernelcheck.Ensure()
	r.Check, r.Fallback, r.Forced = o.First, o.Fallback, o.Forced
	r.OneDNNOn = torchrt.OneDNNEnabled()
	r.Threads = torchrt.Threads()
	if err != nil {
		r.CheckError = err.Error()
	}
	r.OK = err == nil && o.First.OK()
	return r
}

// blasLibrary names the BLAS libtorch's matrix products call, as loaded.
func blasLibrary() string {
	path := torchrt.LoadedLibrary("libopenblas")
	if path == "" {
		path = torchrt.LoadedLibrary("libblas")
	}
	if ob := torchrt.OpenBLAS(); ob != "" {
		return ob + " (" + path + ")"
	}
	if path == "" {
		return "none loaded"
	}
	return path
}

func printDoctor(w io.Writer, r doctorReport, verbose bool) {
	line := func(k, format string, args ...any) { fmt.Fprintf(w, "%-11s %s\n", k, fmt.Sprintf(format, args...)) }
	line("diad", "%s", r.Diad)
	line("cpu", "%s", r.CPU)
	line("cpu flags", "%s", strings.Join(r.CPUFlags, " "))
	line("libtorch", "%s (ATen CPU kernels: %s)", r.Libtorch, r.ATenCPU)
	state := "on"
	if !r.OneDNNOn {
		state = "off"
	}
	line("oneDNN", "%s, %s", r.OneDNN, state)
	line("BLAS", "%s", r.BLAS)
	line("OpenMP", "%s", r.OpenMP)
	line("malloc", "%s", r.Malloc)
	env := "none set"
	if len(r.ThreadEnv) > 0 {
		env = strings.Join(r.ThreadEnv, " ")
	}
	line("threads", "%d intra-op; environment: %s", r.Threads, env)
	line("devices", "%s", strings.Join(r.Devices, ", "))
	printCheck := func(name string, rep kernelcheck.Report) {
		kernels := "with oneDNN"
		if !rep.OneDNN {
			kernels = "without oneDNN"
		}
		failed := rep.Failed()
		line(name, "%d of %d operations right %s (%d threads, %.0f ms)", len(rep.Results)-len(failed), len(rep.Results), kernels, rep.Threads, rep.Elapsed.Seconds()*1000)
		for _, res := range rep.Results {
			if verbose || !res.OK() {
				mark := "ok  "
				if !res.OK() {
					mark = "FAIL"
				}
				fmt.Fprintf(w, "  %s %s\n", mark, res)
			}
		}
	}
	printCheck("self-check", r.Check)
	if r.Fallback != nil {
		printCheck("fallback", *r.Fallback)
	}
	switch {
	case r.CheckError != "":
		line("verdict", "FAIL: %s", r.CheckError)
	case r.Forced:
		line("verdict", "FAIL: oneDNN computes wrong on this CPU and is kept on (%s=on): results may be wrong", kernelcheck.Env)
	case r.Fallback != nil:
		line("verdict", "FAIL: oneDNN computes wrong on this CPU; diad switches it off in every process (correct, slower). Fix: oneDNN >= 3.12 ('make setup' installs it into the build root)")
	case !r.OK:
		line("verdict", "FAIL")
	default:
		line("verdict", "ok")
	}
	if verbose {
		fmt.Fprintf(w, "\nlibtorch build configuration:\n%s\n\n%s\n", torchrt.BuildConfig(), torchrt.ParallelInfo())
	}
}
