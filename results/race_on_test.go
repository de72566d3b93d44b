//go:build race

package results

// raceDetector: under -race, checkptr turns parquet-go's nil unsafe.Slice on
// some damaged files into a fatal error that no recover() sees; the
// corruption sweep without checksums runs only in normal builds.
const raceDetector = true
