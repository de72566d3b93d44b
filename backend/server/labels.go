package server

import (
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/diad-project/diad/results"
	"github.com/diad-project/diad/shared"
)

func (s *Server) setLabel(c echo.Context) error {
	row, id, err := s.imageRow(c)
	if err != nil {
		return err
	}
	var req shared.LabelRequest
	if err := s.bind(c, &req); err != nil {
		return err
	}
	if !results.ValidVerdict(req.Verdict) {
		return apiError(c, http.StatusBadRequest, "verdict %q: want normal, anomalous, unsure or empty", req.Verdict)
	}
	if len(req.Note) > 4096 || len(req.User) > 128 {
		return apiError(c, http.StatusBadRequest, "note or user too long")
	}
	rows, err := s.store.SetLabels(id, []results.Label{{ImageID: row.ImageID, Verdict: req.Verdict, Note: req.Note, User: req.User}}, results.ActionSet, time.Now())
	if err != nil {
		return err
	}
	s.publishChange(shared.Change{Kind: shared.ChangeLabels, RunID: id, ImageIDs: []int64{row.ImageID}, User: req.User})
	return c.JSON(http.StatusOK, toInfo(rows[0]))
}

// maxBulkLabels bounds one bulk label request, and maxBulkBody its body
// (100,000 labels with short notes; the general body limit would stop at
// about 20,000).
const (
	maxBulkLabels = 100_000
	maxBulkBody   = 32 << 20
)

// setLabels sets the labels of many images of a run at once (PUT
// /runs/{run}/labels): one verdict for a selection (action bulk), or the
// labels a bulk action replaced put back (action undo). Every change goes
// into the run's label history.
func (s *Server) setLabels(c echo.Context) error {
	id, err := s.runParam(c)
	if err != nil {
		return err
	}
	var req shared.BulkLabelRequest
	if err := s.bindLimit(c, &req, max(s.cfg.MaxBodyBytes, maxBulkBody)); err != nil {
		return err
	}
	if req.Action != results.ActionBulk && req.Action != results.ActionUndo {
		return apiError(c, http.StatusBadRequest, "action %q: want %s or %s", req.Action, results.ActionBulk, results.ActionUndo)
	}
	if len(req.Labels) == 0 || len(req.Labels) > maxBulkLabels {
		return apiError(c, http.StatusBadRequest, "labels: give 1 to %d", maxBulkLabels)
	}
	if len(req.User) > 128 {
		return apiError(c, http.StatusBadRequest, "user too long")
	}
	labels := make([]results.Label, len(req.Labels))
	ids := make([]int64, len(req.Labels))
	seen := make(map[int64]bool, len(req.Labels))
	for i, l := range req.Labels {
		if !results.ValidVerdict(l.Verdict) {
			return apiError(c, http.StatusBadRequest, "image %d: verdict %q: want normal, anomalous, unsure or empty", l.ImageID, l.Verdict)
		}
		if len(l.Note) > 4096 {
			return apiError(c, http.StatusBadRequest, "image %d: note too long", l.ImageID)
		}
		if seen[l.ImageID] {
			return apiError(c, http.StatusBadRequest, "image %d given twice", l.ImageID)
		}
		seen[l.ImageID] = true
		labels[i] = results.Label{ImageID: l.ImageID, Verdict: l.Verdict, Note: l.Note, User: req.User}
		ids[i] = l.ImageID
	}
	rows, err := s.store.SetLabels(id, labels, req.Action, time.Now())
	if err != nil {
		if errors.Is(err, results.ErrNoImage) {
			return apiError(c, http.StatusNotFound, "%v", err)
		}
		return err
	}
	s.publishChange(shared.Change{Kind: shared.ChangeLabels, RunID: id, ImageIDs: ids, User: req.User})
	out := make([]shared.ImageInfo, len(rows))
	for i, r := range rows {
		out[i] = toInfo(r)
	}
	return c.JSON(http.StatusOK, out)
}

// labelHistory lists every change of a run's analyst labels, oldest first.
func (s *Server) labelHistory(c echo.Context) error {
	id, err := s.runParam(c)
	if err != nil {
		return err
	}
	rows, err := s.store.LabelHistory(id)
	if err != nil {
		return err
	}
	out := make([]shared.LabelChange, len(rows))
	for i, r := range rows {
		out[i] = toChange(r)
	}
	return c.JSON(http.StatusOK, out)
}

// toChange is a history entry on the wire.
func toChange(r results.LabelChange) shared.LabelChange {
	return shared.LabelChange{ImageID: r.ImageID, Time: r.Time, User: r.User, Action: r.Action,
		FromVerdict: r.FromVerdict, ToVerdict: r.ToVerdict, FromNote: r.FromNote, ToNote: r.ToNote}
}
