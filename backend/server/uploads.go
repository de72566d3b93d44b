package server

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/diad-project/diad/backend/atomicfile"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/shared"
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

var uploadIDPattern = regexp.MustCompile(`^u-[0-9a-f]{16}$`)

// upload accepts one PNG or JPEG as the raw request body or a multipart
// "image" field, checking the byte limit while reading and the pixel limit
// from the header before decoding.
func (s *Server) upload(c echo.Context) error {
	r := c.Request()
	var src io.Reader = r.Body
	if strings.HasPrefix(r.Header.Get("Content-Type"), "multipart/") {
		r.Body = http.MaxBytesReader(c.Response(), r.Body, s.cfg.MaxUploadBytes+1<<20)
		f, _, err := r.FormFile("image")
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return apiError(c, http.StatusRequestEntityTooLarge, "upload over %d bytes", s.cfg.MaxUploadBytes)
		}
		if err != nil {
			return apiError(c, http.StatusBadRequest, "multipart upload needs an \"image\" file field: %v", err)
		}
		defer f.Close()
		src = f
	}
	data, err := io.ReadAll(io.LimitReader(src, s.cfg.MaxUploadBytes+1))
	if err != nil {
		return apiError(c, http.StatusBadRequest, "read upload: %v", err)
	}
	if int64(len(data)) > s.cfg.MaxUploadBytes {
		return apiError(c, http.StatusRequestEntityTooLarge, "upload over %d bytes", s.cfg.MaxUploadBytes)
	}
	cfg, format, err := datasets.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return apiError(c, http.StatusUnsupportedMediaType, "only PNG and JPEG images are accepted: %v", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width*cfg.Height > s.cfg.MaxUploadPixels {
		return apiError(c, http.StatusRequestEntityTooLarge, "%dx%d pixels is over the limit of %d", cfg.Width, cfg.Height, s.cfg.MaxUploadPixels)
	}
	if n := decodedBytes(cfg); n > s.cfg.MaxUploadDecodedBytes {
		return apiError(c, http.StatusRequestEntityTooLarge, "%dx%d pixels decode to %d bytes, over the limit of %d", cfg.Width, cfg.Height, n, s.cfg.MaxUploadDecodedBytes)
	}
	// A bounded number of decodes at once, so that many large uploads
	// together cannot exhaust the memory.
	wait := time.NewTimer(s.cfg.UploadWait)
	defer wait.Stop()
	select {
	case s.decodeSlots <- struct{}{}:
	case <-wait.C:
		c.Response().Header().Set("Retry-After", "1")
		return apiError(c, http.StatusServiceUnavailable, "busy decoding other uploads; try again")
	case <-r.Context().Done():
		return r.Context().Err()
	}
	_, err = datasets.DecodeBytes(data) // the whole file must decode, not only its header
	<-s.decodeSlots
	if err != nil {
		return apiError(c, http.StatusUnprocessableEntity, "corrupt image: %v", err)
	}
	// The original bytes are kept (no re-encoding: a JPEG stays a JPEG);
	// readers decode by content.
	id := "u-" + randomHex(8)
	path := filepath.Join(s.cfg.DataDir, "uploads", id+uploadExt)
	if err := atomicfile.WriteBytes(path, data); err != nil {
		return err
	}
	if err := s.expireUploads(time.Now(), path); err != nil {
		s.log.Warn("uploads", "err", err)
	}
	return c.JSON(http.StatusCreated, shared.Upload{ID: id, Width: cfg.Width, Height: cfg.Height, Format: format, Bytes: len(data)})
}

// uploadExt names stored uploads; they keep their original bytes (PNG or
// JPEG), which every reader decodes by content.
const uploadExt = ".img"

// decodedBytes is the memory an image of this header decodes to.
func decodedBytes(cfg image.Config) int64 {
	per := int64(4)
	switch cfg.ColorModel {
	case color.GrayModel, color.AlphaModel:
		per = 1
	case color.Gray16Model, color.Alpha16Model:
		per = 2
	case color.YCbCrModel:
		per = 3
	case color.RGBA64Model, color.NRGBA64Model:
		per = 8
	}
	return int64(cfg.Width) * int64(cfg.Height) * per
}

func (s *Server) uploadPath(id string) (string, error) {
	if !uploadIDPattern.MatchString(id) {
		return "", fmt.Errorf("bad upload id %q", id)
	}
	for _, ext := range []string{uploadExt, ".png"} { // .png: re-encoded by diad before 0.5
		p := filepath.Join(s.cfg.DataDir, "uploads", id+ext)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: upload %s", os.ErrNotExist, id)
}
