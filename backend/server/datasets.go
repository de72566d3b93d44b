package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	"github.com/labstack/echo/v4"

	"github.com/diad-project/diad/backend/atomicfile"
	"github.com/diad-project/diad/datasets"
	"github.com/diad-project/diad/shared"
)

type datasetEntry struct {
	info shared.Dataset
	req  shared.RegisterDataset // as registered, with the resolved path
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

func (s *Server) listDatasets(c echo.Context) error {
	s.mu.Lock()
	out := make([]shared.Dataset, 0, len(s.datasets))
	for _, d := range s.datasets {
		out = append(out, d.info)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return c.JSON(http.StatusOK, out)
}

// RegisterDataset indexes a folder within the data roots under a name.
func (s *Server) RegisterDataset(req shared.RegisterDataset) (shared.Dataset, int, error) {
	if !namePattern.MatchString(req.Name) {
		return shared.Dataset{}, http.StatusBadRequest, fmt.Errorf("dataset name %q: letters, digits, _.- only", req.Name)
	}
	root, err := confine(s.cfg.DataRoots, req.Path)
	if err != nil {
		return shared.Dataset{}, statusFor(err), err
	}
	ix, err := datasets.Open(req.Layout, root, datasets.Options{})
	if err != nil {
		return shared.Dataset{}, http.StatusUnprocessableEntity, err
	}
	d := shared.Dataset{Name: req.Name, Root: root, Layout: ix.Layout, Categories: ix.Categories,
		Train: len(ix.Select(datasets.Train)), Test: len(ix.Select(datasets.Test))}
	s.mu.Lock()
	s.datasets[req.Name] = datasetEntry{info: d, req: shared.RegisterDataset{Name: req.Name, Path: root, Layout: req.Layout}}
	err = s.saveDatasetsLocked()
	s.mu.Unlock()
	if err != nil {
		return shared.Dataset{}, http.StatusInternalServerError, err
	}
	return d, http.StatusCreated, nil
}

// datasetsFile keeps the registrations across restarts.
const datasetsFile = "datasets.json"

// saveDatasetsLocked writes the registrations (s.mu held).
func (s *Server) saveDatasetsLocked() error {
	var reqs []shared.RegisterDataset
	for _, d := range s.datasets {
		reqs = append(reqs, d.req)
	}
	sort.Slice(reqs, func(i, j int) bool { return reqs[i].Name < reqs[j].Name })
	b, err := json.MarshalIndent(reqs, "", "  ")
	if err != nil {
		return fmt.Errorf("save datasets: %w", err)
	}
	return atomicfile.WriteBytes(filepath.Join(s.cfg.DataDir, datasetsFile), b)
}

// loadDatasets registers again what an earlier run registered. A folder that
// went away is skipped with a warning, not a failed start.
func (s *Server) loadDatasets() error {
	b, err := os.ReadFile(filepath.Join(s.cfg.DataDir, datasetsFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("load datasets: %w", err)
	}
	var reqs []shared.RegisterDataset
	if err := json.Unmarshal(b, &reqs); err != nil {
		return fmt.Errorf("load datasets %s: %w", filepath.Join(s.cfg.DataDir, datasetsFile), err)
	}
	for _, r := range reqs {
		if _, _, err := s.RegisterDataset(r); err != nil {
			s.log.Warn("a registered dataset is no longer usable", "name", r.Name, "path", r.Path, "err", err)
		}
	}
	return nil
}

func (s *Server) registerDataset(c echo.Context) error {
	var req shared.RegisterDataset
	if err := s.bind(c, &req); err != nil {
		return err
	}
	d, code, err := s.RegisterDataset(req)
	if err != nil {
		return apiError(c, code, "%v", err)
	}
	return c.JSON(code, d)
}
