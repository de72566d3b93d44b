package torchrt

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime/debug"
	"strings"

	"github.com/sugarme/gotch"
)

// Error is a libtorch (or gotch) failure caught at the boundary, Do.
type Error struct {
	// Message is what gotch would have logged before exiting.
	Message string
}

func (e *Error) Error() string { return "libtorch: " + e.Message }

// Why a boundary: gotch's Must* operations (and MustSize, MustOfSlice,
// Copy_ ...) fail by panicking with *gotch.FatalError - in the patched gotch
// under third_party/gotch; upstream calls log.Fatal, which exits the process
// - so that one bad checkpoint or an out-of-memory fails a request, not a
// server with every user's work. Do recovers the panic into *Error.

// logOut receives the stacks of recovered panics that are not libtorch's.
var logOut io.Writer = os.Stderr

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
	var fe *gotch.FatalError
	if e, ok := r.(error); ok {
		switch {
		case errors.As(e, &te):
			return te
		case errors.As(e, &fe):
			// The error carries libtorch's message alone; the full text
			// (C++ frames, gotch's Go stack) is logged only on request.
			if os.Getenv(TraceEnv) != "" {
				fmt.Fprintf(logOut, "diad: libtorch error (recovered): %s\n", fe.Error())
			}
			return &Error{Message: cleanMessage(fe.Error())}
		}
	}
	// The stack goes to the log, not into the error a client may see.
	fmt.Fprintf(logOut, "diad: recovered panic: %v\n%s", r, debug.Stack())
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
