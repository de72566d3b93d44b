package main

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// cpuPeak estimates the float32 peak of n cores of this machine from
// /proc/cpuinfo: the clock it reports times the FLOPs per cycle of its
// widest fused multiply-add (two FMA pipes: AVX-512 64, AVX2 with FMA 32,
// AVX 16, else 8 per core). It is the usual back-of-envelope peak, not a
// measurement: turbo clocks, one-pipe AVX-512 parts and shared cores change it.
func cpuPeak(n int) (gflops float64, how string, err error) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0, "", fmt.Errorf("cpu peak: %w", err)
	}
	defer f.Close()
	var mhz float64
	var model string
	flags := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		key, val = strings.TrimSpace(key), strings.TrimSpace(val)
		switch key {
		case "cpu MHz":
			if mhz == 0 {
				if mhz, err = strconv.ParseFloat(val, 64); err != nil {
					return 0, "", fmt.Errorf("cpu peak: cpu MHz %q: %w", val, err)
				}
			}
		case "model name":
			if model == "" {
				model = val
			}
		case "flags":
			if len(flags) == 0 {
				for _, fl := range strings.Fields(val) {
					flags[fl] = true
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, "", fmt.Errorf("cpu peak: %w", err)
	}
	if mhz <= 0 {
		return 0, "", fmt.Errorf("cpu peak: /proc/cpuinfo gives no clock")
	}
	perCycle, isa := 8.0, "SSE"
	switch {
	case flags["avx512f"]:
		perCycle, isa = 64, "AVX-512"
	case flags["avx2"] && flags["fma"]:
		perCycle, isa = 32, "AVX2+FMA"
	case flags["avx"]:
		perCycle, isa = 16, "AVX"
	}
	gflops = float64(n) * mhz / 1000 * perCycle
	return gflops, fmt.Sprintf("%s: %d cores x %.0f MHz x %.0f float32 FLOPs/cycle (%s, 2 FMA pipes)", model, n, mhz, perCycle, isa), nil
}
