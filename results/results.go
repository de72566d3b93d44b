// Package results stores evaluation runs as Parquet, one folder per run:
//
//	<root>/<run-id>/run.json        RunMeta: config, checkpoint hash, dataset, seeds, versions, device, timings
//	<root>/<run-id>/images.parquet  ImageRow per scored image (scores, verdicts, analyst labels)
//	<root>/<run-id>/metrics.parquet MetricRow per category and metric
//	<root>/<run-id>/maps.parquet    MapRow per image: the anomaly map quantised to uint8 with its scale
//
// A run is written into a hidden temporary folder and renamed into place, so
// readers never see half a run and a new run never rewrites an old one.
// Single files are replaced atomically (temp file + rename). Every Parquet file
// carries the schema version in its key-value metadata.
package results

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/diad-project/diad/backend/atomicfile"
	"github.com/diad-project/diad/shared"
)

// SchemaVersion is bumped when a file's columns change incompatibly.
const SchemaVersion = 1

// Metadata key of the schema version in every Parquet file.
const SchemaKey = "diad.schema_version"

// File names inside a run folder.
const (
	RunFile     = "run.json"
	ImagesFile  = "images.parquet"
	MetricsFile = "metrics.parquet"
	MapsFile    = "maps.parquet"
)

// Analyst verdicts.
const (
	VerdictNone      = ""
	VerdictNormal    = "normal"
	VerdictAnomalous = "anomalous"
	VerdictUnsure    = "unsure"
)

// ImageRow is one scored image.
type ImageRow struct {
	RunID    string `parquet:"run_id,dict" json:"run_id"`
	ImageID  int64  `parquet:"image_id" json:"image_id"`
	Category string `parquet:"category,dict" json:"category"`
	Path     string `parquet:"path" json:"path"`
	Split    string `parquet:"split,dict" json:"split"`
	// GroundTruth is 1 for anomalous, 0 for normal, -1 when unknown (predict).
	GroundTruth int32   `parquet:"gt_label" json:"gt_label"`
	Defect      string  `parquet:"defect,dict" json:"defect"`
	Score       float64 `parquet:"score" json:"score"`
	// Scorer names the anomaly map that produced Score (e.g. "resnet", "ae+ssim").
	Scorer string `parquet:"scorer,dict" json:"scorer"`
	// StepScores are the image scores of each DDIM step's predicted image,
	// when recorded.
	StepScores []float64 `parquet:"step_scores,list" json:"step_scores,omitempty"`
	Threshold  float64   `parquet:"threshold" json:"threshold"`
	Predicted  int32     `parquet:"predicted_label" json:"predicted_label"`
	// Analyst review, empty until someone labels the image.
	AnalystLabel string    `parquet:"analyst_label,dict" json:"analyst_label"`
	AnalystNote  string    `parquet:"analyst_note" json:"analyst_note"`
	AnalystUser  string    `parquet:"analyst_user" json:"analyst_user"`
	AnalystTime  time.Time `parquet:"analyst_time,timestamp(millisecond),optional" json:"analyst_time,omitzero"`
	CreatedAt    time.Time `parquet:"created_at,timestamp(millisecond)" json:"created_at"`
}

// MetricRow is one metric of one category ("mean" for the unweighted mean).
// Undefined values are NaN here and null in the file.
type MetricRow struct {
	RunID    string  `json:"run_id"`
	Category string  `json:"category"`
	Metric   string  `json:"metric"`
	Value    float64 `json:"value"`
	// Error says why Value is undefined (stored as null) for this category.
	Error string `json:"error,omitempty"`
}

// MapRow is one image's anomaly map, quantised: value = Offset + q/255*Scale.
type MapRow struct {
	RunID   string  `parquet:"run_id,dict" json:"run_id"`
	ImageID int64   `parquet:"image_id" json:"image_id"`
	Width   int32   `parquet:"width" json:"width"`
	Height  int32   `parquet:"height" json:"height"`
	Offset  float32 `parquet:"offset" json:"offset"`
	Scale   float32 `parquet:"scale" json:"scale"`
	Data    []byte  `parquet:"data,zstd" json:"-"`
}

// Quantize stores a map in 8 bits spread between its min and max (error at
// most Scale/510 per pixel).
func Quantize(runID string, imageID int64, w, h int, m []float32) MapRow {
	lo, hi := float32(math.Inf(1)), float32(math.Inf(-1))
	for _, v := range m {
		lo, hi = min(lo, v), max(hi, v)
	}
	row := MapRow{RunID: runID, ImageID: imageID, Width: int32(w), Height: int32(h), Offset: lo, Scale: hi - lo, Data: make([]byte, len(m))}
	if row.Scale > 0 {
		for i, v := range m {
			row.Data[i] = uint8(math.Round(float64((v - lo) / row.Scale * 255)))
		}
	}
	return row
}

// Values decodes a quantised map.
func (r MapRow) Values() []float32 {
	out := make([]float32, len(r.Data))
	for i, q := range r.Data {
		out[i] = r.Offset + float32(q)/255*r.Scale
	}
	return out
}

// RunMeta describes how a run was made: its run.json. It is the wire type
// the server serves for a run, defined once in shared.
type RunMeta = shared.RunInfo

// ThresholdInfo records the decision threshold and how it was chosen.
type ThresholdInfo = shared.RunThreshold

var runIDPattern = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{6}$`)

// ValidRunID reports whether id has the form NewRunID makes (so that a client
// cannot name a path outside the store).
func ValidRunID(id string) bool { return runIDPattern.MatchString(id) }

// NewRunID makes a sortable, unique run id: UTC time plus random suffix.
func NewRunID(t time.Time) string {
	b := make([]byte, 3)
	rand.Read(b)
	return t.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b)
}

// Run is a complete run to write.
type Run struct {
	Meta    RunMeta
	Images  []ImageRow
	Metrics []MetricRow
	Maps    []MapRow
}

// Store is a folder of runs.
type Store struct{ Root string }

// Dir is a run's folder.
func (s Store) Dir(runID string) string { return filepath.Join(s.Root, runID) }

func writeOpts() []parquet.WriterOption {
	return []parquet.WriterOption{parquet.KeyValueMetadata(SchemaKey, strconv.Itoa(SchemaVersion))}
}

// Write stores a run atomically; the run id must be new.
func (s Store) Write(run Run) error {
	id := run.Meta.RunID
	if !ValidRunID(id) {
		return fmt.Errorf("results: bad run id %q", id)
	}
	final := s.Dir(id)
	if _, err := os.Stat(final); err == nil {
		return fmt.Errorf("results: run %s already exists", id)
	}
	if err := os.MkdirAll(s.Root, 0o755); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	tmp, err := os.MkdirTemp(s.Root, ".tmp-"+id+"-")
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	defer os.RemoveAll(tmp) // no-op after the rename
	run.Meta.SchemaVersion = SchemaVersion
	run.Meta.Files = map[string]string{}
	if err := fillFolder(tmp, run.files(), run.Meta.Files, RunFile, run.Meta); err != nil {
		return err
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	return syncDir(s.Root)
}

// files are a run's Parquet files as fillFolder and WriteMerged write them.
func (run Run) files() []folderFile {
	return []folderFile{
		{ImagesFile, func(p string) error { return parquet.WriteFile(p, run.Images, writeOpts()...) }},
		{MetricsFile, func(p string) error { return parquet.WriteFile(p, toNullable(run.Metrics), writeOpts()...) }},
		{MapsFile, func(p string) error { return parquet.WriteFile(p, run.Maps, writeOpts()...) }},
	}
}

// ApplyThreshold sets each row's threshold (its category's, where th has
// one) and predicted label.
func ApplyThreshold(rows []ImageRow, th ThresholdInfo) {
	for i := range rows {
		v := th.For(rows[i].Category)
		rows[i].Threshold = v
		rows[i].Predicted = 0
		if shared.Predicted(rows[i].Score, v) {
			rows[i].Predicted = 1
		}
	}
}

// folderFile is one Parquet file of a run or partition folder.
type folderFile struct {
	name  string
	write func(path string) error
}

// fillFolder writes files into a new folder, records their SHA-256 in
// sums, writes doc (which holds sums) as JSON file jsonName last, syncs the
// folder and opens it to all (MkdirTemp makes it 0700; runs are shared like
// any folder). The caller renames the folder into place.
func fillFolder(dir string, files []folderFile, sums map[string]string, jsonName string, doc any) error {
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		if err := f.write(path); err != nil {
			return fmt.Errorf("results: write %s: %w", f.name, err)
		}
		sum, err := fileSum(path)
		if err != nil {
			return err
		}
		sums[f.name] = sum
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return fmt.Errorf("results: %s: %w", jsonName, err)
	}
	if err := os.WriteFile(filepath.Join(dir, jsonName), b, 0o644); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	return nil
}

// metricFileRow is MetricRow as stored: undefined values are null.
type metricFileRow struct {
	RunID    string   `parquet:"run_id,dict"`
	Category string   `parquet:"category,dict"`
	Metric   string   `parquet:"metric,dict"`
	Value    *float64 `parquet:"value,optional"`
	Error    string   `parquet:"error"`
}

func toNullable(rows []MetricRow) []metricFileRow {
	out := make([]metricFileRow, len(rows))
	for i, m := range rows {
		out[i] = metricFileRow{RunID: m.RunID, Category: m.Category, Metric: m.Metric, Error: m.Error}
		if !math.IsNaN(m.Value) {
			v := m.Value
			out[i].Value = &v
		}
	}
	return out
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("results: sync %s: %w", dir, err)
	}
	return nil
}

// fileSum is the SHA-256 of a file, hex-encoded.
func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("results: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("results: %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ErrCorrupt marks a run file that does not read back as written.
var ErrCorrupt = errors.New("corrupt")

// readRows reads a run's Parquet file: its checksum is verified against the
// run's record first (a label edit may be replacing the file this moment,
// so a mismatch is looked at again before it counts), and a parquet-go panic
// on a damaged file becomes an error naming the file.
// readRowsShared is readRows under the run's read lock (for callers that do
// not hold its write lock).
func readRowsShared[T any](s Store, id, name string) ([]T, error) {
	unlock := s.rlockRun(id)
	defer unlock()
	return readRows[T](s, id, name)
}

func readRows[T any](s Store, id, name string) ([]T, error) {
	path := filepath.Join(s.Dir(id), name)
	for attempt := 0; ; attempt++ {
		meta, err := s.Meta(id)
		if err != nil {
			return nil, err
		}
		want := meta.Files[name]
		if want == "" {
			break // a run from before checksums
		}
		got, err := fileSum(path)
		if err != nil {
			return nil, err
		}
		if got == want {
			break
		}
		if attempt == 2 {
			return nil, fmt.Errorf("results: %s of run %s is %w: its SHA-256 is %.12s..., the run recorded %.12s...", name, id, ErrCorrupt, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return decodeRows[T](path)
}

func decodeRows[T any](path string) ([]T, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("results: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("results: %w", err)
	}
	return decodeRowsFrom[T](path, f, st.Size())
}

// decodeRowsFrom reads the rows of a Parquet file of size bytes from r
// (named path in errors), after checking its schema version. parquet-go
// panics on some malformed files; that becomes ErrCorrupt here.
func decodeRowsFrom[T any](path string, r io.ReaderAt, size int64) (rows []T, err error) {
	defer func() {
		if p := recover(); p != nil {
			rows, err = nil, fmt.Errorf("results: %s is %w: %v", path, ErrCorrupt, p)
		}
	}()
	if err := checkTrailer(r, size); err != nil {
		return nil, fmt.Errorf("results: %s is %w: %v", path, ErrCorrupt, err)
	}
	pf, err := parquet.OpenFile(r, size)
	if err != nil {
		return nil, fmt.Errorf("results: %s: %w", path, err)
	}
	v, ok := pf.Lookup(SchemaKey)
	if !ok || v != strconv.Itoa(SchemaVersion) {
		return nil, fmt.Errorf("results: %s has schema version %q, this diad reads %d", path, v, SchemaVersion)
	}
	rows, err = parquet.Read[T](r, size)
	if err != nil {
		return nil, fmt.Errorf("results: %s: %w", path, err)
	}
	return rows, nil
}

// checkTrailer checks a Parquet file's magic numbers and that its footer
// length fits in the file before parquet-go allocates a buffer of that
// length (a corrupt length made it allocate up to 4 GiB per read).
func checkTrailer(r io.ReaderAt, size int64) error {
	const magic = "PAR1"
	if size < 2*int64(len(magic))+4 {
		return fmt.Errorf("%d bytes is too short for a Parquet file", size)
	}
	var head [4]byte
	if _, err := r.ReadAt(head[:], 0); err != nil {
		return fmt.Errorf("read header: %w", err)
	}
	var tail [8]byte
	if _, err := r.ReadAt(tail[:], size-8); err != nil {
		return fmt.Errorf("read trailer: %w", err)
	}
	if string(head[:]) != magic || string(tail[4:]) != magic {
		return errors.New("no Parquet magic number at its start and end")
	}
	if footer := int64(binary.LittleEndian.Uint32(tail[:4])); footer > size-8-int64(len(magic)) {
		return fmt.Errorf("footer of %d bytes claimed in a file of %d", footer, size)
	}
	return nil
}

// ErrNoRun is returned for an unknown run id.
var ErrNoRun = errors.New("results: no such run")

func (s Store) checkRun(id string) error {
	if !ValidRunID(id) {
		return fmt.Errorf("%w: %q", ErrNoRun, id)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(id), RunFile)); err != nil {
		return fmt.Errorf("%w: %s", ErrNoRun, id)
	}
	return nil
}

// Meta reads a run's metadata.
func (s Store) Meta(id string) (RunMeta, error) {
	if err := s.checkRun(id); err != nil {
		return RunMeta{}, err
	}
	b, err := os.ReadFile(filepath.Join(s.Dir(id), RunFile))
	if err != nil {
		return RunMeta{}, fmt.Errorf("results: %w", err)
	}
	var m RunMeta
	if err := json.Unmarshal(b, &m); err != nil {
		return RunMeta{}, fmt.Errorf("results: %s: %w", id, err)
	}
	return m, nil
}

// Runs lists the complete runs, newest first.
func (s Store) Runs() ([]RunMeta, error) {
	entries, err := os.ReadDir(s.Root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("results: %w", err)
	}
	var out []RunMeta
	for _, e := range entries {
		if !e.IsDir() || !ValidRunID(e.Name()) {
			continue
		}
		m, err := s.Meta(e.Name())
		if err != nil {
			continue // incomplete or foreign folder
		}
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RunID > out[j].RunID })
	return out, nil
}

// Images reads a run's image rows.
func (s Store) Images(id string) ([]ImageRow, error) {
	if err := s.checkRun(id); err != nil {
		return nil, err
	}
	return readRowsShared[ImageRow](s, id, ImagesFile)
}

// Metrics reads a run's metric rows (undefined values as NaN).
func (s Store) Metrics(id string) ([]MetricRow, error) {
	if err := s.checkRun(id); err != nil {
		return nil, err
	}
	rows, err := readRowsShared[metricFileRow](s, id, MetricsFile)
	if err != nil {
		return nil, err
	}
	out := make([]MetricRow, len(rows))
	for i, r := range rows {
		out[i] = MetricRow{RunID: r.RunID, Category: r.Category, Metric: r.Metric, Value: math.NaN(), Error: r.Error}
		if r.Value != nil {
			out[i].Value = *r.Value
		}
	}
	return out, nil
}

// Maps reads a run's quantised anomaly maps.
func (s Store) Maps(id string) ([]MapRow, error) {
	if err := s.checkRun(id); err != nil {
		return nil, err
	}
	return readRowsShared[MapRow](s, id, MapsFile)
}

func (s Store) writeMeta(m RunMeta) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	return atomicfile.WriteBytes(filepath.Join(s.Dir(m.RunID), RunFile), b)
}

// ImageSeed is the noise seed of image imageID in a run made with runSeed:
// each image has its own, so its reconstruction does not depend on the batch
// it was computed in, and the explorer replays any run image exactly
// (splitmix64 of the pair).
func ImageSeed(runSeed uint64, imageID int64) uint64 {
	z := runSeed ^ (uint64(imageID)+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
