package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/pflag"
)

// optFlag is a flag that leaves its pointer nil when not given, so "unset"
// and "set to zero" differ (--eta 0 overrides a model's eta; no --eta keeps it).
type optFlag[T any] struct {
	p     **T
	parse func(string) (T, error)
	typ   string
}

func (o optFlag[T]) String() string {
	if o.p == nil || *o.p == nil {
		return ""
	}
	return fmt.Sprint(**o.p)
}

func (o optFlag[T]) Set(s string) error {
	v, err := o.parse(s)
	if err != nil {
		return fmt.Errorf("want a %s, got %q", o.typ, s)
	}
	*o.p = &v
	return nil
}

func (o optFlag[T]) Type() string { return o.typ }

func optInt(p **int) pflag.Value {
	return optFlag[int]{p: p, parse: strconv.Atoi, typ: "int"}
}

func optFloat(p **float64) pflag.Value {
	return optFlag[float64]{p: p, parse: func(s string) (float64, error) { return strconv.ParseFloat(s, 64) }, typ: "float"}
}

func optString(p **string) pflag.Value {
	return optFlag[string]{p: p, parse: func(s string) (string, error) { return s, nil }, typ: "string"}
}
