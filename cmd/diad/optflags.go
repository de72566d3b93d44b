package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/pflag"
)

// Optional flags: a flag that is not given leaves its pointer nil, so "unset"
// and "set to zero" differ (--eta 0 overrides a model's eta; no --eta keeps it).

type optInt struct{ p **int }

func (o optInt) String() string {
	if o.p == nil || *o.p == nil {
		return ""
	}
	return strconv.Itoa(**o.p)
}
func (o optInt) Set(s string) error {
	v, err := strconv.Atoi(s)
	if err != nil {
		return fmt.Errorf("want a whole number, got %q", s)
	}
	*o.p = &v
	return nil
}
func (optInt) Type() string { return "int" }

type optFloat struct{ p **float64 }

func (o optFloat) String() string {
	if o.p == nil || *o.p == nil {
		return ""
	}
	return strconv.FormatFloat(**o.p, 'g', -1, 64)
}
func (o optFloat) Set(s string) error {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("want a number, got %q", s)
	}
	*o.p = &v
	return nil
}
func (optFloat) Type() string { return "float" }

type optString struct{ p **string }

func (o optString) String() string {
	if o.p == nil || *o.p == nil {
		return ""
	}
	return **o.p
}
func (o optString) Set(s string) error {
	*o.p = &s
	return nil
}
func (optString) Type() string { return "string" }

var (
	_ pflag.Value = optInt{}
	_ pflag.Value = optFloat{}
	_ pflag.Value = optString{}
)
