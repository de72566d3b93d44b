package torchrt

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"regexp"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
)

// Error is a libtorch (or gotch) failure caught at the boundary, Do.
type Error struct {
	// Message is what gotch would have logged before exiting.
	Message string
}

func (e *Error) Error() string { return "libtorch: " + e.Message }

// Why a log trap: gotch v0.9.1's Must* operations (and MustSize, MustOfSlice,
// Copy_ ...) end in log.Fatal(err), which exits the process before any
// recover() runs, so one bad checkpoint or an out-of-memory would end a
// server with every user's work. Rewriting thousands of tensor calls in
// their error-returning form would bury the model code; instead the standard
// logger's output is wrapped: a message written from inside log.Fatal*
// becomes a panic carrying *Error, which unwinds through gotch (log.Output
// releases its lock in a defer) to the nearest Do. Every other log line is
// written as before.

var (
	trapOnce sync.Once
	trapOut  io.Writer = os.Stderr
)

// installTrap wraps the standard logger's output once per process.
func installTrap() {
	trapOnce.Do(func() {
		log.SetOutput(fatalTrap{})
	})
}

func init() { installTrap() }

type fatalTrap struct{}

func (fatalTrap) Write(p []byte) (int, error) {
	if inFatal() {
		// The error carries libtorch's message alone; the full text (C++
		// frames, gotch's Go stack) is logged only on request.
		if os.Getenv(TraceEnv) != "" {
			fmt.Fprintf(trapOut, "diad: libtorch error (recovered): %s", p)
		}
		panic(&Error{Message: cleanMessage(string(p))})
	}
	return trapOut.Write(p)
}

// TraceEnv, when set, logs libtorch errors' C++ frames and Go stacks.
const TraceEnv = "DIAD_TORCH_TRACE"

var logPrefix = regexp.MustCompile(`^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d(\.\d+)? `)

// cleanMessage keeps libtorch's message from what gotch logs: no log date,
// no "frame #" lines, no Go stack, no "Exception raised from" trailer.
func cleanMessage(s string) string {
	s = logPrefix.ReplaceAllString(strings.TrimSpace(s), "")
	for _, cut := range []string{"\nframe #", "\nException raised from", "\ngoroutine ", "\nruntime/debug.Stack"} {
		if i := strings.Index(s, cut); i >= 0 {
			s = s[:i]
		}
	}
	return strings.Join(strings.Fields(s), " ")
}

// inFatal reports whether the caller's stack goes through log.Fatal,
// log.Fatalf, log.Fatalln or a *log.Logger's Fatal methods.
func inFatal() bool {
	pcs := make([]uintptr, 16)
	n := runtime.Callers(3, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		if strings.HasPrefix(f.Function, "log.") && strings.Contains(f.Function, "Fatal") {
			return true
		}
		if !more {
			return false
		}
	}
}

// Do runs f on a pinned OS thread (libtorch's grad mode and thread-locals
// stay with it) and turns a panic inside it into an error: *Error for a
// libtorch failure (with libtorch's message), otherwise an error naming the
// panic (its stack goes to stderr), so that a bug in one request fails that request, not
// the process. It is the one place diad recovers from tensor code.
func Do(f func() error) (err error) {
	defer Pin()()
	defer func() {
		if r := recover(); r != nil {
			err = asError(r)
		}
	}()
	return f()
}

func asError(r any) error {
	var te *Error
	if e, ok := r.(error); ok && errors.As(e, &te) {
		return te
	}
	// The stack goes to the log, not into the error a client may see.
	fmt.Fprintf(trapOut, "diad: recovered panic: %v\n%s", r, debug.Stack())
	if e, ok := r.(error); ok {
		return fmt.Errorf("internal error: %w", e)
	}
	return fmt.Errorf("internal error: %v", r)
}

// Check panics with err inside a Do (for error-returning gotch calls whose
// caller has no error result of its own); nil does nothing.
func Check(err error) {
	if err != nil {
		panic(&Error{Message: err.Error()})
	}
}

// Recover is Do's recovery for a function that already pins its thread and
// has a named error result: `defer torchrt.Recover(&err, "save x")` turns a
// panic into an error prefixed with what.
func Recover(err *error, what string) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%s: %w", what, asError(r))
	}
}
