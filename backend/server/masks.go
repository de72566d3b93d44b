package server

import (
	"fmt"
	"net/http"
	"os"

	"github.com/labstack/echo/v4"

	"github.com/diad-project/diad/datasets"
)

// imageMask serves an image's ground-truth mask file (white = defect),
// found through the run's dataset; 404 when the image has none (a normal
// image, a predict run, or a dataset without masks for it).
func (s *Server) imageMask(c echo.Context) error {
	row, id, err := s.imageRow(c)
	if err != nil {
		return err
	}
	masks, err := s.runMasks(id)
	if err != nil {
		return apiError(c, http.StatusNotFound, "run %s: no ground-truth masks: %v", id, err)
	}
	mask := masks[row.Path]
	if mask == "" {
		return apiError(c, http.StatusNotFound, "image %d of run %s has no ground-truth mask", row.ImageID, id)
	}
	p, err := confine(s.cfg.DataRoots, mask)
	if err != nil {
		return apiError(c, statusFor(err), "mask file: %v", err)
	}
	return c.File(p)
}

// runMasks maps a run's image paths to their mask files, indexing the run's
// dataset once per run (the dataset of a finished run does not change under
// it; a server restart indexes again).
func (s *Server) runMasks(id string) (map[string]string, error) {
	if m, ok := s.masks.Load(id); ok {
		return m.(map[string]string), nil
	}
	meta, err := s.store.Meta(id)
	if err != nil {
		return nil, err
	}
	if meta.Dataset.Root == "" {
		return nil, fmt.Errorf("the run names no dataset")
	}
	if _, err := os.Stat(meta.Dataset.Root); err != nil {
		return nil, err
	}
	ix, err := datasets.Open(meta.Dataset.Layout, meta.Dataset.Root, datasets.Options{Categories: meta.Dataset.Categories})
	if err != nil {
		return nil, err
	}
	m := make(map[string]string, len(ix.Samples))
	for _, smp := range ix.Samples {
		if smp.MaskPath != "" {
			m[smp.Path] = smp.MaskPath
		}
	}
	s.masks.Store(id, m)
	return m, nil
}
