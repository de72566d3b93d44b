package results

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"
)

// Export formats.
const (
	FormatCSV     = "csv"
	FormatJSON    = "json" // JSON lines
	FormatParquet = "parquet"
)

var imageColumns = []string{"run_id", "image_id", "category", "path", "split", "gt_label", "defect", "score", "step_scores",
	"threshold", "predicted_label", "analyst_label", "analyst_note", "analyst_user", "analyst_time", "created_at"}

func formatFloat(v float64) string {
	if math.IsNaN(v) {
		return ""
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

// ExportImages writes image rows as CSV (header + one line per image), JSON
// lines or Parquet (the schema of the run's images.parquet).
func ExportImages(w io.Writer, rows []ImageRow, format string) error {
	switch format {
	case FormatParquet:
		return exportParquet(w, rows)
	case FormatJSON:
		return exportJSONLines(w, rows)
	case FormatCSV:
		cw := csv.NewWriter(w)
		cw.Write(imageColumns)
		for _, r := range rows {
			steps := make([]string, len(r.StepScores))
			for i, s := range r.StepScores {
				steps[i] = formatFloat(s)
			}
			cw.Write([]string{r.RunID, strconv.FormatInt(r.ImageID, 10), r.Category, r.Path, r.Split,
				strconv.Itoa(int(r.GroundTruth)), r.Defect, formatFloat(r.Score), strings.Join(steps, ";"),
				formatFloat(r.Threshold), strconv.Itoa(int(r.Predicted)), r.AnalystLabel, r.AnalystNote, r.AnalystUser,
				formatTime(r.AnalystTime), formatTime(r.CreatedAt)})
		}
		cw.Flush()
		return cw.Error()
	}
	return fmt.Errorf("export: unknown format %q (want csv, json or parquet)", format)
}

// ExportMetrics writes metric rows as CSV or JSON lines (undefined values empty/null).
func ExportMetrics(w io.Writer, rows []MetricRow, format string) error {
	switch format {
	case FormatJSON:
		enc := json.NewEncoder(w)
		for _, r := range rows {
			var v any = r.Value
			if math.IsNaN(r.Value) {
				v = nil
			}
			if err := enc.Encode(map[string]any{"run_id": r.RunID, "category": r.Category, "metric": r.Metric, "value": v, "error": r.Error}); err != nil {
				return fmt.Errorf("export: %w", err)
			}
		}
		return nil
	case FormatCSV:
		cw := csv.NewWriter(w)
		cw.Write([]string{"run_id", "category", "metric", "value", "error"})
		for _, r := range rows {
			cw.Write([]string{r.RunID, r.Category, r.Metric, formatFloat(r.Value), r.Error})
		}
		cw.Flush()
		return cw.Error()
	}
	return fmt.Errorf("export: unknown format %q (want csv or json)", format)
}

// exportParquet writes rows as one Parquet file with the run files' schema
// version.
func exportParquet[T any](w io.Writer, rows []T) error {
	if err := parquet.Write(w, rows, writeOpts()...); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	return nil
}

// exportJSONLines writes rows as JSON, one per line.
func exportJSONLines[T any](w io.Writer, rows []T) error {
	enc := json.NewEncoder(w)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("export: %w", err)
		}
	}
	return nil
}
