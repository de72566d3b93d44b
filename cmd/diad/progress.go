package main

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/diad-project/diad/backend/train"
	"github.com/diad-project/diad/shared"
)

// trainBar draws a training run's step events as one progress bar per
// stage (a spinner when only a time budget bounds the stage).
type trainBar struct {
	w     io.Writer
	bar   *progressbar.ProgressBar
	stage string
}

// event is a train.Options.OnEvent.
func (b *trainBar) event(e train.Event) {
	if e.Kind != shared.EventStep {
		return
	}
	if b.bar == nil || e.Stage != b.stage {
		b.finish()
		n := e.TotalSteps
		if n == 0 {
			n = -1
		}
		b.stage = e.Stage
		b.bar = progressbar.NewOptions(n, progressbar.OptionSetWriter(b.w),
			progressbar.OptionSetDescription(e.Stage), progressbar.OptionShowCount(), progressbar.OptionSetItsString("steps"),
			progressbar.OptionShowIts(), progressbar.OptionSetPredictTime(true), progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionClearOnFinish())
	}
	b.bar.Describe(fmt.Sprintf("%s loss %.4f %.1f img/s", e.Stage, e.Loss, e.ImagesPerSec))
	b.bar.Set(e.Step)
}

// finish ends the current bar.
func (b *trainBar) finish() {
	if b.bar != nil {
		b.bar.Finish()
		b.bar = nil
	}
}
