package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/sugarme/gotch"
	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/cpuinfo"
	"github.com/diad-project/diad/backend/torchrt"
)

// cpuPeak estimates the float32 peak of n cores of this machine from
// /proc/cpuinfo (see peakFromCPUInfo).
func cpuPeak(n int) (gflops float64, how string, err error) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0, "", fmt.Errorf("cpu peak: %w", err)
	}
	gflops, how, err = peakFromCPUInfo(f, n)
	return gflops, how, errors.Join(err, f.Close())
}

// amdZen4Family is the cpu family /proc/cpuinfo gives AMD's Zen 3 and Zen 4
// (0x19): Zen 4 runs AVX-512 on its two 256-bit FMA pipes, so its
// float32 peak per cycle is AVX2's, not that of a 512-bit datapath.
const amdZen4Family = 25

// peakFromCPUInfo estimates the float32 peak of n cores from a
// /proc/cpuinfo text: the clock it reports times the FLOPs per cycle of the
// widest fused multiply-add (two FMA pipes: 512-bit 64, 256-bit 32, AVX
// without FMA 16, else 8 per core). It is the usual back-of-envelope peak,
// not a measurement: turbo clocks, one-pipe AVX-512 parts and shared cores
// change it.
func peakFromCPUInfo(r io.Reader, n int) (gflops float64, how string, err error) {
	cpu, err := cpuinfo.Parse(r)
	if err != nil {
		return 0, "", fmt.Errorf("cpu peak: %w", err)
	}
	mhz, model, vendor, family := cpu.MHz, cpu.ModelName, cpu.Vendor, cpu.Family
	flags := map[string]bool{}
	for _, f := range cpu.Flags {
		flags[f] = true
	}
	if mhz <= 0 {
		return 0, "", fmt.Errorf("cpu peak: /proc/cpuinfo gives no clock")
	}
	perCycle, isa := 8.0, "SSE"
	switch {
	case flags["avx512f"] && vendor == "AuthenticAMD" && family <= amdZen4Family:
		perCycle, isa = 32, "AVX-512 on 256-bit pipes (AMD Zen 4)"
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

// matmulSide is the side of the square float32 matmul whose rate is the
// measured reference for the estimated peak: large enough that BLAS runs
// near its best, small enough to take well under a second.
const matmulSide = 2048

// matmulRate measures the GFLOP/s of libtorch's float32 matmul of two
// matmulSide squares on this process's threads (the best of five, after one
// warm-up): what the machine's best-tuned kernel reaches, a check on the
// estimated peak (virtual machines report the base clock, and cores boost
// above it). BLAS runs on one thread inside diad (torchrt), so for this
// product it gets all of diad's threads.
func matmulRate() (gflops float64, err error) {
	if torchrt.SetBLASThreads(torchrt.Threads()) {
		defer torchrt.ResetBLASThreads()
	}
	err = torchrt.Do(func() error {
		a := ts.MustRandn([]int64{matmulSide, matmulSide}, gotch.Float, gotch.CPU)
		defer a.MustDrop()
		b := ts.MustRandn([]int64{matmulSide, matmulSide}, gotch.Float, gotch.CPU)
		defer b.MustDrop()
		best := math.Inf(1)
		for i := 0; i < 6; i++ {
			start := time.Now()
			c := a.MustMm(b, false)
			took := time.Since(start).Seconds()
			c.MustDrop()
			if i > 0 {
				best = min(best, took)
			}
		}
		gflops = 2 * math.Pow(matmulSide, 3) / best / 1e9
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("matmul rate: %w", err)
	}
	return gflops, nil
}
