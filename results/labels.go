package results

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/diad-project/diad/backend/atomicfile"
)

// Label is an analyst's verdict on one image.
type Label struct {
	ImageID int64  `json:"image_id"`
	Verdict string `json:"verdict"` // normal, anomalous, unsure, or "" to clear
	Note    string `json:"note"`
	User    string `json:"user"`
}

// ValidVerdict reports whether v is a verdict analysts may set.
func ValidVerdict(v string) bool {
	switch v {
	case VerdictNone, VerdictNormal, VerdictAnomalous, VerdictUnsure:
		return true
	}
	return false
}

// runLocks serialises writers of one run inside this process, and keeps
// readers out while one writes (a label edit replaces images.parquet, then
// records its checksum: a read in between saw a file its record did not
// match - the live HTTP fuzz found it); the file lock below does the same
// across processes.
var runLocks sync.Map

func runMutex(dir string) *sync.RWMutex {
	mu, _ := runLocks.LoadOrStore(dir, &sync.RWMutex{})
	return mu.(*sync.RWMutex)
}

func (s Store) lockRun(id string) (unlock func(), err error) {
	mu := runMutex(s.Dir(id))
	mu.Lock()
	f, err := os.OpenFile(filepath.Join(s.Dir(id), ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		mu.Unlock()
		return nil, fmt.Errorf("results: lock run %s: %w", id, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		mu.Unlock()
		return nil, fmt.Errorf("results: lock run %s: %w", id, err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
		mu.Unlock()
	}, nil
}

// rlockRun takes a run's lock for reading: shared with other readers. The
// file lock is taken when a writer has made the lock file; a run that was
// never edited (or a read-only folder) has none, and its files do not change.
func (s Store) rlockRun(id string) (unlock func()) {
	mu := runMutex(s.Dir(id))
	mu.RLock()
	f, err := os.Open(filepath.Join(s.Dir(id), ".lock"))
	if err != nil {
		return mu.RUnlock
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
		f.Close()
		return mu.RUnlock
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
		mu.RUnlock()
	}
}

// ErrNoImage is returned for a label of an image the run does not have.
var ErrNoImage = errors.New("no such image")

// SetLabels applies analyst verdicts to a run's images.parquet: read, modify,
// write a temporary file, rename. Concurrent calls (goroutines or processes)
// are serialised, so no edit is lost. Every label that changes a verdict or
// a note is appended to the run's label history as action (ActionSet,
// ActionBulk or ActionUndo) first: a failure in between leaves a history
// entry of an edit that did not land, never an edit without its entry. It
// returns the updated rows.
func (s Store) SetLabels(id string, labels []Label, action string, now time.Time) ([]ImageRow, error) {
	if !ValidAction(action) {
		return nil, fmt.Errorf("results: label action %q (want %s, %s or %s)", action, ActionSet, ActionBulk, ActionUndo)
	}
	for _, l := range labels {
		if !ValidVerdict(l.Verdict) {
			return nil, fmt.Errorf("results: verdict %q (want normal, anomalous, unsure or empty)", l.Verdict)
		}
	}
	rows, unlock, err := s.lockedImages(id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	byID := map[int64]int{}
	for i, r := range rows {
		byID[r.ImageID] = i
	}
	// The file keeps milliseconds: answer with what a later read returns.
	at := now.UTC().Truncate(time.Millisecond)
	var updated []ImageRow
	var changes []LabelChange
	for _, l := range labels {
		i, ok := byID[l.ImageID]
		if !ok {
			return nil, fmt.Errorf("results: run %s has %w %d", id, ErrNoImage, l.ImageID)
		}
		r := &rows[i]
		if r.AnalystLabel != l.Verdict || r.AnalystNote != l.Note {
			changes = append(changes, LabelChange{RunID: id, ImageID: l.ImageID, Time: at, User: l.User, Action: action,
				FromVerdict: r.AnalystLabel, ToVerdict: l.Verdict, FromNote: r.AnalystNote, ToNote: l.Note})
		}
		r.AnalystLabel, r.AnalystNote, r.AnalystUser, r.AnalystTime = l.Verdict, l.Note, l.User, at
		updated = append(updated, *r)
	}
	if err := s.appendHistory(id, changes); err != nil {
		return nil, err
	}
	if err := replaceRows(s, id, ImagesFile, rows); err != nil {
		return nil, err
	}
	return updated, nil
}

// ErrNoCategory is returned for a threshold of a category the run does not have.
var ErrNoCategory = errors.New("no such category")

// SetThreshold re-labels every image of a run with a new decision
// threshold (its category's, for a category t names).
func (s Store) SetThreshold(id string, t ThresholdInfo) error {
	rows, unlock, err := s.lockedImages(id)
	if err != nil {
		return err
	}
	defer unlock()
	if len(t.PerCategory) > 0 {
		have := map[string]bool{}
		for _, r := range rows {
			have[r.Category] = true
		}
		for _, c := range slices.Sorted(maps.Keys(t.PerCategory)) {
			if !have[c] {
				return fmt.Errorf("results: run %s has %w %q", id, ErrNoCategory, c)
			}
		}
	}
	ApplyThreshold(rows, t)
	if err := replaceRows(s, id, ImagesFile, rows); err != nil {
		return err
	}
	return s.updateMeta(id, func(m *RunMeta) { m.Threshold = t })
}

// lockedImages takes a run's write lock and reads its image rows; the
// caller edits them, writes them back (replaceRows) and unlocks.
func (s Store) lockedImages(id string) ([]ImageRow, func(), error) {
	if err := s.checkRun(id); err != nil {
		return nil, nil, err
	}
	unlock, err := s.lockRun(id)
	if err != nil {
		return nil, nil, err
	}
	rows, err := readRows[ImageRow](s, id, ImagesFile)
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return rows, unlock, nil
}

// updateMeta changes a run's run.json (the caller holds the run's lock).
func (s Store) updateMeta(id string, change func(*RunMeta)) error {
	meta, err := s.Meta(id)
	if err != nil {
		return err
	}
	change(&meta)
	return s.writeMeta(meta)
}

// replaceRows rewrites one of a run's Parquet files and records its new
// checksum (the caller holds the run's lock).
func replaceRows[T any](s Store, id, name string, rows []T) error {
	path := filepath.Join(s.Dir(id), name)
	err := atomicfile.Write(path, func(w io.Writer) error {
		pw := parquet.NewGenericWriter[T](w, writeOpts()...)
		if _, err := pw.Write(rows); err != nil {
			return err
		}
		return pw.Close()
	})
	if err != nil {
		return err
	}
	return s.recordSum(id, name)
}

// recordSum records the SHA-256 of a run's file name in its run.json (the
// caller holds the run's lock).
func (s Store) recordSum(id, name string) error {
	meta, err := s.Meta(id)
	if err != nil {
		return err
	}
	if meta.Files == nil {
		return nil // a run from before checksums stays without them
	}
	sum, err := fileSum(filepath.Join(s.Dir(id), name))
	if err != nil {
		return err
	}
	meta.Files[name] = sum
	return s.writeMeta(meta)
}

// Relocate moves a run's image paths from its dataset root to root (the
// same files in another place, e.g. a dataset generated again from its
// seed), keeping every label; run.json records the new root. Paths outside
// the old root are an error and change nothing.
func (s Store) Relocate(id, root string) error {
	rows, unlock, err := s.lockedImages(id)
	if err != nil {
		return err
	}
	defer unlock()
	meta, err := s.Meta(id)
	if err != nil {
		return err
	}
	for i := range rows {
		rel, err := filepath.Rel(meta.Dataset.Root, rows[i].Path)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return fmt.Errorf("results: run %s: image %s is outside its dataset %s", id, rows[i].Path, meta.Dataset.Root)
		}
		rows[i].Path = filepath.Join(root, rel)
	}
	if err := replaceRows(s, id, ImagesFile, rows); err != nil {
		return err
	}
	return s.updateMeta(id, func(m *RunMeta) { m.Dataset.Root = root })
}
