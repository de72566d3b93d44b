package results

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A run's Parquet file is read back from disk, where anything can happen to
// it: any bytes read with an error naming the file, or as rows - never a
// panic (runs from before checksums have no record to check against).
func FuzzImagesParquet(f *testing.F) {
	s := Store{Root: f.TempDir()}
	run := sampleRun(nil) // sampleRun does not use its t
	if err := s.Write(run); err != nil {
		f.Fatal(err)
	}
	valid, err := os.ReadFile(filepath.Join(s.Dir(run.Meta.RunID), ImagesFile))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add([]byte("PAR1PAR1"))
	// The run's metadata without checksums, written as is into each
	// input's run folder (no fsync per input, as Store.Write does).
	m, err := s.Meta(run.Meta.RunID)
	if err != nil {
		f.Fatal(err)
	}
	m.Files = nil
	metaJSON, err := json.Marshal(m)
	if err != nil {
		f.Fatal(err)
	}
	// One folder per worker process, rewritten for each input.
	st := Store{Root: f.TempDir()}
	id := run.Meta.RunID
	if err := os.MkdirAll(st.Dir(id), 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(st.Dir(id), RunFile), metaJSON, 0o644); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(filepath.Join(st.Dir(id), ImagesFile), data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := st.Images(id); err != nil && !strings.Contains(err.Error(), ImagesFile) {
			t.Fatalf("the error does not name the file: %v", err)
		}
	})
}
