package server

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// expireUploads removes uploads older than UploadMaxAge, then the oldest
// ones while all of them together take more than UploadMaxTotal bytes (a
// zero setting turns that rule off). It runs at start and after each
// upload, so the uploads folder never grows without bound. keep is never
// removed (the upload just made).
func (s *Server) expireUploads(now time.Time, keep string) error {
	dir := filepath.Join(s.cfg.DataDir, "uploads")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("expire uploads: %w", err)
	}
	type file struct {
		path string
		size int64
		mod  time.Time
	}
	var files []file
	var total int64
	for _, e := range entries {
		if e.IsDir() || !strings.HasPrefix(e.Name(), "u-") {
			continue // temporary files of atomic writes and anything else are not uploads
		}
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		files = append(files, file{filepath.Join(dir, e.Name()), info.Size(), info.ModTime()})
		total += info.Size()
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mod.Before(files[j].mod) })
	for _, f := range files {
		old := s.cfg.UploadMaxAge > 0 && now.Sub(f.mod) > s.cfg.UploadMaxAge
		over := s.cfg.UploadMaxTotal > 0 && total > s.cfg.UploadMaxTotal
		if f.path == keep || (!old && !over) {
			continue
		}
		if err := os.Remove(f.path); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("expire uploads: %w", err)
		}
		total -= f.size
	}
	return nil
}
