package ts

import (
// "runtime/debug"
)

func init() {
	// debug.SetMemoryLimit()
	// debug.SetGCPercent(100) // ratio freshly allocated data to live data remaining after previous collection.
}
