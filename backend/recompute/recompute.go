// Package recompute trades compute for memory in training: activation
// recomputation ("gradient checkpointing", latent diffusion's
// use_checkpoint). A Tape runs each block of a network without recording
// its inner activations and keeps only the block's inputs and output; the
// backward pass then runs block by block, last first, recomputing each
// block's activations from its stored inputs just before its gradients are
// needed. Peak memory falls from every block's activations at once to one
// block's at a time, for about one more forward pass of compute.
//
// How it fits libtorch's autograd without custom autograd functions (which
// gotch cannot define): each block's output is returned as a leaf that
// requires grad, so the ordinary backward of the loss stops there and leaves
// the gradient in the leaf's .grad. Backward then, for each block in reverse
// order, recomputes its output with the graph recorded from the stored
// inputs and back-propagates sum(output * grad) - whose gradient with
// respect to the output is exactly grad - into the block's parameters and
// on into its inputs, which are earlier blocks' leaves or tensors computed
// from them. Blocks were recorded in the order they ran, so every consumer
// of a block's output has passed its gradient back before the block's turn.
// Blocks must be deterministic (no dropout) for the recomputation to equal
// the original.
package recompute

import (
	"errors"
	"fmt"

	"github.com/sugarme/gotch/ts"

	"github.com/diad-project/diad/backend/torchrt"
)

// Block computes a block's output from its inputs; it must not free them.
type Block func(in []*ts.Tensor) *ts.Tensor

// Tape records the blocks of one forward pass. A nil *Tape runs blocks as
// plain calls (the graph recorded as usual), so a network can call Run
// whether or not recomputation is on.
type Tape struct {
	segs []segment
}

type segment struct {
	fn  Block
	in  []*ts.Tensor // handles to the block's inputs, kept for the recomputation
	out *ts.Tensor   // a handle to the leaf the caller got; its .grad is the block's output gradient
}

// New starts a tape.
func New() *Tape { return &Tape{} }

// Run computes fn(in); trained says whether any of fn's own parameters
// requires gradients. On a tape, no activation inside fn is kept: if a
// gradient can flow (a trained parameter, or an input that requires grad)
// the output is a leaf that requires grad and fn runs again in Backward;
// otherwise - a frozen block on inputs without gradients, where an
// ordinary forward records nothing either - the output is a plain tensor
// and nothing is kept. The caller owns the returned tensor; nil inputs are
// allowed.
func (tp *Tape) Run(fn Block, trained bool, in ...*ts.Tensor) *ts.Tensor {
	if tp == nil {
		return fn(in)
	}
	var y *ts.Tensor
	torchrt.NoGrad(func() { y = fn(in) })
	if !trained && !anyRequiresGrad(in) {
		return y
	}
	torchrt.SetRequiresGrad_(y, true)
	kept := make([]*ts.Tensor, len(in))
	for i, x := range in {
		if x != nil {
			kept[i] = x.MustShallowClone()
		}
	}
	tp.segs = append(tp.segs, segment{fn: fn, in: kept, out: y.MustShallowClone()})
	return y
}

func anyRequiresGrad(in []*ts.Tensor) bool {
	for _, x := range in {
		if x != nil && x.MustRequiresGrad() {
			return true
		}
	}
	return false
}

// Blocks is how many blocks the tape holds.
func (tp *Tape) Blocks() int {
	if tp == nil {
		return 0
	}
	return len(tp.segs)
}

// ErrGradDisabled is returned by Backward on a thread with gradients off.
var ErrGradDisabled = errors.New("recompute: gradient recording is off")

// Backward completes the backward pass after the loss's own: the loss must
// have been back-propagated with the graph kept (torchrt.Backward(loss,
// true)), which leaves the gradients of the blocks' outputs in their .grad.
// Each block is recomputed and back-propagated in turn, last first; its
// activations are freed before the next. Parameter gradients accumulate as
// in an ordinary backward.
func (tp *Tape) Backward() (err error) {
	if tp == nil {
		return nil
	}
	defer torchrt.Pin()()
	defer torchrt.Recover(&err, "recompute backward")
	if !torchrt.GradEnabled() {
		return ErrGradDisabled
	}
	for i := len(tp.segs) - 1; i >= 0; i-- {
		if err := tp.segs[i].backward(); err != nil {
			return fmt.Errorf("recompute: block %d of %d: %w", i+1, len(tp.segs), err)
		}
		// Its gradient has passed on: its inputs (and the part of the
		// graph they hold) and its output's gradient can go now, not at
		// the end - otherwise every output's gradient is alive at once.
		tp.segs[i].free()
		tp.segs = tp.segs[:i]
	}
	return nil
}

func (s segment) backward() error {
	g := s.out.MustGrad(false)
	defer g.MustDrop()
	if !g.MustDefined() {
		return nil // nothing downstream needed this block's output
	}
	y := s.fn(s.in)
	defer y.MustDrop()
	if !y.MustRequiresGrad() {
		return nil // frozen block on inputs that need no gradient
	}
	prod := y.MustMul(g, false)
	surrogate := prod.MustSum(prod.DType(), true)
	defer surrogate.MustDrop()
	// Kept: the blocks share parts of the graph outside them (e.g. the
	// time embedding), which later blocks' backward passes go through.
	return torchrt.Backward(surrogate, true)
}

// Free releases the tape's handles (and with them the outputs' gradients
// and, once the caller's handles are gone too, the stored inputs). The tape
// is empty afterwards.
func (tp *Tape) Free() {
	if tp == nil {
		return
	}
	for _, s := range tp.segs {
		s.free()
	}
	tp.segs = nil
}

func (s segment) free() {
	for _, x := range s.in {
		if x != nil {
			x.MustDrop()
		}
	}
	s.out.MustDrop()
}
