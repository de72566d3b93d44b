package libtch

import (
	"errors"
	"fmt"
)

// FatalError is what upstream gotch passes to log.Fatal, which exits the
// process: here the operation panics with it instead, so that the caller can
// recover (diad turns it into an error at its boundary). Err is the original
// error when there was one.
type FatalError struct {
	Msg string
	Err error
}

func (e *FatalError) Error() string { return e.Msg }

// Unwrap gives the original error.
func (e *FatalError) Unwrap() error { return e.Err }

// Fatal builds the panic value of a log.Fatal(v...) call.
func Fatal(v ...any) *FatalError {
	e := &FatalError{Msg: fmt.Sprint(v...)}
	if len(v) == 1 {
		if err, ok := v[0].(error); ok {
			e.Err = err
		}
	}
	return e
}

// Fatalf builds the panic value of a log.Fatalf(format, v...) call.
func Fatalf(format string, v ...any) *FatalError {
	err := fmt.Errorf(format, v...)
	return &FatalError{Msg: err.Error(), Err: errors.Unwrap(err)}
}
