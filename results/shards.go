package results

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/parquet-go/parquet-go"
	"golang.org/x/sys/unix"

	"github.com/diad-project/diad/backend/metrics"
	"github.com/diad-project/diad/backend/shard"
)

// Files of a shard's partition (a hive-style folder shard=IIII-of-NNNN
// inside the run's folder): images.parquet and maps.parquet as in a run,
// pixels.parquet with the exact maps and masks the merged metrics need, and
// ShardFile, written last, which marks the partition complete.
const (
	PixelsFile = "pixels.parquet"
	ShardFile  = "shard.json"
)

// PixelRow is one image's exact anomaly map (float32, little-endian) and
// ground-truth mask (one bit a pixel, row-major, least significant bit
// first; empty for a normal image): what pixel metrics are computed from,
// so that a merged run's metrics equal a single process's bit for bit.
type PixelRow struct {
	RunID   string `parquet:"run_id,dict"`
	ImageID int64  `parquet:"image_id"`
	Width   int32  `parquet:"width"`
	Height  int32  `parquet:"height"`
	Map     []byte `parquet:"map,zstd"`
	Mask    []byte `parquet:"mask,zstd"`
}

// NewPixelRow packs a map and its mask (nil for a normal image).
func NewPixelRow(runID string, imageID int64, w, h int, m []float32, mask []bool) PixelRow {
	r := PixelRow{RunID: runID, ImageID: imageID, Width: int32(w), Height: int32(h), Map: make([]byte, 4*len(m))}
	for i, v := range m {
		binary.LittleEndian.PutUint32(r.Map[4*i:], math.Float32bits(v))
	}
	if mask != nil {
		r.Mask = make([]byte, (len(mask)+7)/8)
		for i, on := range mask {
			if on {
				r.Mask[i/8] |= 1 << (i % 8)
			}
		}
	}
	return r
}

// Values unpacks the map and the mask (nil for a normal image).
func (r PixelRow) Values() (m []float32, mask []bool, err error) {
	n := int(r.Width) * int(r.Height)
	if r.Width <= 0 || r.Height <= 0 || len(r.Map) != 4*n {
		return nil, nil, fmt.Errorf("results: image %d: %d map bytes for %dx%d pixels", r.ImageID, len(r.Map), r.Width, r.Height)
	}
	m = make([]float32, n)
	for i := range m {
		m[i] = math.Float32frombits(binary.LittleEndian.Uint32(r.Map[4*i:]))
	}
	if len(r.Mask) == 0 {
		return m, nil, nil
	}
	if len(r.Mask) != (n+7)/8 {
		return nil, nil, fmt.Errorf("results: image %d: %d mask bytes for %dx%d pixels", r.ImageID, len(r.Mask), r.Width, r.Height)
	}
	mask = make([]bool, n)
	for i := range mask {
		mask[i] = r.Mask[i/8]&(1<<(i%8)) != 0
	}
	return m, mask, nil
}

// ShardInfo is a partition's shard.json: the run as this shard saw it and
// what a merge must check and needs.
type ShardInfo struct {
	// Run is the run's metadata as the shard wrote it (its own timings;
	// Files holds the partition's file checksums).
	Run   RunMeta `json:"run"`
	Index int     `json:"index"`
	Count int     `json:"count"`
	// SplitImages is the number of images in the whole split (all shards).
	SplitImages int `json:"split_images"`
	// Threshold is the threshold spec the merged run applies.
	Threshold string             `json:"threshold"`
	Metrics   metrics.EvalConfig `json:"metrics"`
	// Unreadable are the ids of the shard's images that could not be
	// decoded (predict runs score the others).
	Unreadable []int64 `json:"unreadable,omitempty"`
}

// Spec is the partition's shard.
func (i ShardInfo) Spec() shard.Spec { return shard.Spec{Index: i.Index, Count: i.Count} }

// Shard is one shard's partition to write.
type Shard struct {
	Info   ShardInfo
	Images []ImageRow
	Maps   []MapRow
	Pixels []PixelRow
}

// ShardDir is a partition's folder.
func (s Store) ShardDir(runID, dirName string) string { return filepath.Join(s.Dir(runID), dirName) }

// WriteShard writes a shard's partition of run Info.Run.RunID atomically:
// into a hidden temporary folder beside it, then swapped into place in one
// rename (renameat2 RENAME_EXCHANGE when the partition exists), so a
// reader or a merge sees the old partition or the new one, never a mix; a
// shard killed while writing leaves only the temporary folder, which merges
// ignore. A shard run again replaces its own partition and nothing else.
func (s Store) WriteShard(sh Shard) error {
	id := sh.Info.Run.RunID
	if !ValidRunID(id) {
		return fmt.Errorf("results: bad run id %q", id)
	}
	spec := sh.Info.Spec()
	if err := spec.Validate(); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	runDir := s.Dir(id)
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return fmt.Errorf("results: %w", err)
	}
	tmp, err := os.MkdirTemp(runDir, ".tmp-"+spec.DirName()+"-")
	if err != nil {
		return fmt.Errorf("results: %w", err)
	}
	defer os.RemoveAll(tmp) // after the swap: the old partition, if any
	sh.Info.Run.SchemaVersion = SchemaVersion
	sh.Info.Run.Files = map[string]string{}
	files := []folderFile{
		{ImagesFile, func(p string) error { return parquet.WriteFile(p, sh.Images, writeOpts()...) }},
		{MapsFile, func(p string) error { return parquet.WriteFile(p, sh.Maps, writeOpts()...) }},
		{PixelsFile, func(p string) error { return parquet.WriteFile(p, sh.Pixels, writeOpts()...) }},
	}
	if err := fillFolder(tmp, files, sh.Info.Run.Files, ShardFile, sh.Info); err != nil {
		return err
	}
	final := filepath.Join(runDir, spec.DirName())
	err = unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_EXCHANGE)
	if errors.Is(err, unix.ENOENT) {
		err = os.Rename(tmp, final) // no partition yet
	}
	if err != nil {
		return fmt.Errorf("results: place partition %s: %w", final, err)
	}
	return syncDir(runDir)
}

// Partition is a complete partition found in a run's folder.
type Partition struct {
	Dir  string
	Info ShardInfo
}

// Incomplete is a folder that looks like a partition but is not one yet (a
// shard still writing, or killed while writing).
type Incomplete struct {
	Dir    string
	Reason string
}

// Partitions lists a run's complete partitions (by shard index, then
// count) and the incomplete ones.
func (s Store) Partitions(runID string) ([]Partition, []Incomplete, error) {
	if !ValidRunID(runID) {
		return nil, nil, fmt.Errorf("%w: %q", ErrNoRun, runID)
	}
	entries, err := os.ReadDir(s.Dir(runID))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, fmt.Errorf("%w: %s (no folder %s)", ErrNoRun, runID, s.Dir(runID))
	}
	if err != nil {
		return nil, nil, fmt.Errorf("results: %w", err)
	}
	var parts []Partition
	var incomplete []Incomplete
	for _, e := range entries {
		name := e.Name()
		dir := filepath.Join(s.Dir(runID), name)
		if strings.HasPrefix(name, ".tmp-shard=") {
			incomplete = append(incomplete, Incomplete{Dir: dir, Reason: "a shard is writing it, or was killed while writing it"})
			continue
		}
		spec, ok := shard.ParseDirName(name)
		if !ok || !e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, ShardFile))
		if err != nil {
			incomplete = append(incomplete, Incomplete{Dir: dir, Reason: "no " + ShardFile + " (not written by a finished shard)"})
			continue
		}
		var info ShardInfo
		if err := json.Unmarshal(b, &info); err != nil {
			return nil, nil, fmt.Errorf("results: %s: %w", filepath.Join(dir, ShardFile), err)
		}
		if info.Spec() != spec || info.Run.RunID != runID {
			return nil, nil, fmt.Errorf("results: %s describes shard %s of run %s, not the folder's %s of %s", filepath.Join(dir, ShardFile), info.Spec(), info.Run.RunID, spec, runID)
		}
		parts = append(parts, Partition{Dir: dir, Info: info})
	}
	sort.Slice(parts, func(a, b int) bool {
		pa, pb := parts[a].Info, parts[b].Info
		if pa.Index != pb.Index {
			return pa.Index < pb.Index
		}
		return pa.Count < pb.Count
	})
	return parts, incomplete, nil
}

// readPartition reads one of a partition's files after checking its
// checksum against shard.json.
func readPartition[T any](p Partition, name string) ([]T, error) {
	path := filepath.Join(p.Dir, name)
	want := p.Info.Run.Files[name]
	got, err := fileSum(path)
	if err != nil {
		return nil, err
	}
	if got != want {
		return nil, fmt.Errorf("results: %s is %w: its SHA-256 is %.12s..., %s recorded %.12s...", path, ErrCorrupt, got, ShardFile, want)
	}
	return decodeRows[T](path)
}

// Images reads the partition's image rows.
func (p Partition) Images() ([]ImageRow, error) { return readPartition[ImageRow](p, ImagesFile) }

// Maps reads the partition's quantised maps.
func (p Partition) Maps() ([]MapRow, error) { return readPartition[MapRow](p, MapsFile) }

// Pixels reads the partition's exact maps and masks.
func (p Partition) Pixels() ([]PixelRow, error) { return readPartition[PixelRow](p, PixelsFile) }

// WriteMerged writes a run merged from its partitions into the run's
// folder, beside them. A run merged before keeps its analysts' labels
// (matched by image id and path) and a threshold someone set by hand
// (keep, when true, is applied instead of run's). Every file is written
// under a temporary name first; run.json, which makes the run visible, is
// removed before the files are swapped in and written again last, so a
// crash leaves the run unlisted until the next merge, never half-replaced.
func (s Store) WriteMerged(run Run, keep func(old RunMeta) (ThresholdInfo, bool)) error {
	id := run.Meta.RunID
	if !ValidRunID(id) {
		return fmt.Errorf("results: bad run id %q", id)
	}
	unlock, err := s.lockRun(id)
	if err != nil {
		return err
	}
	defer unlock()
	if old, err := s.Meta(id); err == nil {
		if prev, err := readRows[ImageRow](s, id, ImagesFile); err == nil {
			carryLabels(run.Images, prev)
		} else {
			return fmt.Errorf("results: run %s was merged before, and its labels cannot be read to keep them: %w", id, err)
		}
		if keep != nil {
			if th, ok := keep(old); ok {
				run.Meta.Threshold = th
				ApplyThreshold(run.Images, th)
			}
		}
	}
	dir := s.Dir(id)
	run.Meta.SchemaVersion = SchemaVersion
	run.Meta.Files = map[string]string{}
	files := run.files()
	for _, f := range files {
		tmp := filepath.Join(dir, ".merge-"+f.name)
		if err := f.write(tmp); err != nil {
			return fmt.Errorf("results: write merged %s: %w", f.name, err)
		}
		sum, err := fileSum(tmp)
		if err != nil {
			return err
		}
		run.Meta.Files[f.name] = sum
	}
	if err := os.Remove(filepath.Join(dir, RunFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("results: %w", err)
	}
	for _, f := range files {
		if err := os.Rename(filepath.Join(dir, ".merge-"+f.name), filepath.Join(dir, f.name)); err != nil {
			return fmt.Errorf("results: %w", err)
		}
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	// The label history of a run merged before stays, with its checksum.
	if sum, err := fileSum(filepath.Join(dir, HistoryFile)); err == nil {
		run.Meta.Files[HistoryFile] = sum
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return s.writeMeta(run.Meta)
}

// carryLabels copies analysts' verdicts from a run's previous rows to the
// rows that replace them (same image id and path).
func carryLabels(rows, prev []ImageRow) {
	type key struct {
		id   int64
		path string
	}
	old := make(map[key]ImageRow, len(prev))
	for _, r := range prev {
		old[key{r.ImageID, r.Path}] = r
	}
	for i := range rows {
		if o, ok := old[key{rows[i].ImageID, rows[i].Path}]; ok {
			rows[i].AnalystLabel, rows[i].AnalystNote, rows[i].AnalystUser, rows[i].AnalystTime = o.AnalystLabel, o.AnalystNote, o.AnalystUser, o.AnalystTime
		}
	}
}
