package results

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
	"github.com/parquet-go/parquet-go"

	"github.com/diad-project/diad/backend/atomicfile"
	"github.com/diad-project/diad/backend/filetest"
)

func sampleRun(t *testing.T) Run {
	id := NewRunID(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC))
	now := time.Date(2026, 11, 28, 12, 0, 1, 0, time.UTC)
	r := Run{Meta: RunMeta{RunID: id, Kind: "test", Preset: "tiny", Versions: map[string]string{"diad": "test"}}}
	r.Meta.Threshold = ThresholdInfo{Value: 0.5, Policy: "manual"}
	for i := 0; i < 5; i++ {
		score := float64(i) / 4
		pred := int32(0)
		if score >= 0.5 {
			pred = 1
		}
		r.Images = append(r.Images, ImageRow{RunID: id, ImageID: int64(i), Category: []string{"a", "b"}[i%2], Path: "/x/" + string(rune('a'+i)) + ".png",
			Split: "test", GroundTruth: int32(i % 2), Defect: "good", Score: score, StepScores: []float64{score, score / 2},
			Threshold: 0.5, Predicted: pred, CreatedAt: now})
		m := make([]float32, 16)
		for k := range m {
			m[k] = float32(k) * float32(i+1) / 10
		}
		r.Maps = append(r.Maps, Quantize(id, int64(i), 4, 4, m))
	}
	r.Metrics = []MetricRow{{RunID: id, Category: "a", Metric: "I-AUROC", Value: 0.75}, {RunID: id, Category: "a", Metric: "PRO", Value: math.NaN(), Error: "no regions"}}
	return r
}

// readArrow opens a Parquet file with Apache Arrow's reader (an implementation
// independent of the writer's) and returns its table.
// images and meta fail the test on an error, and images on no rows: a check
// over what failed to load would pass on nothing.
func images(t *testing.T, s Store, id string) []ImageRow {
	t.Helper()
	rows, err := s.Images(id)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) == 0 {
		t.Fatalf("run %s has no image rows", id)
	}
	return rows
}

func meta(t *testing.T, s Store, id string) RunMeta {
	t.Helper()
	m, err := s.Meta(id)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func readArrow(t *testing.T, path string) arrow.Table {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	rdr, err := file.NewParquetReader(f)
	if err != nil {
		t.Fatalf("arrow cannot open %s: %v", path, err)
	}
	if v := rdr.MetaData().KeyValueMetadata().FindValue(SchemaKey); v == nil || *v != "1" {
		t.Fatalf("%s: schema version metadata %v", path, v)
	}
	fr, err := pqarrow.NewFileReader(rdr, pqarrow.ArrowReadProperties{}, memory.DefaultAllocator)
	if err != nil {
		t.Fatal(err)
	}
	tbl, err := fr.ReadTable(context.Background())
	if err != nil {
		t.Fatalf("arrow cannot read %s: %v", path, err)
	}
	t.Cleanup(tbl.Release)
	return tbl
}

func column(t *testing.T, tbl arrow.Table, name string) arrow.Array {
	t.Helper()
	idx := tbl.Schema().FieldIndices(name)
	if len(idx) != 1 {
		t.Fatalf("no column %s in %v", name, tbl.Schema())
	}
	return tbl.Column(idx[0]).Data().Chunk(0)
}

func TestRunFilesOpenInArrow(t *testing.T) {
	s := Store{Root: t.TempDir()}
	run := sampleRun(t)
	if err := s.Write(run); err != nil {
		t.Fatal(err)
	}
	images := readArrow(t, filepath.Join(s.Dir(run.Meta.RunID), ImagesFile))
	if images.NumRows() != 5 {
		t.Fatalf("%d image rows", images.NumRows())
	}
	if typ := images.Schema().Field(images.Schema().FieldIndices("score")[0]).Type; typ.ID() != arrow.FLOAT64 {
		t.Fatalf("score type %v", typ)
	}
	if typ := images.Schema().Field(images.Schema().FieldIndices("created_at")[0]).Type; typ.ID() != arrow.TIMESTAMP {
		t.Fatalf("created_at type %v", typ)
	}
	if typ := images.Schema().Field(images.Schema().FieldIndices("step_scores")[0]).Type; typ.ID() != arrow.LIST {
		t.Fatalf("step_scores type %v", typ)
	}
	if gt := column(t, images, "gt_label").(*array.Int32); gt.Value(1) != 1 || gt.Value(2) != 0 {
		t.Fatal("gt_label values")
	}
	metrics := readArrow(t, filepath.Join(s.Dir(run.Meta.RunID), MetricsFile))
	val := column(t, metrics, "value").(*array.Float64)
	if metrics.NumRows() != 2 || val.Value(0) != 0.75 || !val.IsNull(1) {
		t.Fatalf("metrics: %d rows, null=%v", metrics.NumRows(), val.IsNull(1))
	}
	maps := readArrow(t, filepath.Join(s.Dir(run.Meta.RunID), MapsFile))
	if maps.NumRows() != 5 {
		t.Fatalf("%d map rows", maps.NumRows())
	}
	// Our own reader agrees, and the quantisation error is within its bound.
	got, err := s.Maps(run.Meta.RunID)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range got {
		for k, v := range m.Values() {
			want := float32(k) * float32(i+1) / 10
			if math.Abs(float64(v-want)) > float64(m.Scale)/510+1e-6 {
				t.Fatalf("map %d pixel %d: %v, want %v", i, k, v, want)
			}
		}
	}
	ms, err := s.Metrics(run.Meta.RunID)
	if err != nil || !math.IsNaN(ms[1].Value) || ms[1].Error != "no regions" {
		t.Fatalf("metrics read back: %+v %v", ms, err)
	}
}

// TestRunsAreWrittenOnceAndApart: writing a second run leaves the first
// untouched, a run id cannot be reused, no temporary folder is left, and a
// path-like run id is refused.
func TestRunsAreWrittenOnceAndApart(t *testing.T) {
	s := Store{Root: t.TempDir()}
	run := sampleRun(t)
	if err := s.Write(run); err != nil {
		t.Fatal(err)
	}
	before := filetest.Read(t, filepath.Join(s.Dir(run.Meta.RunID), ImagesFile))
	run2 := sampleRun(t)
	run2.Meta.RunID = NewRunID(time.Now())
	for i := range run2.Images {
		run2.Images[i].RunID = run2.Meta.RunID
	}
	if err := s.Write(run2); err != nil {
		t.Fatal(err)
	}
	after := filetest.Read(t, filepath.Join(s.Dir(run.Meta.RunID), ImagesFile))
	if !bytes.Equal(before, after) {
		t.Fatal("writing a new run changed an old one")
	}
	if err := s.Write(run); err == nil {
		t.Fatal("run id reused")
	}
	runs, err := s.Runs()
	if err != nil || len(runs) != 2 {
		t.Fatalf("runs %v %v", runs, err)
	}
	// No temporary folders are left.
	entries, err := os.ReadDir(s.Root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".tmp") {
			t.Fatalf("left %s behind", e.Name())
		}
	}
	if _, err := s.Images("../../etc"); err == nil {
		t.Fatal("path-like run id accepted")
	}
}

func TestConcurrentLabelsAreAllKept(t *testing.T) {
	s := Store{Root: t.TempDir()}
	run := sampleRun(t)
	if err := s.Write(run); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 5)
	for i := 0; i < 5; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			_, err := s.SetLabels(run.Meta.RunID, []Label{{ImageID: int64(i), Verdict: VerdictAnomalous, Note: "seen", User: "ana"}}, ActionSet, time.Now())
			errs <- err
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	rows, err := s.Images(run.Meta.RunID)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if r.AnalystLabel != VerdictAnomalous || r.AnalystUser != "ana" || r.AnalystTime.IsZero() {
			t.Fatalf("label lost: %+v", r)
		}
	}
	// Each editor's change is in the history too.
	if h, err := s.LabelHistory(run.Meta.RunID); err != nil || len(h) != 5 {
		t.Fatalf("%d history entries for 5 edits: %v", len(h), err)
	}
	// The independent reader sees the labels too.
	tbl := readArrow(t, filepath.Join(s.Dir(run.Meta.RunID), ImagesFile))
	labels, ok := column(t, tbl, "analyst_label").(*array.String)
	if !ok || labels.Len() != 5 || labels.Value(3) != VerdictAnomalous {
		t.Fatalf("analyst_label column read by arrow: %v", column(t, tbl, "analyst_label"))
	}
	if _, err := s.SetLabels(run.Meta.RunID, []Label{{ImageID: 99, Verdict: VerdictNormal}}, ActionSet, time.Now()); err == nil {
		t.Fatal("unknown image accepted")
	}
	if _, err := s.SetLabels(run.Meta.RunID, []Label{{ImageID: 1, Verdict: "maybe"}}, ActionSet, time.Now()); err == nil {
		t.Fatal("bad verdict accepted")
	}
}

// TestThresholdChangesRelabelTheRun: a new threshold (one for the run, or
// one per category) re-labels every row's outcome and keeps the analysts'
// verdicts; one naming an unknown category is refused and changes nothing.
func TestThresholdChangesRelabelTheRun(t *testing.T) {
	s := Store{Root: t.TempDir()}
	run := sampleRun(t)
	if err := s.Write(run); err != nil {
		t.Fatal(err)
	}
	var all []Label
	for i := range run.Images {
		all = append(all, Label{ImageID: int64(i), Verdict: VerdictAnomalous, Note: "seen", User: "ana"})
	}
	if _, err := s.SetLabels(run.Meta.RunID, all, ActionBulk, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.SetThreshold(run.Meta.RunID, ThresholdInfo{Value: 0.9, Policy: "manual", SetBy: "ana"}); err != nil {
		t.Fatal(err)
	}
	rows := images(t, s, run.Meta.RunID)
	for _, r := range rows {
		if r.Threshold != 0.9 || (r.Predicted == 1) != (r.Score >= 0.9) || r.AnalystLabel != VerdictAnomalous {
			t.Fatalf("after threshold change: %+v", r)
		}
	}
	if m := meta(t, s, run.Meta.RunID); m.Threshold.Value != 0.9 {
		t.Fatalf("meta threshold %+v", m.Threshold)
	}
	// Category b judged by its own threshold, a by the run's.
	per := ThresholdInfo{Value: 0.9, PerCategory: map[string]float64{"b": 0.01}, Policy: "manual", SetBy: "ana"}
	if err := s.SetThreshold(run.Meta.RunID, per); err != nil {
		t.Fatal(err)
	}
	rows = images(t, s, run.Meta.RunID)
	for _, r := range rows {
		want := map[string]float64{"a": 0.9, "b": 0.01}[r.Category]
		if r.Threshold != want || (r.Predicted == 1) != (r.Score >= want) {
			t.Fatalf("per-category threshold: %+v, want threshold %v", r, want)
		}
	}
	if m := meta(t, s, run.Meta.RunID); m.Threshold.PerCategory["b"] != 0.01 || len(m.Threshold.PerCategory) != 1 {
		t.Fatalf("meta per-category threshold %+v", m.Threshold)
	}
	err := s.SetThreshold(run.Meta.RunID, ThresholdInfo{Value: 0.5, PerCategory: map[string]float64{"b": 0.2, "zz": 1}, Policy: "manual"})
	if !errors.Is(err, ErrNoCategory) || !strings.Contains(err.Error(), `"zz"`) {
		t.Fatalf("unknown category: %v", err)
	}
	if m := meta(t, s, run.Meta.RunID); m.Threshold.PerCategory["b"] != 0.01 {
		t.Fatalf("a refused threshold changed the run: %+v", m.Threshold)
	}
}

func TestExportCSV(t *testing.T) {
	run := sampleRun(t)
	var buf bytes.Buffer
	if err := ExportImages(&buf, run.Images, FormatCSV); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(&buf).ReadAll()
	if err != nil || len(recs) != 6 || recs[0][7] != "score" || recs[2][7] != "0.25" || recs[2][8] != "0.25;0.125" {
		t.Fatalf("csv %v %v", recs, err)
	}
	buf.Reset()
	if err := ExportMetrics(&buf, run.Metrics, FormatJSON); err != nil || !strings.Contains(buf.String(), `"value":null`) {
		t.Fatalf("json metrics %q %v", buf.String(), err)
	}
	if err := ExportImages(&buf, run.Images, "xml"); err == nil {
		t.Fatal("unknown format accepted")
	}
}

func TestRunFilesAreReadableByOthers(t *testing.T) {
	s := Store{Root: t.TempDir()}
	r := sampleRun(t)
	if err := s.Write(r); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetLabels(r.Meta.RunID, []Label{{ImageID: 1, Verdict: "anomalous", User: "ann"}}, ActionSet, time.Now()); err != nil {
		t.Fatal(err)
	}
	dir := s.Dir(r.Meta.RunID)
	st, err := os.Stat(dir)
	if err != nil || st.Mode().Perm() != 0o755 {
		t.Fatalf("run folder mode %v (%v), want 0755", st.Mode().Perm(), err)
	}
	for _, f := range []string{RunFile, ImagesFile, MetricsFile, MapsFile} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o644 {
			t.Fatalf("%s mode %v (%v), want 0644 (after a label edit too)", f, st.Mode().Perm(), err)
		}
	}
}

func TestLabelTimesAreWhatTheFileKeeps(t *testing.T) {
	s := Store{Root: t.TempDir()}
	r := sampleRun(t)
	if err := s.Write(r); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 29, 8, 0, 0, 123456789, time.UTC)
	got, err := s.SetLabels(r.Meta.RunID, []Label{{ImageID: 2, Verdict: "normal", User: "bo"}}, ActionSet, now)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := s.Images(r.Meta.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !got[0].AnalystTime.Equal(rows[2].AnalystTime) || got[0].AnalystTime.Nanosecond() != 123000000 {
		t.Fatalf("answered %v, stored %v", got[0].AnalystTime, rows[2].AnalystTime)
	}
}

// Every single-byte corruption of a run's Parquet files is an error naming
// the file, never a panic: with the run's recorded checksums it is reported
// as corruption before parquet-go sees the file, and without them (runs
// from before checksums) parquet-go's panics are recovered.
func TestCorruptRunFilesAreErrors(t *testing.T) {
	s := Store{Root: t.TempDir()}
	run := sampleRun(t)
	if err := s.Write(run); err != nil {
		t.Fatal(err)
	}
	id := run.Meta.RunID
	meta, err := s.Meta(id)
	if err != nil {
		t.Fatal(err)
	}
	if len(meta.Files) != 3 {
		t.Fatalf("checksums recorded: %v", meta.Files)
	}
	// Label edits keep the record true.
	if _, err := s.SetLabels(id, []Label{{ImageID: 1, Verdict: VerdictNormal}}, ActionSet, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Images(id); err != nil {
		t.Fatalf("after a label edit: %v", err)
	}
	if meta, err = s.Meta(id); err != nil {
		t.Fatal(err)
	}
	read := map[string]func() error{
		ImagesFile:  func() error { _, err := s.Images(id); return err },
		MetricsFile: func() error { _, err := s.Metrics(id); return err },
		MapsFile:    func() error { _, err := s.Maps(id); return err },
	}
	for _, name := range []string{ImagesFile, MetricsFile} {
		path := filepath.Join(s.Dir(id), name)
		orig := filetest.Read(t, path)
		flip := func(i int) {
			b := bytes.Clone(orig)
			b[i] ^= 0xff
			filetest.Write(t, path, b)
		}
		// With checksums: a damaged byte anywhere is corruption.
		for _, i := range []int{0, len(orig) / 2, len(orig) - 1} {
			flip(i)
			if err := read[name](); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), name) {
				t.Fatalf("%s byte %d: %v", name, i, err)
			}
		}
		if raceDetector {
			filetest.Write(t, path, orig)
			continue // see race_on_test.go
		}
		// Without: every position, no panic.
		m, err := s.Meta(id)
		if err != nil {
			t.Fatal(err)
		}
		m.Files = nil
		if err := s.writeMeta(m); err != nil {
			t.Fatal(err)
		}
		errs := 0
		for i := range orig {
			flip(i)
			if err := read[name](); err != nil {
				errs++
			}
		}
		if errs == 0 {
			t.Fatalf("%s: no corruption of %d bytes was noticed", name, len(orig))
		}
		t.Logf("%s: %d of %d single-byte corruptions gave an error, none panicked", name, errs, len(orig))
		filetest.Write(t, path, orig)
		m.Files = meta.Files
		if err := s.writeMeta(m); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReadsWaitForAWriteInProgress: a label edit replaces images.parquet and
// then records its checksum; a read in between must wait for the record, not
// report the run as corrupt (the live HTTP fuzz saw two such 500s in 10^5
// requests).
func TestReadsWaitForAWriteInProgress(t *testing.T) {
	s := Store{Root: t.TempDir()}
	run := sampleRun(t)
	if err := s.Write(run); err != nil {
		t.Fatal(err)
	}
	id := run.Meta.RunID
	unlock, err := s.lockRun(id)
	if err != nil {
		t.Fatal(err)
	}
	// Half of a write: the new file is in place, its checksum not yet recorded.
	rows := run.Images
	rows[0].AnalystLabel = VerdictAnomalous
	path := filepath.Join(s.Dir(id), ImagesFile)
	if err := atomicfile.Write(path, func(w io.Writer) error {
		pw := parquet.NewGenericWriter[ImageRow](w, writeOpts()...)
		if _, err := pw.Write(rows); err != nil {
			return err
		}
		return pw.Close()
	}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		got, err := s.Images(id)
		if err == nil && got[0].AnalystLabel != VerdictAnomalous {
			err = fmt.Errorf("read the old rows after the write: %+v", got[0])
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a read during the write returned (%v) instead of waiting for it", err)
	case <-time.After(400 * time.Millisecond): // longer than the reader's retries
	}
	sum, err := fileSum(path)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := s.Meta(id)
	if err != nil {
		t.Fatal(err)
	}
	meta.Files[ImagesFile] = sum
	if err := s.writeMeta(meta); err != nil {
		t.Fatal(err)
	}
	unlock()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A corrupt footer length is refused before anything is allocated for it:
// parquet-go allocates the length it reads (up to 4 GiB) before it finds
// that the file is shorter, which made fuzzing workers grow to gigabytes.
func TestClaimedFooterLengthIsCheckedFirst(t *testing.T) {
	s := Store{Root: t.TempDir()}
	run := sampleRun(t)
	if err := s.Write(run); err != nil {
		t.Fatal(err)
	}
	valid := filetest.Read(t, filepath.Join(s.Dir(run.Meta.RunID), ImagesFile))
	bad := append([]byte(nil), valid...)
	binary.LittleEndian.PutUint32(bad[len(bad)-8:], 0xfffffff0)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := decodeRowsFrom[ImageRow](ImagesFile, bytes.NewReader(bad), int64(len(bad)))
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), ImagesFile) {
		t.Fatalf("want ErrCorrupt naming %s, got %v", ImagesFile, err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("refusing a %d-byte file allocated %d bytes", len(bad), grew)
	}
	if _, err := decodeRowsFrom[ImageRow](ImagesFile, bytes.NewReader(valid), int64(len(valid))); err != nil {
		t.Fatalf("the valid file: %v", err)
	}
}
