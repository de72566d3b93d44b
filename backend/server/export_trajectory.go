package server

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/labstack/echo/v4"

	"github.com/diad-project/diad/backend/evaluate"
	"github.com/diad-project/diad/backend/storyboard"
	"github.com/diad-project/diad/backend/visual"
	"github.com/diad-project/diad/shared"
)

// maxExportSide bounds a trajectory export's panel side (the renderer's own
// limit is larger, for the CLI).
const maxExportSide = 512

// trajectoryExport draws a trajectory for slides (GET /api/v1/trajectory):
// the denoise request's image, sampler, seed and guidance in the query, as
// an animated GIF or a PNG strip, with the maps coloured at the served
// model's threshold (or their own range without one). It computes the
// trajectory afresh: the same request gives the same pictures as the
// explorer's stream.
func (s *Server) trajectoryExport(c echo.Context) error {
	x, err := shared.ParseTrajectoryExport(c.QueryParams())
	if err != nil {
		return apiError(c, http.StatusBadRequest, "%v", err)
	}
	opts := storyboard.Options{Side: x.Side}
	if opts.Panels, err = storyboard.ParsePanels(x.Panels); err != nil {
		return apiError(c, http.StatusBadRequest, "parameter \"panels\": %v", err)
	}
	if opts.Steps, err = storyboard.ParseSteps(x.StripSteps); err != nil {
		return apiError(c, http.StatusBadRequest, "parameter \"strip_steps\": %v", err)
	}
	if x.Side > maxExportSide {
		return apiError(c, http.StatusBadRequest, "parameter \"side\": at most %d pixels", maxExportSide)
	}
	if x.Denoise.Steps > maxTrajectorySteps {
		return apiError(c, http.StatusBadRequest, "parameter \"steps\": at most %d", maxTrajectorySteps)
	}
	guidance, err := x.Denoise.GuidanceOrDefault()
	if err != nil {
		return apiError(c, http.StatusBadRequest, "%v", err)
	}
	d, err := s.currentDenoiser()
	if err != nil {
		return apiError(c, http.StatusConflict, "%v", err)
	}
	src, err := s.resolveSource(x.Denoise, d.path)
	if err != nil {
		return apiError(c, statusFor(err), "%v", err)
	}
	sampler, err := d.sampler(src.runSampler, x.Denoise.SamplerOverride())
	if errors.Is(err, errModelReplaced) {
		return apiError(c, http.StatusConflict, "%v", err)
	}
	if err != nil {
		return apiError(c, http.StatusBadRequest, "%v", err)
	}
	// Refused before any work: a picture too large to make.
	frames := len(opts.Steps)
	if x.Format == shared.TrajectoryGIF {
		frames = sampler.Steps
		if len(sampler.Timesteps) > 0 {
			frames = len(sampler.Timesteps)
		}
	}
	if err := storyboard.CheckSize(opts, x.Format, frames); err != nil {
		return apiError(c, http.StatusBadRequest, "%v", err)
	}
	spec := evaluate.TrajectorySpec{Path: src.path, Category: src.category, Sampler: sampler, Seed: src.seed, Unguided: guidance == shared.GuidanceNone}
	tr, err := s.storyboard(c, d, spec)
	if err != nil {
		switch {
		case errors.Is(err, os.ErrNotExist):
			return apiError(c, http.StatusNotFound, "%v", err)
		case errors.Is(err, errModelReplaced):
			return apiError(c, http.StatusConflict, "%v", err)
		}
		return err
	}
	var buf bytes.Buffer
	mime, ext := "image/gif", "gif"
	if x.Format == shared.TrajectoryStrip {
		mime, ext = "image/png", "png"
		err = storyboard.Strip(&buf, tr, opts)
	} else {
		err = storyboard.GIF(&buf, tr, opts)
	}
	if err != nil {
		return apiError(c, http.StatusBadRequest, "%v", err)
	}
	name := "trajectory-upload." + ext
	if x.Denoise.ImageID != nil {
		name = fmt.Sprintf("trajectory-%s-%d.%s", x.Denoise.RunID, *x.Denoise.ImageID, ext)
	}
	c.Response().Header().Set("Content-Disposition", fmt.Sprintf("attachment; filename=%q", name))
	return c.Blob(http.StatusOK, mime, buf.Bytes())
}

// storyboard computes spec's trajectory on d and colours its maps at the
// served threshold (the category's, where it has its own).
func (s *Server) storyboard(c echo.Context, d *denoiser, spec evaluate.TrajectorySpec) (storyboard.Trajectory, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.freed {
		return storyboard.Trajectory{}, errModelReplaced
	}
	tr, _, err := d.e.Storyboard(c.Request().Context(), spec)
	if err != nil {
		return tr, err
	}
	th, hasTh, err := s.thresholdFor(d.path, s.servedIdentity(d.e))
	if err != nil {
		return tr, err
	}
	tr.Scale = tr.MapRange()
	if hasTh {
		tr.Scale = visual.ThresholdScale(th.For(spec.Category))
	}
	return tr, nil
}
