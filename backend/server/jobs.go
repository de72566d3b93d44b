package server

import (
	"errors"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/diad-project/diad/backend/jobs"
	"github.com/diad-project/diad/shared"
)

func (s *Server) submitJob(c echo.Context) error {
	var req shared.JobRequest
	if err := s.bind(c, &req); err != nil {
		return err
	}
	if err := s.checkJob(req); err != nil {
		return apiError(c, statusFor(err), "%v", err)
	}
	j, err := s.runner.Submit(req.Kind, req.Config)
	if errors.Is(err, jobs.ErrClosed) {
		return apiError(c, http.StatusServiceUnavailable, "%v", err)
	}
	if err != nil {
		return apiError(c, http.StatusBadRequest, "%v", err)
	}
	return c.JSON(http.StatusAccepted, j)
}

func (s *Server) getJob(c echo.Context) error {
	j, err := s.runner.Get(c.Param("id"))
	if err != nil {
		return apiError(c, http.StatusNotFound, "no job %q", c.Param("id"))
	}
	return c.JSON(http.StatusOK, j)
}

func (s *Server) cancelJob(c echo.Context) error {
	j, err := s.runner.Cancel(c.Param("id"))
	if err != nil {
		return apiError(c, http.StatusNotFound, "no job %q", c.Param("id"))
	}
	return c.JSON(http.StatusOK, j)
}
