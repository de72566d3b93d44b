package server

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

// Thresholds are data: they live in the runs on disk (run.json, changed by
// the threshold view), and the decision threshold of a model is that of its
// newest test run with the same checkpoint contents and the same scorer
// identity (terms and feature extractor). Nothing is kept in memory but the
// checkpoint digests, so a restart or a run made by the CLI is seen at once.

// digests caches checkpoint SHA-256s by path, size and modification time.
type digests struct {
	mu sync.Mutex
	m  map[string]digestEntry
}

type digestEntry struct {
	size  int64
	mtime time.Time
	sum   string
}

func (d *digests) of(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	d.mu.Lock()
	e, ok := d.m[path]
	d.mu.Unlock()
	if ok && e.size == st.Size() && e.mtime.Equal(st.ModTime()) {
		return e.sum, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("digest %s: %w", path, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	d.mu.Lock()
	if d.m == nil {
		d.m = map[string]digestEntry{}
	}
	d.m[path] = digestEntry{size: st.Size(), mtime: st.ModTime(), sum: sum}
	d.mu.Unlock()
	return sum, nil
}

// thresholdFor returns the threshold of the newest test run of the model
// file at path whose scorer identity is identity (with the per-category
// values it may have).
func (s *Server) thresholdFor(path, identity string) (results.ThresholdInfo, bool, error) {
	sum, err := s.digests.of(path)
	if err != nil {
		return results.ThresholdInfo{}, false, err
	}
	runs, err := s.store.Runs()
	if err != nil {
		return results.ThresholdInfo{}, false, err
	}
	var best time.Time
	var th results.ThresholdInfo
	found := false
	for _, r := range runs {
		if r.Kind != "test" || r.CheckpointSHA != sum {
			continue
		}
		if evaluate.ScorerIdentity(r.Scorer, r.Features.Arch, r.Features.Weights) != identity {
			continue
		}
		if !found || r.CreatedAt.After(best) {
			best, th, found = r.CreatedAt, r.Threshold, true
		}
	}
	return th, found, nil
}

// servedIdentity is the scorer identity of the engine serving the explorer.
func (s *Server) servedIdentity(e *evaluate.Engine) string {
	return evaluate.ScorerIdentity(e.Scorer(), s.cfg.Features.Arch, s.cfg.Features.Weights)
}

// maxThresholdCategories bounds a threshold request's categories (a
// dataset has tens; the limit keeps a hostile body from costing much).
const maxThresholdCategories = 10000

func (s *Server) setThreshold(c echo.Context) error {
	id, err := s.runParam(c)
	if err != nil {
		return err
	}
	var req shared.ThresholdRequest
	if err := s.bind(c, &req); err != nil {
		return err
	}
	if math.IsNaN(req.Value) || math.IsInf(req.Value, 0) {
		return apiError(c, http.StatusBadRequest, "threshold must be a finite number")
	}
	if len(req.PerCategory) > maxThresholdCategories {
		return apiError(c, http.StatusBadRequest, "%d category thresholds, at most %d", len(req.PerCategory), maxThresholdCategories)
	}
	for cat, v := range req.PerCategory {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return apiError(c, http.StatusBadRequest, "threshold of category %q must be a finite number", cat)
		}
	}
	if req.Policy == "" {
		req.Policy = "manual"
	}
	th := results.ThresholdInfo{Value: req.Value, PerCategory: req.PerCategory, Policy: req.Policy, SetBy: req.User}
	if err := s.store.SetThreshold(id, th); err != nil {
		if errors.Is(err, results.ErrNoCategory) {
			return apiError(c, http.StatusBadRequest, "%v", err)
		}
		return err
	}
	m, err := s.store.Meta(id)
	if err != nil {
		return err
	}
	s.publishChange(shared.Change{Kind: shared.ChangeThreshold, RunID: id, User: req.User})
	return c.JSON(http.StatusOK, m)
}
