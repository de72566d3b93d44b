package gallery

import "github.com/diad-project/diad/shared"

// BulkVerdict is the request that sets verdict on images, keeping each
// image's note.
func BulkVerdict(images []shared.ImageInfo, verdict, user string) shared.BulkLabelRequest {
	r := shared.BulkLabelRequest{User: user, Action: shared.LabelActionBulk, Labels: make([]shared.ImageLabel, len(images))}
	for i, im := range images {
		r.Labels[i] = shared.ImageLabel{ImageID: im.ImageID, Verdict: verdict, Note: im.AnalystNote}
	}
	return r
}

// Undo remembers what bulk actions replaced, newest last, so that each can
// be put back; it keeps the latest MaxUndo.
type Undo struct{ entries []UndoEntry }

// UndoEntry is one bulk action's before-state.
type UndoEntry struct {
	What   string // e.g. "12 images -> normal"
	Labels []shared.ImageLabel
}

// MaxUndo is how many bulk actions can be undone.
const MaxUndo = 20

// Push records the labels images had before a bulk action described by what.
func (u *Undo) Push(what string, before []shared.ImageInfo) {
	e := UndoEntry{What: what, Labels: make([]shared.ImageLabel, len(before))}
	for i, im := range before {
		e.Labels[i] = shared.ImageLabel{ImageID: im.ImageID, Verdict: im.AnalystLabel, Note: im.AnalystNote}
	}
	u.entries = append(u.entries, e)
	if len(u.entries) > MaxUndo {
		u.entries = u.entries[len(u.entries)-MaxUndo:]
	}
}

// Last is the action an undo would revert (ok false when none).
func (u *Undo) Last() (UndoEntry, bool) {
	if len(u.entries) == 0 {
		return UndoEntry{}, false
	}
	return u.entries[len(u.entries)-1], true
}

// Pop removes the last action and returns the request that puts its labels
// back.
func (u *Undo) Pop(user string) (shared.BulkLabelRequest, UndoEntry, bool) {
	e, ok := u.Last()
	if !ok {
		return shared.BulkLabelRequest{}, e, false
	}
	u.entries = u.entries[:len(u.entries)-1]
	return shared.BulkLabelRequest{User: user, Action: shared.LabelActionUndo, Labels: e.Labels}, e, true
}

// Drop forgets every action (another run is shown).
func (u *Undo) Drop() { u.entries = nil }

// Restore puts back an entry whose undo could not be saved.
func (u *Undo) Restore(e UndoEntry) { u.entries = append(u.entries, e) }
