package torchrt

import (
	"os"
	"strconv"
	"strings"
)

// RSSMiB is the process's resident set size (VmRSS) in MiB, -1 if unknown.
func RSSMiB() float64 { return procStatus("VmRSS:") }

// PeakRSSMiB is the process's peak resident set size (VmHWM) in MiB.
func PeakRSSMiB() float64 { return procStatus("VmHWM:") }

// ResetPeakRSS restarts the kernel's peak-RSS counter (Linux clear_refs 5),
// so the next PeakRSSMiB covers only what follows; a no-op where not allowed.
func ResetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

func procStatus(key string) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			if f := strings.Fields(v); len(f) > 0 {
				kb, _ := strconv.ParseFloat(f[0], 64)
				return kb / 1024
			}
		}
	}
	return -1
}
