package results

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/parquet-go/parquet-go"
)

// Every label change is in the history: who, when, from what to what, and
// by which action; a bulk action and its undo are two sets of entries, and
// a label saved again unchanged adds none.
func TestLabelHistoryRecordsEveryChange(t *testing.T) {
	s := Store{Root: t.TempDir()}
	run := sampleRun(t)
	if err := s.Write(run); err != nil {
		t.Fatal(err)
	}
	id := run.Meta.RunID
	if h, err := s.LabelHistory(id); err != nil || len(h) != 0 {
		t.Fatalf("history of a fresh run: %v %v", h, err)
	}
	t0 := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	if _, err := s.SetLabels(id, []Label{{ImageID: 1, Verdict: VerdictUnsure, Note: "look again", User: "ana"}}, ActionSet, t0); err != nil {
		t.Fatal(err)
	}
	bulk := []Label{{ImageID: 0, Verdict: VerdictNormal, User: "bo"}, {ImageID: 1, Verdict: VerdictNormal, User: "bo"}, {ImageID: 2, Verdict: VerdictNormal, User: "bo"}}
	if _, err := s.SetLabels(id, bulk, ActionBulk, t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	// Undo puts back what the bulk action replaced.
	undo := []Label{{ImageID: 0, User: "bo"}, {ImageID: 1, Verdict: VerdictUnsure, Note: "look again", User: "bo"}, {ImageID: 2, User: "bo"}}
	rows, err := s.SetLabels(id, undo, ActionUndo, t0.Add(2*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if rows[1].AnalystLabel != VerdictUnsure || rows[1].AnalystNote != "look again" || rows[0].AnalystLabel != "" {
		t.Fatalf("after undo: %+v", rows)
	}
	// Unchanged: no entry.
	if _, err := s.SetLabels(id, []Label{{ImageID: 1, Verdict: VerdictUnsure, Note: "look again", User: "ana"}}, ActionSet, t0.Add(3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	h, err := s.LabelHistory(id)
	if err != nil {
		t.Fatal(err)
	}
	want := []LabelChange{
		{RunID: id, ImageID: 1, Time: t0, User: "ana", Action: ActionSet, ToVerdict: VerdictUnsure, ToNote: "look again"},
		{RunID: id, ImageID: 0, Time: t0.Add(time.Minute), User: "bo", Action: ActionBulk, ToVerdict: VerdictNormal},
		{RunID: id, ImageID: 1, Time: t0.Add(time.Minute), User: "bo", Action: ActionBulk, FromVerdict: VerdictUnsure, ToVerdict: VerdictNormal, FromNote: "look again"},
		{RunID: id, ImageID: 2, Time: t0.Add(time.Minute), User: "bo", Action: ActionBulk, ToVerdict: VerdictNormal},
		{RunID: id, ImageID: 0, Time: t0.Add(2 * time.Minute), User: "bo", Action: ActionUndo, FromVerdict: VerdictNormal},
		{RunID: id, ImageID: 1, Time: t0.Add(2 * time.Minute), User: "bo", Action: ActionUndo, FromVerdict: VerdictNormal, ToVerdict: VerdictUnsure, ToNote: "look again"},
		{RunID: id, ImageID: 2, Time: t0.Add(2 * time.Minute), User: "bo", Action: ActionUndo, FromVerdict: VerdictNormal},
	}
	if len(h) != len(want) {
		t.Fatalf("%d entries, want %d: %+v", len(h), len(want), h)
	}
	for i := range want {
		if !h[i].Time.Equal(want[i].Time) {
			t.Fatalf("entry %d at %v, want %v", i, h[i].Time, want[i].Time)
		}
		h[i].Time = want[i].Time
		if h[i] != want[i] {
			t.Fatalf("entry %d:\n got %+v\nwant %+v", i, h[i], want[i])
		}
	}
	// An independent reader (Arrow) reads the file the run recorded.
	tbl := readArrow(t, filepath.Join(s.Dir(id), HistoryFile))
	actions, ok := column(t, tbl, "action").(*array.String)
	if !ok || actions.Len() != 7 || actions.Value(4) != ActionUndo {
		t.Fatalf("action column read by arrow: %v", column(t, tbl, "action"))
	}
	meta, err := s.Meta(id)
	if err != nil || meta.Files[HistoryFile] == "" {
		t.Fatalf("the history's checksum is not recorded: %v %v", meta.Files, err)
	}
	// A bad action or an unknown image changes nothing.
	if _, err := s.SetLabels(id, bulk, "redo", t0); err == nil {
		t.Fatal("action redo accepted")
	}
	if _, err := s.SetLabels(id, []Label{{ImageID: 0, Verdict: VerdictNormal}, {ImageID: 99, Verdict: VerdictNormal}}, ActionBulk, t0); !errors.Is(err, ErrNoImage) {
		t.Fatalf("unknown image: %v", err)
	}
	if again, err := s.LabelHistory(id); err != nil || len(again) != 7 {
		t.Fatalf("a refused edit changed the history: %d entries, %v", len(again), err)
	}
}

// The history exports as CSV, JSON lines and Parquet with every change.
func TestExportHistory(t *testing.T) {
	at := time.Date(2026, 11, 29, 10, 0, 0, 0, time.UTC)
	rows := []LabelChange{{RunID: "r", ImageID: 3, Time: at, User: "ana, the \"lead\"", Action: ActionBulk, FromVerdict: "", ToVerdict: VerdictNormal, ToNote: "ok"}}
	var b strings.Builder
	if err := ExportHistory(&b, rows, FormatCSV); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(strings.NewReader(b.String())).ReadAll()
	if err != nil || len(recs) != 2 || len(recs[0]) != len(historyColumns) || recs[1][3] != rows[0].User || recs[1][4] != ActionBulk || recs[1][6] != VerdictNormal {
		t.Fatalf("CSV %q: %v", b.String(), err)
	}
	b.Reset()
	if err := ExportHistory(&b, rows, FormatJSON); err != nil {
		t.Fatal(err)
	}
	var back LabelChange
	if err := json.Unmarshal([]byte(b.String()), &back); err != nil || back.ImageID != 3 || !back.Time.Equal(at) || back.ToNote != "ok" {
		t.Fatalf("JSON %q: %+v %v", b.String(), back, err)
	}
	var buf bytes.Buffer
	if err := ExportHistory(&buf, rows, FormatParquet); err != nil {
		t.Fatal(err)
	}
	got, err := parquet.Read[LabelChange](bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil || len(got) != 1 || got[0].User != rows[0].User {
		t.Fatalf("Parquet: %+v %v", got, err)
	}
	if err := ExportHistory(&b, rows, "xml"); err == nil {
		t.Fatal("format xml accepted")
	}
}

// Relocate moves paths under a new root and keeps labels; a path outside
// the recorded root changes nothing.
func TestRelocateKeepsLabels(t *testing.T) {
	s := Store{Root: t.TempDir()}
	run := sampleRun(t) // paths /x/a.png ...
	run.Meta.Dataset.Root = "/x"
	if err := s.Write(run); err != nil {
		t.Fatal(err)
	}
	id := run.Meta.RunID
	if _, err := s.SetLabels(id, []Label{{ImageID: 2, Verdict: VerdictNormal, User: "ana"}}, ActionSet, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.Relocate(id, "/data/demo"); err != nil {
		t.Fatal(err)
	}
	rows, err := s.Images(id)
	if err != nil {
		t.Fatal(err)
	}
	if rows[0].Path != "/data/demo/a.png" || rows[2].AnalystLabel != VerdictNormal {
		t.Fatalf("after relocate: %+v", rows[:3])
	}
	if m, err := s.Meta(id); err != nil || m.Dataset.Root != "/data/demo" {
		t.Fatalf("meta root %q, %v", m.Dataset.Root, err)
	}
	// The meta now says /data/demo; a run whose rows lie elsewhere is refused.
	other := sampleRun(t)
	other.Meta.RunID = "20260101T000000Z-0a0b0c"
	other.Meta.Dataset.Root = "/y"
	if err := s.Write(other); err != nil {
		t.Fatal(err)
	}
	if err := s.Relocate(other.Meta.RunID, "/z"); err == nil {
		t.Fatal("paths outside the dataset root moved")
	}
	if rows, err = s.Images(other.Meta.RunID); err != nil {
		t.Fatal(err)
	}
	if rows[0].Path != "/x/a.png" {
		t.Fatalf("a refused relocation changed %s", rows[0].Path)
	}
}
