package gotch

import lib "github.com/sugarme/gotch/libtch"

// FatalError is what upstream gotch passes to log.Fatal, which exits the
// process: here the operation panics with it instead (see libtch.FatalError).
type FatalError = lib.FatalError

// Fatal builds the panic value of a log.Fatal(v...) call.
func Fatal(v ...any) *FatalError { return lib.Fatal(v...) }

// Fatalf builds the panic value of a log.Fatalf(format, v...) call.
func Fatalf(format string, v ...any) *FatalError { return lib.Fatalf(format, v...) }
