package torchrt

import (
	"fmt"
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
// It fails where the kernel does not offer it; the peak then still counts
// from the process's start.
func ResetPeakRSS() error {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		return fmt.Errorf("reset peak RSS: %w", err)
	}
	return nil
}

func procStatus(key string) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key); ok {
			if f := strings.Fields(v); len(f) > 0 {
				kb, err := strconv.ParseFloat(f[0], 64)
				if err != nil {
					return -1
				}
				return kb / 1024
			}
		}
	}
	return -1
}
