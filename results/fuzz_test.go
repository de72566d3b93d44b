package results

import (
	"bytes"
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
	// The decoder itself, on bytes (no file per input, so 10^5 inputs are
	// quick); TestCorruptRunFilesAreErrors covers the store around it
	// (checksums, the file's name in errors).
	f.Fuzz(func(t *testing.T, data []byte) {
		rows, err := decodeRowsFrom[ImageRow](ImagesFile, bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !strings.Contains(err.Error(), ImagesFile) {
				t.Fatalf("the error does not name the file: %v", err)
			}
			return
		}
		// What decodes must survive what the server does with rows.
		if _, err := json.Marshal(rows); err != nil && !strings.Contains(err.Error(), "unsupported value") {
			t.Fatalf("decoded rows do not encode: %v", err)
		}
	})
}
