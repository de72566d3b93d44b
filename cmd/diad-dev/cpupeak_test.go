package main

import (
	"strings"
	"testing"
)

// cpuInfo is two cores of a /proc/cpuinfo with the given identity.
func cpuInfo(vendor, family, mhz, flags string) string {
	core := "processor\t: %d\nvendor_id\t: " + vendor + "\ncpu family\t: " + family +
		"\nmodel name\t: test cpu\ncpu MHz\t\t: " + mhz + "\nflags\t\t: " + flags + "\n\n"
	return strings.ReplaceAll(core, "%d", "0") + strings.ReplaceAll(core, "%d", "1")
}

func TestPeakFromCPUInfo(t *testing.T) {
	for _, c := range []struct {
		name, text string
		cores      int
		want       float64
	}{
		// Zen 4 (family 25) has AVX-512 on 256-bit pipes: AVX2's 32 per cycle.
		{"zen4", cpuInfo("AuthenticAMD", "25", "2596.138", "fpu avx avx2 fma avx512f avx512bw"), 2, 2 * 2.596138 * 32},
		{"zen5", cpuInfo("AuthenticAMD", "26", "2000", "avx avx2 fma avx512f"), 1, 2.0 * 64},
		{"intel avx-512", cpuInfo("GenuineIntel", "6", "3000", "avx avx2 fma avx512f"), 2, 2 * 3.0 * 64},
		{"avx2", cpuInfo("AuthenticAMD", "23", "2445", "avx avx2 fma"), 2, 2 * 2.445 * 32},
		{"avx only", cpuInfo("GenuineIntel", "6", "1000", "sse avx"), 1, 16},
	} {
		got, how, err := peakFromCPUInfo(strings.NewReader(c.text), c.cores)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if d := got - c.want; d > 1e-9 || d < -1e-9 {
			t.Errorf("%s: peak %.3f GFLOP/s (%s), want %.3f", c.name, got, how, c.want)
		}
	}
	for _, bad := range []string{
		"processor\t: 0\nflags\t\t: avx2 fma\n",                    // no clock
		cpuInfo("AuthenticAMD", "twenty-five", "2000", "avx2 fma"), // family not a number
		"processor\t: 0\ncpu MHz\t\t: fast\nflags\t\t: avx2\n",     // clock not a number
	} {
		if _, _, err := peakFromCPUInfo(strings.NewReader(bad), 1); err == nil {
			t.Errorf("no error for\n%s", bad)
		}
	}
}

// The measured reference rate is a real matmul: positive, finite, and of
// the order a CPU reaches (not a division by a zero time).
func TestMatmulRate(t *testing.T) {
	gflops, err := matmulRate()
	if err != nil {
		t.Fatal(err)
	}
	if !(gflops > 0.1 && gflops < 1e5) {
		t.Fatalf("matmul rate %v GFLOP/s", gflops)
	}
	t.Logf("%dx%d float32 matmul: %.1f GFLOP/s", matmulSide, matmulSide, gflops)
}
