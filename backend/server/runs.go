package server

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

func (s *Server) runParam(c echo.Context) (string, error) {
	id := c.Param("run")
	if !results.ValidRunID(id) {
		return "", apiError(c, http.StatusNotFound, "no run %q", id)
	}
	if _, err := s.store.Meta(id); err != nil {
		return "", apiError(c, http.StatusNotFound, "no run %q", id)
	}
	return id, nil
}

func (s *Server) listRuns(c echo.Context) error {
	runs, err := s.store.Runs()
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, runs)
}

func (s *Server) getRun(c echo.Context) error {
	id, err := s.runParam(c)
	if err != nil {
		return err
	}
	m, err := s.store.Meta(id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, m)
}

func toInfo(r results.ImageRow) shared.ImageInfo {
	info := shared.ImageInfo{ImageID: r.ImageID, Category: r.Category, Path: r.Path, Defect: r.Defect, GroundTruth: r.GroundTruth,
		Score: r.Score, Scorer: r.Scorer, StepScores: r.StepScores, Threshold: r.Threshold, Predicted: r.Predicted,
		AnalystLabel: r.AnalystLabel, AnalystNote: r.AnalystNote, AnalystUser: r.AnalystUser}
	if !r.AnalystTime.IsZero() {
		t := r.AnalystTime
		info.AnalystTime = &t
	}
	return info
}

// imageFilter reads the image filter the images listing and the export
// share: ?category=&gt=0|1&predicted=0|1&verdict=&min_score=&max_score=&image_ids=1,2,...
// (image_ids: exactly these images - what a client shows after filters of
// its own, such as outcomes at its threshold).
func imageFilter(q url.Values) (func(results.ImageRow) bool, error) {
	num := func(name string, def float64) (float64, error) {
		v := q.Get(name)
		if v == "" {
			return def, nil
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) {
			return 0, fmt.Errorf("%s=%q is not a number", name, v)
		}
		return f, nil
	}
	minScore, err1 := num("min_score", math.Inf(-1))
	maxScore, err2 := num("max_score", math.Inf(1))
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	var ids map[int64]bool
	if q.Has("image_ids") {
		ids = map[int64]bool{}
		if list := q.Get("image_ids"); list != "" {
			for _, f := range strings.Split(list, ",") {
				n, err := strconv.ParseInt(f, 10, 64)
				if err != nil {
					return nil, fmt.Errorf("image_ids: %q is not an image id", f)
				}
				ids[n] = true
			}
		}
	}
	return func(r results.ImageRow) bool {
		if v := q.Get("category"); v != "" && r.Category != v {
			return false
		}
		if v := q.Get("gt"); v != "" && strconv.Itoa(int(r.GroundTruth)) != v {
			return false
		}
		if v := q.Get("predicted"); v != "" && strconv.Itoa(int(r.Predicted)) != v {
			return false
		}
		if q.Has("verdict") && r.AnalystLabel != q.Get("verdict") {
			return false
		}
		if ids != nil && !ids[r.ImageID] {
			return false
		}
		return r.Score >= minScore && r.Score <= maxScore
	}, nil
}

// queryImages filters (imageFilter), sorts and pages a run's images:
// ?sort=score|-score|image_id&offset=&limit=
func (s *Server) queryImages(c echo.Context) error {
	id, err := s.runParam(c)
	if err != nil {
		return err
	}
	rows, err := s.store.Images(id)
	if err != nil {
		return err
	}
	q := c.QueryParams()
	keep, err := imageFilter(q)
	if err != nil {
		return apiError(c, http.StatusBadRequest, "%v", err)
	}
	// Paging takes whole numbers in range (a float such as 1e19 would
	// overflow the conversion to int).
	whole := func(name string, def, lo, hi int) (int, error) {
		v := q.Get(name)
		if v == "" {
			return def, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			return 0, fmt.Errorf("%s=%q: want a whole number in %d..%d", name, v, lo, hi)
		}
		return n, nil
	}
	offset, err3 := whole("offset", 0, 0, math.MaxInt32)
	limit, err4 := whole("limit", 100, 1, 1000)
	if err := errors.Join(err3, err4); err != nil {
		return apiError(c, http.StatusBadRequest, "%v", err)
	}
	var out []shared.ImageInfo
	for _, r := range rows {
		if keep(r) {
			out = append(out, toInfo(r))
		}
	}
	switch q.Get("sort") {
	case "", "image_id":
	case "score":
		sort.SliceStable(out, func(i, j int) bool { return out[i].Score < out[j].Score })
	case "-score":
		sort.SliceStable(out, func(i, j int) bool { return out[i].Score > out[j].Score })
	default:
		return apiError(c, http.StatusBadRequest, "sort=%q: want score, -score or image_id", q.Get("sort"))
	}
	page := shared.ImagePage{Total: len(out), Offset: offset}
	lo := min(offset, len(out))
	hi := min(lo+limit, len(out))
	page.Images = out[lo:hi]
	if page.Images == nil {
		page.Images = []shared.ImageInfo{}
	}
	return c.JSON(http.StatusOK, page)
}

func (s *Server) imageRow(c echo.Context) (results.ImageRow, string, error) {
	id, err := s.runParam(c)
	if err != nil {
		return results.ImageRow{}, "", err
	}
	n, err := strconv.ParseInt(c.Param("image"), 10, 64)
	if err != nil {
		return results.ImageRow{}, "", apiError(c, http.StatusBadRequest, "image id %q is not a number", c.Param("image"))
	}
	rows, err := s.store.Images(id)
	if err != nil {
		return results.ImageRow{}, "", err
	}
	for _, r := range rows {
		if r.ImageID == n {
			return r, id, nil
		}
	}
	return results.ImageRow{}, "", apiError(c, http.StatusNotFound, "run %s has no image %d", id, n)
}

// imageSource serves the image file of a row (which must lie in the data
// roots or the uploads folder).
func (s *Server) imageSource(c echo.Context) error {
	row, _, err := s.imageRow(c)
	if err != nil {
		return err
	}
	roots := append([]string{filepath.Join(s.cfg.DataDir, "uploads")}, s.cfg.DataRoots...)
	p, err := confine(roots, row.Path)
	if err != nil {
		return apiError(c, statusFor(err), "image file: %v", err)
	}
	return c.File(p)
}

// imageMap serves an image's anomaly map as a grayscale PNG (value =
// offset + v/255*scale, given in X-Map-Offset and X-Map-Scale).
func (s *Server) imageMap(c echo.Context) error {
	row, id, err := s.imageRow(c)
	if err != nil {
		return err
	}
	maps, err := s.store.Maps(id)
	if err != nil {
		return err
	}
	for _, m := range maps {
		if m.ImageID == row.ImageID {
			c.Response().Header().Set("X-Map-Offset", strconv.FormatFloat(float64(m.Offset), 'g', -1, 32))
			c.Response().Header().Set("X-Map-Scale", strconv.FormatFloat(float64(m.Scale), 'g', -1, 32))
			img, err := grayPNG(m.Data, int(m.Width), int(m.Height))
			if err != nil {
				return err
			}
			return c.Blob(http.StatusOK, "image/png", img)
		}
	}
	return apiError(c, http.StatusNotFound, "no map for image %d", row.ImageID)
}

func (s *Server) runMetrics(c echo.Context) error {
	id, err := s.runParam(c)
	if err != nil {
		return err
	}
	rows, err := s.store.Metrics(id)
	if err != nil {
		return err
	}
	list := make([]shared.MetricValue, len(rows))
	for i, r := range rows {
		list[i] = shared.MetricValue{Category: r.Category, Metric: r.Metric, Error: r.Error}
		if !math.IsNaN(r.Value) {
			v := r.Value
			list[i].Value = &v
		}
	}
	return c.JSON(http.StatusOK, list)
}

func (s *Server) runFile(c echo.Context) error {
	id, err := s.runParam(c)
	if err != nil {
		return err
	}
	name := c.Param("file")
	switch name {
	case results.ImagesFile, results.MetricsFile, results.MapsFile, results.RunFile:
	default:
		return apiError(c, http.StatusNotFound, "no file %q (images.parquet, metrics.parquet, maps.parquet, run.json)", name)
	}
	return c.Attachment(filepath.Join(s.store.Dir(id), name), id+"-"+name)
}

func (s *Server) runExport(c echo.Context) error {
	id, err := s.runParam(c)
	if err != nil {
		return err
	}
	table, format := c.QueryParam("table"), c.QueryParam("format")
	if table == "" {
		table = "images"
	}
	if format == "" {
		format = results.FormatCSV
	}
	if format != results.FormatCSV && format != results.FormatJSON && format != results.FormatParquet {
		return apiError(c, http.StatusBadRequest, "format %q: want csv, json or parquet", format)
	}
	var buf bytes.Buffer
	var exportErr error
	switch table {
	case "images":
		keep, err := imageFilter(c.QueryParams())
		if err != nil {
			return apiError(c, http.StatusBadRequest, "%v", err)
		}
		rows, err := s.store.Images(id)
		if err != nil {
			return err
		}
		kept := rows[:0:0]
		for _, r := range rows {
			if keep(r) {
				kept = append(kept, r)
			}
		}
		exportErr = results.ExportImages(&buf, kept, format)
	case "metrics":
		if format == results.FormatParquet {
			return apiError(c, http.StatusBadRequest, "the metrics table exports as csv or json (its Parquet file is /files/metrics.parquet)")
		}
		rows, err := s.store.Metrics(id)
		if err != nil {
			return err
		}
		exportErr = results.ExportMetrics(&buf, rows, format)
	case "history":
		rows, err := s.store.LabelHistory(id)
		if err != nil {
			return err
		}
		exportErr = results.ExportHistory(&buf, rows, format)
	default:
		return apiError(c, http.StatusBadRequest, "table %q: want images, metrics or history", table)
	}
	if exportErr != nil {
		return fmt.Errorf("export %s of run %s: %w", table, id, exportErr)
	}
	ctype, ext := "text/csv", "csv"
	switch format {
	case results.FormatJSON:
		ctype, ext = "application/x-ndjson", "jsonl"
	case results.FormatParquet:
		ctype, ext = "application/vnd.apache.parquet", "parquet"
	}
	c.Response().Header().Set(echo.HeaderContentDisposition, fmt.Sprintf("attachment; filename=%q", id+"-"+table+"."+ext))
	return c.Blob(http.StatusOK, ctype, buf.Bytes())
}
