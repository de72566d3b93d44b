package server

import (
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"

	"github.com/diad-project/diad/backend/strictjson"
	"github.com/diad-project/diad/frontend-wasm/web"
)

//go:embed openapi.json
var openAPI []byte

func (s *Server) routes() {
	e := s.echo
	e.GET("/", s.handleIndex)
	clientFiles := e.Group("", middleware.GzipWithConfig(middleware.GzipConfig{Level: 1}))
	clientFiles.GET("/"+web.WasmFile, s.clientFile(web.WasmFile))
	clientFiles.GET("/"+web.ExecFile, s.clientFile(web.ExecFile))
	e.GET("/healthz", func(c echo.Context) error { return c.String(http.StatusOK, "ok\n") })
	e.GET("/metrics", s.metrics.handler())
	g := e.Group("/api/v1")
	g.GET("/openapi.json", func(c echo.Context) error { return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, openAPI) })
	g.GET("/status", func(c echo.Context) error { return c.JSON(http.StatusOK, s.currentStatus()) })
	g.GET("/datasets", s.listDatasets)
	g.POST("/datasets", s.registerDataset)
	g.POST("/uploads", s.upload)
	g.GET("/models", s.listModels)
	g.POST("/models/load", s.loadModel)
	g.GET("/jobs", func(c echo.Context) error { return c.JSON(http.StatusOK, s.runner.List()) })
	g.POST("/jobs", s.submitJob)
	g.GET("/jobs/:id", s.getJob)
	g.POST("/jobs/:id/cancel", s.cancelJob)
	g.GET("/runs", s.listRuns)
	g.GET("/runs/:run", s.getRun)
	g.GET("/runs/:run/images", s.queryImages)
	g.GET("/runs/:run/images/:image/source", s.imageSource)
	g.GET("/runs/:run/images/:image/map", s.imageMap)
	g.GET("/runs/:run/images/:image/mask", s.imageMask)
	g.PUT("/runs/:run/images/:image/label", s.setLabel)
	g.PUT("/runs/:run/labels", s.setLabels)
	g.GET("/runs/:run/labels/history", s.labelHistory)
	g.PUT("/runs/:run/threshold", s.setThreshold)
	g.GET("/runs/:run/metrics", s.runMetrics)
	g.GET("/runs/:run/files/:file", s.runFile)
	g.GET("/runs/:run/export", s.runExport)
	g.GET("/trajectory", s.trajectoryExport)
	g.GET("/ws/jobs/:id", s.wsJob)
	g.GET("/ws/denoise", s.wsDenoise)
	g.GET("/ws/changes", s.wsChanges)
}

// bind decodes a JSON body strictly (unknown fields are errors), within the
// body limit.
func (s *Server) bind(c echo.Context, v any) error { return s.bindLimit(c, v, s.cfg.MaxBodyBytes) }

// bindLimit is bind with a body limit of its own (bulk labels are larger
// than any other request).
func (s *Server) bindLimit(c echo.Context, v any, limit int64) error {
	body := http.MaxBytesReader(c.Response(), c.Request().Body, limit)
	data, err := io.ReadAll(body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return echo.NewHTTPError(http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", limit))
		}
		return echo.NewHTTPError(http.StatusBadRequest, "read body: "+err.Error())
	}
	// Strict: one JSON value, no key twice (in any letter case), only
	// known fields spelled exactly.
	if err := strictjson.Unmarshal(data, v); err != nil {
		return echo.NewHTTPError(http.StatusBadRequest, "malformed JSON: "+err.Error())
	}
	return nil
}

// ---- datasets -------------------------------------------------------------

// ---- uploads --------------------------------------------------------------

// ---- models ---------------------------------------------------------------

// ---- jobs -----------------------------------------------------------------

// ---- runs -----------------------------------------------------------------
