package results

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/diad-project/diad/shared"
)

// HistoryFile is a run's label history: every change of an analyst label,
// appended by SetLabels.
const HistoryFile = "label_history.parquet"

// Label actions, as the history records them (the wire's names).
const (
	ActionSet  = shared.LabelActionSet
	ActionBulk = shared.LabelActionBulk
	ActionUndo = shared.LabelActionUndo
)

// ValidAction reports whether a is a label action.
func ValidAction(a string) bool { return a == ActionSet || a == ActionBulk || a == ActionUndo }

// LabelChange is one change of an image's analyst label: who changed what,
// when, and from what.
type LabelChange struct {
	RunID       string    `parquet:"run_id,dict" json:"run_id"`
	ImageID     int64     `parquet:"image_id" json:"image_id"`
	Time        time.Time `parquet:"time,timestamp(millisecond)" json:"time"`
	User        string    `parquet:"user,dict" json:"user"`
	Action      string    `parquet:"action,dict" json:"action"`
	FromVerdict string    `parquet:"from_verdict,dict" json:"from_verdict"`
	ToVerdict   string    `parquet:"to_verdict,dict" json:"to_verdict"`
	FromNote    string    `parquet:"from_note" json:"from_note"`
	ToNote      string    `parquet:"to_note" json:"to_note"`
}

// LabelHistory reads a run's label history, oldest first (none for a run
// nobody labelled).
func (s Store) LabelHistory(id string) ([]LabelChange, error) {
	if err := s.checkRun(id); err != nil {
		return nil, err
	}
	unlock := s.rlockRun(id)
	defer unlock()
	return s.history(id)
}

// history reads the history file (the caller holds the run's lock).
func (s Store) history(id string) ([]LabelChange, error) {
	if _, err := os.Stat(filepath.Join(s.Dir(id), HistoryFile)); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	return readRows[LabelChange](s, id, HistoryFile)
}

// appendHistory adds changes to the run's history file and records its
// checksum (the caller holds the run's write lock).
func (s Store) appendHistory(id string, changes []LabelChange) error {
	if len(changes) == 0 {
		return nil
	}
	old, err := s.history(id)
	if err != nil {
		return fmt.Errorf("results: label history of run %s: %w", id, err)
	}
	return replaceRows(s, id, HistoryFile, append(old, changes...))
}

// historyColumns are the CSV export's columns of the label history.
var historyColumns = []string{"run_id", "image_id", "time", "user", "action", "from_verdict", "to_verdict", "from_note", "to_note"}

// ExportHistory writes a run's label history as CSV, JSON lines or Parquet.
func ExportHistory(w io.Writer, rows []LabelChange, format string) error {
	switch format {
	case FormatParquet:
		return exportParquet(w, rows)
	case FormatJSON:
		return exportJSONLines(w, rows)
	case FormatCSV:
		cw := csv.NewWriter(w)
		if err := cw.Write(historyColumns); err != nil {
			return fmt.Errorf("export: %w", err)
		}
		for _, r := range rows {
			if err := cw.Write([]string{r.RunID, strconv.FormatInt(r.ImageID, 10), formatTime(r.Time), r.User, r.Action,
				r.FromVerdict, r.ToVerdict, r.FromNote, r.ToNote}); err != nil {
				return fmt.Errorf("export: %w", err)
			}
		}
		cw.Flush()
		return cw.Error()
	}
	return fmt.Errorf("export: unknown format %q (want csv, json or parquet)", format)
}
