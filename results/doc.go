// Package results stores evaluation runs as Parquet files (one folder per run:
// images, metrics, run metadata, anomaly maps) with atomic, versioned writes.
package results
