// Package cpuinfo reads what a machine's CPU is from /proc/cpuinfo: vendor,
// model, family, the instruction-set flags that decide which kernels a math
// library picks, and the core count. Numbers computed on one CPU are not
// promised on another (a library can be right on Zen 4 and wrong on Zen 5),
// so every figure and every diagnosis names the CPU it came from.
package cpuinfo

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// Info describes the first processor listed (all are the same model on the
// machines diad runs on) and how many are listed.
type Info struct {
	Vendor     string  // vendor_id, e.g. AuthenticAMD, GenuineIntel
	ModelName  string  // model name
	Family     int     // cpu family (-1 when not given)
	Model      int     // model (-1 when not given)
	MHz        float64 // cpu MHz of the first processor (0 when not given)
	Flags      []string
	Processors int // processor entries (logical CPUs)
}

// KernelFlags are the instruction-set flags that decide which kernels
// oneDNN, OpenBLAS and ATen dispatch to, in the order doctor prints them.
var KernelFlags = []string{"avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
	"avx512_bf16", "avx512_fp16", "avx512_vp2intersect", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8"}

// Has reports whether the CPU lists flag.
func (i Info) Has(flag string) bool {
	for _, f := range i.Flags {
		if f == flag {
			return true
		}
	}
	return false
}

// Present lists which of flags the CPU has.
func (i Info) Present(flags []string) []string {
	var out []string
	for _, f := range flags {
		if i.Has(f) {
			out = append(out, f)
		}
	}
	return out
}

// Microarchitecture names AMD's Zen generations from family and model
// (Intel's are too many models to name; "" when unknown).
func (i Info) Microarchitecture() string {
	if i.Vendor != "AuthenticAMD" {
		return ""
	}
	switch i.Family {
	case 0x17:
		if i.Model >= 0x30 {
			return "Zen 2"
		}
		return "Zen / Zen+"
	case 0x19:
		// Zen 4: models 0x10-0x1f (Genoa), 0x60-0x7f (Raphael, Phoenix),
		// 0xa0-0xaf (Bergamo); the rest of family 0x19 is Zen 3.
		if (i.Model >= 0x10 && i.Model <= 0x1f) || (i.Model >= 0x60 && i.Model <= 0x7f) || (i.Model >= 0xa0 && i.Model <= 0xaf) {
			return "Zen 4"
		}
		return "Zen 3"
	case 0x1a:
		return "Zen 5"
	}
	return ""
}

// String is one line: model, family/model (and Zen generation), processors.
func (i Info) String() string {
	s := fmt.Sprintf("%s (%s family %d model %d", i.ModelName, i.Vendor, i.Family, i.Model)
	if m := i.Microarchitecture(); m != "" {
		s += ", " + m
	}
	return s + fmt.Sprintf("), %d logical CPUs", i.Processors)
}

// Read parses this machine's /proc/cpuinfo.
func Read() (Info, error) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return Info{}, fmt.Errorf("cpuinfo: %w", err)
	}
	info, err := Parse(f)
	return info, errors.Join(err, f.Close())
}

// Parse reads a /proc/cpuinfo text. Fields of the first processor are kept;
// a text with no processor entry, or a malformed number, is an error.
func Parse(r io.Reader) (Info, error) {
	info := Info{Family: -1, Model: -1}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	first := func() bool { return info.Processors <= 1 }
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		var err error
		switch key {
		case "processor":
			info.Processors++
		case "vendor_id":
			if first() && info.Vendor == "" {
				info.Vendor = val
			}
		case "model name":
			if first() && info.ModelName == "" {
				info.ModelName = val
			}
		case "cpu family":
			if first() && info.Family < 0 {
				info.Family, err = strconv.Atoi(val)
			}
		case "model":
			if first() && info.Model < 0 {
				info.Model, err = strconv.Atoi(val)
			}
		case "cpu MHz":
			if first() && info.MHz == 0 {
				info.MHz, err = strconv.ParseFloat(val, 64)
			}
		case "flags":
			if first() && info.Flags == nil {
				info.Flags = strings.Fields(val)
			}
		}
		if err != nil {
			return Info{}, fmt.Errorf("cpuinfo: %s %q: %w", key, val, err)
		}
	}
	if err := sc.Err(); err != nil {
		return Info{}, fmt.Errorf("cpuinfo: %w", err)
	}
	if info.Processors == 0 {
		return Info{}, errors.New("cpuinfo: no processor entry")
	}
	return info, nil
}
